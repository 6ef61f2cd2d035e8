//! Deployment: the pure-Rust integer-delay engine against the tch eval on a trained checkpoint,
//! streaming against batch mode, the `delays` file read back, and the `netx` and `nir` exports
//! read back by h5py and the `nir` package and checked against the checkpoint
//! (tests/oracle/export_check.py).

mod common;

use common::{run_oracle, scratch, small_dataset, snn, snn_json, text, train_in, BIN};
use snn_delays::config::ConfigSource;
use snn_delays::data::{DataSplits, Split};
use snn_delays::infer::{prediction, Model, Semantics};
use snn_delays::model::eval_form::EvalNetwork;
use snn_delays::model::Network;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const SETTINGS: [&str; 6] = ["--set", "n_hidden_neurons=32", "--set", "batch_size=16", "--set", "max_delay_ms=150"];

/// A short run on a generated task; its directory.
fn trained(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let data = small_dataset(dir, &["--classes", "4", "--train", "96", "--test", "40", "--seed", "4"]);
    let run = dir.join("run");
    let output = train_in(&data, &run, &[&SETTINGS[..], extra].concat(), &["--epochs", "3"]);
    assert!(output.status.success(), "{}", text(&output));
    (data, run)
}

fn network_of(run: &Path) -> (Network, snn_delays::config::Config) {
    let config = ConfigSource { file: Some(&run.join("config.json")), ..Default::default() }.load().unwrap();
    let network = Network::new(&config, Device::Cpu);
    let checkpoint = run.join("last.safetensors");
    let tensors = snn_delays::checkpoint::read_tensors(&checkpoint).unwrap().into_iter().collect();
    snn_delays::checkpoint::load_model_part(&network.vs, &checkpoint, &tensors).unwrap();
    (network, config)
}

