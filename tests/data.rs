//! Datasets as a user meets them: parity of frames with spikingjelly 2.0.0 and of GSC features
//! with torchaudio 2.11, compressed downloads, generated datasets, and clear errors on every kind
//! of broken input file.

mod common;

use common::{repo, run_oracle, scratch, snn, text, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn export(dataset: &str, data: &Path, out: &Path) -> Output {
    export_split(dataset, data, "train", out)
}

fn export_split(dataset: &str, data: &Path, split: &str, out: &Path) -> Output {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    snn(&["data", "export", "--dataset", dataset, "--data", data, "--split", split, "--out", out])
}

#[test]
fn grid_and_paper2023_frames_equal_the_reference_on_unseen_files() {
    println!("{}", run_oracle("frames_parity.py", &["--bin", BIN]));
}

/// The mini Speech Commands made by espeak-ng (`make gsc-mini`; made here if missing, once for
/// all the tests of this file).
fn gsc_mini() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let dir = repo().join("data/gsc-mini");
        let output = common::run(Command::new("bash").arg(repo().join("scripts/make_gsc_mini.sh")).arg(&dir));
        assert!(output.status.success(), "scripts/make_gsc_mini.sh failed: {}", text(&output));
        dir
    })
    .clone()
}

/// `train --preset gsc` runs on the mini Speech Commands: mel features, its own validation split
/// for selection, the test split reported at the best epoch.
#[test]
fn the_gsc_preset_trains_on_the_mini_speech_commands() {
    let dir = scratch("gsc-train");
    let (data, run) = (gsc_mini(), dir.join("run"));
    let settings = ["--set", "n_hidden_layers=1", "--set", "n_hidden_neurons=16", "--set", "batch_size=64", "--epochs", "2"];
    let base = ["train", "--preset", "gsc", "--data", data.to_str().unwrap(), "--run-dir", run.to_str().unwrap(), "--quiet"];
    let output = snn(&[&base[..], &settings].concat());
    assert!(output.status.success(), "{}", text(&output));
    let metrics = common::metrics_without_time(&run);
    assert_eq!(metrics.len(), 2);
    assert!(metrics.iter().all(|m| m["valid_acc"].is_number() && m["test_acc"].is_number()), "{metrics:?}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["protocol"], "validation: 140 samples, test: 140 samples", "{summary}");
}

/// Every split's clips, order, labels and features against torchaudio's dataset and transforms.
#[test]
fn speech_features_equal_torchaudio_on_synthesised_speech() {
    let data = gsc_mini();
    for split in ["test", "valid", "train"] {
        println!("{}", run_oracle("gsc_parity.py", &["--bin", BIN, "--data", data.to_str().unwrap(), "--split", split]));
    }
    let info = snn(&["data", "info", "--dataset", "gsc", "--data", data.to_str().unwrap()]);
    assert!(info.status.success(), "{}", text(&info));
    let report = text(&info);
    assert!(report.contains("Train: 420 samples") && report.contains("Test: 140 samples"), "{report}");
}

#[test]
fn broken_files_fail_with_the_file_and_sample_named() {
    let dir = scratch("bad-files");
    run_oracle("bad_files.py", &[dir.to_str().unwrap()]);
    let out = dir.join("out.safetensors");
    let cases = [
        ("truncated", "not a readable HDF5 file"),
        ("missing_units", "missing dataset `spikes/units`"),
        ("unit_700", "sample 1: event 1 has unit 700"),
        ("negative_time", "sample 1: event 0 has time -0.01"),
        ("nan_time", "sample 1: event 1 has time NaN"),
        ("bad_label", "sample 1: label 20 is outside 0..19"),
        ("empty_sample", "sample 1: the sample has no events"),
        ("mismatched", "sample 1: 3 times but 2 units"),
    ];
    for (case, needle) in cases {
        let output = export("shd", &dir.join(case), &out);
        let message = text(&output);
        assert!(!output.status.success(), "{case} should fail");
        assert!(message.contains(needle) && message.contains(&format!("{case}/shd_train.h5")), "{case}: {message}");
        assert!(!out.exists(), "{case}: no partial output");
    }
    let unsorted = export("shd", &dir.join("unsorted"), &out);
    assert!(unsorted.status.success() && text(&unsorted).contains("not sorted"), "{}", text(&unsorted));
    let wav_cases = [
        ("rate_8000", "got 8000 Hz"),
        ("bits_8", "8 bits Int"),
        ("bits_24", "24 bits Int"),
        ("stereo", "2 channel(s)"),
        ("float32", "32 bits Float"),
    ];
    std::fs::remove_file(&out).unwrap();
    for (case, needle) in wav_cases {
        let folder = dir.join(format!("speech_{case}"));
        let args = ["data", "export", "--dataset", "gsc", "--data", folder.to_str().unwrap(), "--split", "test", "--out"];
        let wav = snn(&[&args[..], &[out.to_str().unwrap()]].concat());
        let message = text(&wav);
        assert!(!wav.status.success() && message.contains("aa_nohash_0.wav") && message.contains(needle), "{case}: {message}");
        assert!(!out.exists(), "{case}: no partial output");
    }
    let missing = export("shd", &dir.join("nowhere"), &out);
    assert!(!missing.status.success() && text(&missing).contains("nowhere"), "{}", text(&missing));
}

#[test]
fn compressed_downloads_are_decompressed_once() {
    let dir = scratch("compressed");
    run_oracle("bad_files.py", &[dir.to_str().unwrap()]);
    let good = std::fs::read(dir.join("good/shd_train.h5")).unwrap();
    let gz_dir = dir.join("gz");
    std::fs::create_dir_all(&gz_dir).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &good).unwrap();
    std::fs::write(gz_dir.join("shd_train.h5.gz"), encoder.finish().unwrap()).unwrap();
    let zip_dir = dir.join("zip");
    std::fs::create_dir_all(&zip_dir).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(zip_dir.join("shd_train.h5.zip")).unwrap());
    zip.start_file("shd_train.h5", zip::write::SimpleFileOptions::default()).unwrap();
    std::io::Write::write_all(&mut zip, &good).unwrap();
    zip.finish().unwrap();
    for folder in [gz_dir, zip_dir] {
        let out = folder.join("x.safetensors");
        let first = export("shd", &folder, &out);
        assert!(first.status.success(), "{}", text(&first));
        assert_eq!(std::fs::read(folder.join("shd_train.h5")).unwrap(), good);
        let second = export("shd", &folder, &out);
        assert!(second.status.success() && !text(&second).contains("decompress") && !text(&second).contains("extract"));
    }
}

#[test]
fn generated_datasets_have_the_shd_layout_and_repeat_by_seed() {
    let dir = scratch("synth");
    let make = |name: &str, seed: &str| {
        let folder = dir.join(name);
        let output = snn(&["synth", "--out", folder.to_str().unwrap(), "--train", "60", "--test", "20", "--seed", seed]);
        assert!(output.status.success(), "{}", text(&output));
        let out = dir.join(format!("{name}.safetensors"));
        assert!(export("shd", &folder, &out).status.success());
        std::fs::read(out).unwrap()
    };
    let (a, b, c) = (make("a", "5"), make("b", "5"), make("c", "6"));
    assert_eq!(a, b, "same seed, same data");
    assert_ne!(a, c, "another seed, other data");
    let layout = common::run(Command::new(common::python())
        .args(["-c", "import h5py,sys; f=h5py.File(sys.argv[1]); print(f['spikes/times'].dtype.metadata['vlen'], f['spikes/units'].dtype.metadata['vlen'], f['labels'].dtype, f['extra/keys'][0])"])
        .arg(dir.join("a/shd_train.h5")));
    assert_eq!(String::from_utf8_lossy(&layout.stdout).trim(), "float16 uint16 uint8 b'pattern_00'");
    let info = snn(&["data", "info", "--dataset", "shd", "--data", dir.join("a").to_str().unwrap()]);
    assert!(info.status.success() && text(&info).contains("Train: 60 samples"), "{}", text(&info));
}

/// An SSC folder's `ssc_valid.h5` is its validation split: `data export --split valid` reads it
/// (not the test file), and a run with the SSC preset validates on it and tests on `ssc_test.h5`.
#[test]
fn ssc_folders_validate_on_their_valid_file() {
    let dir = scratch("ssc-valid");
    let make = |name: &str, seed: &str, test: &str| {
        let folder = dir.join(name);
        let args =
            ["synth", "--out", folder.to_str().unwrap(), "--classes", "4", "--train", "64", "--test", test, "--seed", seed];
        let output = snn(&args);
        assert!(output.status.success(), "{}", text(&output));
        folder
    };
    let (a, b) = (make("a", "1", "20"), make("b", "2", "24"));
    let ssc = dir.join("ssc");
    std::fs::create_dir_all(&ssc).unwrap();
    for (from, to) in [
        (a.join("shd_train.h5"), "ssc_train.h5"),
        (b.join("shd_test.h5"), "ssc_valid.h5"),
        (a.join("shd_test.h5"), "ssc_test.h5"),
    ] {
        std::fs::copy(from, ssc.join(to)).unwrap();
    }
    let frames = |dataset: &str, folder: &Path, split: &str| {
        let out = dir.join(format!("{dataset}-{split}.safetensors"));
        let output = export_split(dataset, folder, split, &out);
        assert!(output.status.success(), "{}", text(&output));
        common::read(&out)
    };
    for (split, source, source_split) in [("valid", &b, "test"), ("test", &a, "test")] {
        let (ours, expected) = (frames("ssc", &ssc, split), frames("shd", source, source_split));
        assert_eq!(ours.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{split}");
        assert!(ours.iter().all(|(key, value)| value.equal(&expected[key])), "{split} is not the expected file");
    }
    let run = dir.join("run");
    let settings = ["--set", "n_hidden_neurons=16", "--set", "batch_size=16", "--set", "max_delay_ms=100", "--epochs", "1"];
    let base = ["train", "--preset", "ssc", "--data", ssc.to_str().unwrap(), "--run-dir", run.to_str().unwrap(), "--quiet"];
    let output = snn(&[&base[..], &settings].concat());
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["protocol"], "validation: 24 samples, test: 20 samples", "{summary}");
}