/// The engine on the eval batches (padded to each batch's longest, as `eval` pads) equals the
/// tch eval: every output within 1e-5 of the batch output's largest value, the same predictions,
/// with the exact and with the default (FFT) convolution; `infer` reports `eval`'s accuracy.
#[test]
fn the_engine_equals_the_tch_eval_and_streaming_equals_batch_mode() {
    let dir = scratch("deploy-engine");
    let (data, run) = trained(&dir, &[]);
    let (network, config) = network_of(&run);
    let form = EvalNetwork::of(&network, config.time_step_ms);
    let model = Model::new(form.clone());
    let subset = DataSplits::subset(&config, &data, Split::Test).unwrap();
    let kernels = network.eval_kernels();
    let (mut worst, mut compared) = (0f64, 0);
    for chunk in subset.indices.chunks(config.batch_size) {
        let frames = subset.source.frames(chunk).unwrap();
        let longest = frames.iter().map(|f| f.steps).max().unwrap();
        let padded: Vec<(Vec<f32>, usize)> = frames
            .iter()
            .map(|f| {
                let mut values = f.values.clone();
                values.resize(longest * f.channels, 0.0);
                (values, longest)
            })
            .collect();
        let x = Tensor::stack(
            &padded.iter().map(|(v, t)| Tensor::from_slice(v).reshape([*t as i64, form.n_inputs() as i64])).collect::<Vec<_>>(),
            1,
        );
        let reference = network.forward_eval(&x, &kernels).unwrap();
        let scale = reference.abs().max().double_value(&[]).max(1e-12);
        for (b, readout) in model.run_all(&padded).unwrap().iter().enumerate() {
            let ours = Tensor::from_slice(readout).reshape([-1, form.n_outputs() as i64]);
            let theirs = reference.select(1, b as i64);
            let diff = (&ours - &theirs).abs().max().double_value(&[]) / scale;
            worst = worst.max(diff);
            let tch_prediction = snn_delays::model::loss::class_scores(&theirs.unsqueeze(1), config.loss).argmax(1, false);
            assert_eq!(prediction(&model.scores(readout)) as i64, tch_prediction.int64_value(&[0]), "sample {b}");
            compared += 1;

            let (frames_b, steps) = (&frames[b].values, frames[b].steps);
            let batch = model.run(frames_b, steps).unwrap();
            let mut stream = model.stream();
            let mut streamed: Vec<f32> = Vec::new();
            for frame in frames_b.chunks_exact(form.n_inputs()) {
                streamed.extend_from_slice(stream.step(frame).unwrap());
            }
            streamed.extend(stream.finish().into_iter().flatten());
            assert_eq!(streamed, batch, "streaming differs from batch mode");
        }
    }
    println!("{compared} samples: max |engine − tch| {worst:.2e} of the output's largest value");
    assert!(worst <= 1e-5, "engine differs from the tch eval by {worst:.2e}");

    let model_file = dir.join("model.safetensors");
    let checkpoint = run.join("last.safetensors");
    let export = snn(&[
        "export",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--format",
        "delays",
        "--out",
        model_file.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", text(&export));
    assert_eq!(Model::load(&model_file).unwrap().form(), &form, "the delays file reads back as written");
    let data = data.to_str().unwrap();
    let eval = snn_json(&["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--data", data, "--json"]);
    let batch = snn_json(&["infer", "--model", model_file.to_str().unwrap(), "--data", data, "--json"]);
    let streamed = snn_json(&["infer", "--model", model_file.to_str().unwrap(), "--data", data, "--stream", "--json"]);
    assert_eq!(batch["accuracy"], eval["accuracy"]);
    assert_eq!(batch["samples"], eval["samples"]);
    assert_eq!(streamed["samples"], eval["samples"]);
}

/// Two taps per synapse and PLIF neurons go through the same form; the folded BatchNorm and the
/// taps at a shared delay keep the engine on the tch eval.
#[test]
fn two_taps_and_plif_keep_the_engine_on_the_tch_eval() {
    let dir = scratch("deploy-taps");
    let (data, run) = trained(&dir, &["--set", "kernel_count=2", "--set", "neuron=plif"]);
    let (network, config) = network_of(&run);
    let form = EvalNetwork::of(&network, config.time_step_ms);
    let model = Model::new(form.clone());
    let subset = DataSplits::subset(&config, &data, Split::Test).unwrap();
    let frames = subset.source.frames(&subset.indices[..1]).unwrap().remove(0);
    let x = Tensor::from_slice(&frames.values).reshape([frames.steps as i64, 1, form.n_inputs() as i64]);
    let reference = network.forward_eval(&x, &network.eval_kernels()).unwrap().select(1, 0);
    let ours = Tensor::from_slice(&model.run(&frames.values, frames.steps).unwrap()).reshape([-1, form.n_outputs() as i64]);
    let scale = reference.abs().max().double_value(&[]).max(1e-12);
    let diff = (&ours - &reference).abs().max().double_value(&[]) / scale;
    assert!(diff <= 1e-5, "{diff:.2e}");
    assert_eq!(ours.to_kind(Kind::Float).size(), reference.size());
    let out = dir.join("model.netx");
    let checkpoint = run.join("last.safetensors");
    let refused =
        snn(&["export", "--checkpoint", checkpoint.to_str().unwrap(), "--format", "netx", "--out", out.to_str().unwrap()]);
    let message = text(&refused);
    assert!(!refused.status.success() && message.contains("taps at different delays"), "{message}");
    assert!(!out.exists(), "no partial file");
}

/// `infer` of reference state dicts exported with `export --format delays` against the
/// reference's own evaluation computed in Python, each sample on its own, on recordings of
/// different lengths (tests/oracle/engine_parity.py): LIF and PLIF,
/// 1 and 2 taps, `sum` and `spike_count`, exact and default settings; the same predictions,
/// class scores within 1e-5 of the sample's largest, and the decisions `infer --stream --limit`
/// prints per frame equal to the reference's wherever its lead is clear. Each state dict's NIR
/// (and, for one tap, netx) export is read back and checked against it.
#[test]
fn the_engine_equals_the_reference_evaluation_in_batches_and_streaming() {
    let dir = scratch("deploy-reference");
    let data = small_dataset(&dir, &["--classes", "4", "--train", "32", "--test", "40", "--seed", "4", "--min-length-ms", "250"]);
    println!("{}", run_oracle("engine_parity.py", &["--bin", BIN, "--data", data.to_str().unwrap()]));
}

#[test]
fn netx_and_nir_exports_read_back_as_the_checkpoint() {
    let dir = scratch("deploy-export");
    let (_, run) = trained(&dir, &[]);
    let checkpoint = run.join("last.safetensors");
    for format in ["netx", "nir"] {
        let out = dir.join(format!("model.{format}"));
        let export =
            snn(&["export", "--checkpoint", checkpoint.to_str().unwrap(), "--format", format, "--out", out.to_str().unwrap()]);
        assert!(export.status.success(), "{}", text(&export));
    }
    let over =
        snn(&["export", "--checkpoint", checkpoint.to_str().unwrap(), "--format", "nir", "--out", checkpoint.to_str().unwrap()]);
    assert!(!over.status.success() && text(&over).contains("is the checkpoint"), "{}", text(&over));
    let not_a_model = snn(&["infer", "--model", checkpoint.to_str().unwrap(), "--data", dir.to_str().unwrap()]);
    let message = text(&not_a_model);
    assert!(!not_a_model.status.success() && message.contains("last.safetensors") && !message.contains("panicked"), "{message}");
    let (dir_s, run_s) = (dir.to_str().unwrap(), run.to_str().unwrap());
    println!(
        "{}",
        run_oracle(
            "export_check.py",
            &[
                "--config",
                &format!("{run_s}/config.json"),
                "--checkpoint",
                &format!("{run_s}/last.safetensors"),
                "--netx",
                &format!("{dir_s}/model.netx"),
                "--nir",
                &format!("{dir_s}/model.nir")
            ]
        )
    );
}

/// On recordings of different lengths (cut between 25 and 60 frames), `infer` computes each
/// sample on its own: batch mode and `--stream` give the same class scores bit for bit, and
/// `eval --per-sample` (libtorch) the same accuracy; the reference's padded-batch `eval` is the
/// other protocol. Trained networks, LIF with one tap and PLIF with two.
#[test]
fn each_sample_is_computed_on_its_own_in_batches_and_streams() {
    let dir = scratch("deploy-per-sample");
    let data = small_dataset(&dir, &["--classes", "4", "--train", "64", "--test", "48", "--seed", "6", "--min-length-ms", "250"]);
    for (name, extra) in [("lif", &["--set", "neuron=lif"][..]), ("plif", &["--set", "neuron=plif", "--set", "kernel_count=2"])] {
        let run = dir.join(name);
        let output = train_in(&data, &run, &[&SETTINGS[..], extra].concat(), &["--epochs", "3"]);
        assert!(output.status.success(), "{}", text(&output));
        let (checkpoint, model) = (run.join("last.safetensors"), run.join("model.safetensors"));
        let (checkpoint, model, data) = (checkpoint.to_str().unwrap(), model.to_str().unwrap(), data.to_str().unwrap());
        let export = snn(&["export", "--checkpoint", checkpoint, "--format", "delays", "--out", model]);
        assert!(export.status.success(), "{}", text(&export));
        let batch = snn_json(&["infer", "--model", model, "--data", data, "--json", "--scores"]);
        let streamed = snn_json(&["infer", "--model", model, "--data", data, "--stream", "--json", "--scores"]);
        assert_eq!(batch["samples"], 48);
        assert_eq!(batch["scores"], streamed["scores"], "{name}: batch and stream scores differ");
        assert_eq!(batch["predictions"], streamed["predictions"]);
        let eval =
            |extra: &[&str]| snn_json(&[&["eval", "--checkpoint", checkpoint, "--data", data, "--json"][..], extra].concat());
        let (per_sample, padded) = (eval(&["--per-sample"]), eval(&[]));
        assert_eq!(per_sample["accuracy"], batch["accuracy"], "{name}: eval --per-sample differs from infer");
        assert_eq!((per_sample["protocol"].as_str(), padded["protocol"].as_str()), (Some("per-sample"), Some("padded batches")));
        println!(
            "{name}: infer {} = eval --per-sample {}; padded-batch eval {}",
            batch["accuracy"], per_sample["accuracy"], padded["accuracy"]
        );
    }
}

/// The NIR export of a trained model, executed by an interpreter written from NIR's equations
/// (tests/oracle/nir_interpreter.py) and by nirtorch 2.6 with the node map of
/// docs/nirtorch_adapter.py, matches the engine under NIR semantics (`infer --semantics nir`);
/// the agreement between the two semantics is printed.
#[test]
fn an_independent_nir_interpreter_matches_the_engine_in_nir_semantics() {
    let dir = scratch("deploy-nir-run");
    let (data, run) = trained(&dir, &[]);
    let (checkpoint, data) = (run.join("last.safetensors"), data.to_str().unwrap());
    let (nir_file, model, frames, ours) =
        (dir.join("model.nir"), dir.join("model.safetensors"), dir.join("frames.safetensors"), dir.join("ours.json"));
    for (format, out) in [("nir", &nir_file), ("delays", &model)] {
        let export =
            snn(&["export", "--checkpoint", checkpoint.to_str().unwrap(), "--format", format, "--out", out.to_str().unwrap()]);
        assert!(export.status.success(), "{}", text(&export));
    }
    let model = model.to_str().unwrap();
    let nir_mode = snn(&["infer", "--model", model, "--data", data, "--semantics", "nir", "--json", "--scores"]);
    assert!(nir_mode.status.success(), "{}", text(&nir_mode));
    std::fs::write(&ours, &nir_mode.stdout).unwrap();
    let config = run.join("config.json");
    let export = snn(&[
        "data",
        "export",
        "--dataset",
        "shd",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data,
        "--split",
        "test",
        "--out",
        frames.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", text(&export));
    let (nir_s, frames_s, ours_s) = (nir_file.to_str().unwrap(), frames.to_str().unwrap(), ours.to_str().unwrap());
    for executor in ["interpreter", "nirtorch"] {
        let args = ["--nir", nir_s, "--frames", frames_s, "--ours", ours_s, "--executor", executor];
        println!("{}", run_oracle("nir_interpreter.py", &args));
    }
    let reference = snn_json(&["infer", "--model", model, "--data", data, "--json"]);
    let nir: serde_json::Value = serde_json::from_slice(&nir_mode.stdout).unwrap();
    let (a, b) = (reference["predictions"].as_array().unwrap(), nir["predictions"].as_array().unwrap());
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    println!(
        "reference and NIR semantics: {same} of {} predictions equal; accuracy {} and {}",
        a.len(),
        reference["accuracy"],
        nir["accuracy"]
    );
}

/// Under NIR semantics streaming equals batch mode bit for bit, and the readout equals the
/// reference semantics' until the first layer's sequence would have ended.
#[test]
fn nir_semantics_stream_equals_batch_and_departs_only_in_the_tail() {
    let dir = scratch("deploy-nir-semantics");
    let (data, run) = trained(&dir, &[]);
    let (network, config) = network_of(&run);
    let model = Model::new(EvalNetwork::of(&network, config.time_step_ms));
    let subset = DataSplits::subset(&config, &data, Split::Test).unwrap();
    let outputs = model.n_outputs();
    for frames in subset.source.frames(&subset.indices[..4]).unwrap() {
        let nir = model.run_as(&frames.values, frames.steps, Semantics::Nir).unwrap();
        let mut stream = model.stream_as(Semantics::Nir);
        let mut streamed: Vec<f32> = Vec::new();
        for frame in frames.values.chunks_exact(model.n_inputs()) {
            streamed.extend_from_slice(stream.step(frame).unwrap());
        }
        streamed.extend(stream.finish().into_iter().flatten());
        assert!(streamed == nir, "NIR semantics: streaming differs from batch mode");
        let reference = model.run(&frames.values, frames.steps).unwrap();
        assert_eq!(reference.len(), nir.len());
        let shared = (frames.steps + model.form().layers[0].synapse.extra_steps()) * outputs;
        assert!(reference[..shared] == nir[..shared], "the semantics differ before the first layer's end");
    }
}