/// DelRec's tripled SHD epoch (`recurrent.augment`): `3n` items, every training sample three
/// times; the first third are the samples' own frames, the second shifted (the length kept, no
/// spike added), the third blended with another sample of the class (both fit in it); the same
/// `(seed, epoch)` gives the same batches, another epoch another order.
#[test]
fn a_tripled_epoch_holds_each_sample_as_it_is_shifted_and_blended() {
    use snn_delays::config::{ConfigSource, Preset};
    use snn_delays::data::batches::tripled_batches;
    use snn_delays::data::triple::{Tripling, Variant};
    use snn_delays::data::DataSplits;
    let dir = scratch("tripled");
    let data = common::small_dataset(&dir, &["--classes", "3", "--train", "30", "--test", "6", "--seed", "3"]);
    let overrides = ["n_outputs=3".to_string()];
    let config = ConfigSource { preset: Some(Preset::DelrecShd), file: None, overrides: &overrides }.load().unwrap();
    assert!(config.recurrent.as_ref().unwrap().augment, "the delrec-shd preset augments");
    let splits = DataSplits::open(&config, &data).unwrap();
    let train = &splits.train;
    let n = train.len();
    let epoch = |e: u64| tripled_batches(train, 16, 3, 7, e).map(Result::unwrap).collect::<Vec<_>>();
    let batches = epoch(0);
    assert_eq!(batches.len(), (3 * n).div_ceil(16));
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort_unstable();
    let mut expected: Vec<usize> = train.indices.iter().flat_map(|&i| [i, i, i]).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "each sample three times");
    let mut originals = 0;
    for batch in &batches {
        for (b, &index) in batch.indices.iter().enumerate() {
            let own = train.source.frames(&[index]).unwrap().remove(0);
            let item = batch.x.select(1, b as i64).narrow(0, 0, batch.lengths[b] as i64);
            originals += usize::from(Vec::<f32>::try_from(item.flatten(0, -1)).unwrap() == own.values);
        }
    }
    assert!(originals >= n, "{originals} items equal their sample's frames; the {n} originals at least");
    let tripling = Tripling::new(train, 7, 0);
    let labels = train.source.labels();
    for item in 0..3 * n {
        let planned = tripling.item(train, item);
        let (sample, variant) = (planned.sample, planned.variant);
        let own = train.source.frames(&[sample]).unwrap().remove(0);
        match (item / n, variant) {
            (0, Variant::Original) => {}
            (1, Variant::Shifted) => {
                let shifted = planned.frames(own.clone(), None);
                assert_eq!(shifted.steps, own.steps, "a shift keeps the length");
                let total = |f: &snn_delays::data::frames::Frames| f.values.iter().sum::<f32>();
                assert!(total(&shifted) <= total(&own) && total(&shifted) > 0.0);
            }
            (2, Variant::Blended(partner)) => {
                assert!(partner != sample && labels[partner] == labels[sample], "a partner of the same class");
                let other = train.source.frames(&[partner]).unwrap().remove(0);
                let blend = planned.frames(own.clone(), Some(&other));
                assert!(blend.steps >= own.steps.max(other.steps), "both fit in the blend");
            }
            (kind, variant) => panic!("item {item} (kind {kind}) is {variant:?}"),
        }
    }
    let again = epoch(0);
    assert!(batches.iter().zip(&again).all(|(a, b)| a.x.equal(&b.x) && a.indices == b.indices), "repeatable");
    assert!(!epoch(1).iter().zip(&batches).all(|(a, b)| a.indices == b.indices), "another epoch, another order");
}
