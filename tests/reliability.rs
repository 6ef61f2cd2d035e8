//! Reliability as a hostile or careless user meets it: inputs that used to panic, abort or
//! exhaust memory get an error that names the file, key, sample or value; a run directory never
//! dead-ends; one process writes a run; Ctrl-C exits with 130. Memory cases run under a 6 GB
//! address-space limit, so that a regression fails the test instead of exhausting the machine.

mod common;

use common::{metrics_without_time, output_within, python, scratch, small_dataset, snn, text, train_in, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SMALL: [&str; 6] = ["--set", "n_hidden_neurons=16", "--set", "batch_size=8", "--set", "max_delay_ms=100"];

/// Runs the binary under `ulimit -v 6000000` (6 GB of address space).
fn limited(args: &[&str]) -> Output {
    common::run(Command::new("bash").arg("-c").arg("ulimit -v 6000000; exec \"$0\" \"$@\"").arg(BIN).args(args))
}

/// Asserts a clean failure (exit 1, no panic) whose message contains every needle.
fn fails_with(output: &Output, needles: &[&str]) {
    let message = text(output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "missing `{needle}` in: {message}");
    }
}

/// Writes an SHD-layout split with h5py: float32 times in seconds, given labels, and units
/// `0, 1, 2, …` in each sample as uint16.
fn spike_file(path: &Path, times: &str, labels: &str, label_type: &str) {
    spike_file_with_units(path, times, labels, label_type, "1");
}

/// [`spike_file`] with units `0, s, 2s, …` stored as float32 unless the scale `s` is 1.
fn spike_file_with_units(path: &Path, times: &str, labels: &str, label_type: &str, unit_scale: &str) {
    let script = "import h5py, numpy as np, sys\n\
        times, labels, scale = eval(sys.argv[2]), eval(sys.argv[3]), float(sys.argv[5])\n\
        kind = np.uint16 if scale == 1 else np.float32\n\
        with h5py.File(sys.argv[1], 'w') as f:\n\
        \x20   f.create_dataset('spikes/times', data=np.array([np.array(t, np.float32) for t in times] + [None], object)[:-1], dtype=h5py.vlen_dtype(np.float32))\n\
        \x20   f.create_dataset('spikes/units', data=np.array([(np.arange(len(t)) * scale).astype(kind) for t in times] + [None], object)[:-1], dtype=h5py.vlen_dtype(kind))\n\
        \x20   f.create_dataset('labels', data=np.array(labels, sys.argv[4]))\n";
    let output = common::run(Command::new(python()).args(["-c", script]).arg(path).args([times, labels, label_type, unit_scale]));
    assert!(output.status.success(), "{}", text(&output));
}

fn train(data: &Path, run: &Path, extra: &[&str]) -> Output {
    train_in(data, run, &SMALL, extra)
}

fn data_in(dir: &Path) -> PathBuf {
    small_dataset(dir, &["--classes", "4", "--train", "40", "--test", "20"])
}

#[test]
fn bad_numbers_are_errors_not_crashes() {
    let dir = scratch("rel-numbers");
    let data = data_in(&dir);
    let run = dir.join("run");
    fails_with(&train(&data, &run, &["--threads", "0"]), &["--threads", "got 0"]);
    fails_with(&train(&data, &run, &["--stop-after", "0"]), &["--stop-after"]);
    let tiny_step = [
        &["train", "--preset", "shd", "--data", data.to_str().unwrap(), "--run-dir"][..],
        &[run.to_str().unwrap()],
        &["--set", "time_step_ms=1e-9", "--set", "max_delay_ms=1e-8"],
    ]
    .concat();
    fails_with(&limited(&tiny_step), &["shd_train.h5 sample", "time_step_ms", "frames"]);
    for (rate, needles) in [("inf", ["--noise-rate", "got inf"]), ("1e12", ["needs about", "spikes"])] {
        let out = dir.join(format!("synth-{rate}"));
        fails_with(&limited(&["synth", "--out", out.to_str().unwrap(), "--noise-rate", rate]), &needles);
        assert!(!out.join("shd_train.h5").exists());
    }
}

/// Output into a closed pipe (`snn-delays config | head -c 0`) ends the program quietly by
/// SIGPIPE, as it ends other Unix tools, instead of a panic on the failed print.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child =
        Command::new(BIN).args(["config", "--preset", "shd"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let output = output_within(child, Duration::from_secs(60));
    let message = text(&output);
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(output.status.signal(), Some(13), "ended by SIGPIPE: {message}");
}

#[test]
fn oversized_networks_and_samples_fail_before_allocating() {
    let dir = scratch("rel-memory");
    let data = data_in(&dir);
    let run = dir.join("run");
    let huge = ["--set", "n_hidden_neurons=100000"];
    let args =
        [&["train", "--preset", "shd", "--data", data.to_str().unwrap(), "--run-dir", run.to_str().unwrap()][..], &huge].concat();
    fails_with(&limited(&args), &["needs about", "kernels", "--memory-limit-gb"]);
    let weights = dir.join("w.safetensors");
    fails_with(
        &limited(&[&["init", "--preset", "shd", "--out", weights.to_str().unwrap()][..], &huge].concat()),
        &["needs about"],
    );
    assert!(!weights.exists());
    fails_with(&train(&data, &run, &["--memory-limit-gb", "0.001"]), &["--memory-limit-gb", "activations"]);
    for (name, times) in [("far", "[[0.1, 1e9], [0.2]]"), ("milliseconds", "[[12.0, 480.0], [3.0, 900.5]]")] {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        spike_file(&folder.join("shd_train.h5"), times, "[0, 1]", "u1");
        spike_file(&folder.join("shd_test.h5"), "[[0.1]]", "[0]", "u1");
        let info = limited(&["data", "info", "--dataset", "shd", "--data", folder.to_str().unwrap()]);
        fails_with(&info, &["shd_train.h5 sample 0", "spike times must be in seconds"]);
        fails_with(
            &limited(
                &[&["train", "--preset", "shd", "--data", folder.to_str().unwrap(), "--run-dir", run.to_str().unwrap()][..]]
                    .concat(),
            ),
            &["sample 0", "seconds"],
        );
    }
}

#[test]
fn empty_splits_float_labels_and_float_units_are_refused() {
    let dir = scratch("rel-files");
    let run = dir.join("run");
    let cases = [
        ("empty-train", ("[]", "[]", "u1"), ("[[0.1]]", "[0]", "u1"), "the train split has no samples"),
        ("empty-test", ("[[0.1]]", "[0]", "u1"), ("[]", "[]", "u1"), "the test split has no samples"),
        ("float-labels", ("[[0.1], [0.2]]", "[0.0, 3.5]", "f4"), ("[[0.1]]", "[0]", "u1"), "`labels` must be integers"),
    ];
    for (name, train_split, test_split, needle) in cases {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        spike_file(&folder.join("shd_train.h5"), train_split.0, train_split.1, train_split.2);
        spike_file(&folder.join("shd_test.h5"), test_split.0, test_split.1, test_split.2);
        fails_with(&train(&folder, &run, &[]), &[needle]);
        fails_with(&snn(&["data", "info", "--dataset", "shd", "--data", folder.to_str().unwrap()]), &[needle]);
    }
    let folder = dir.join("float-units");
    std::fs::create_dir_all(&folder).unwrap();
    for (split, scale) in [("train", "0.5"), ("test", "1")] {
        spike_file_with_units(&folder.join(format!("shd_{split}.h5")), "[[0.1], [0.2, 0.3]]", "[0, 1]", "u1", scale);
    }
    let needles = ["shd_train.h5: sample 1: unit 0.5 is not a whole number"];
    fails_with(&train(&folder, &run, &[]), &needles);
    fails_with(&snn(&["data", "info", "--dataset", "shd", "--data", folder.to_str().unwrap()]), &needles);
    spike_file_with_units(&folder.join("shd_train.h5"), "[[0.1], [0.2, 0.3]]", "[0, 1]", "u1", "2");
    fails_with(&train(&folder, &run, &[]), &["shd_train.h5: `spikes/units` must hold integers"]);
    let data = data_in(&dir);
    let three = train(&data, &run, &["--set", "n_outputs=3"]);
    fails_with(&three, &["shd_train.h5 sample", "label 3 is outside 0..2", "n_outputs"]);
    fails_with(&train(&data, &run, &["--set", "n_outputs=1"]), &["`n_outputs` must be at least 2"]);
    assert!(train(&data, &run, &["--set", "n_outputs=4", "--epochs", "1"]).status.success(), "4 outputs for 4 classes");
}

#[test]
fn outputs_never_overwrite_their_inputs() {
    let dir = scratch("rel-overwrite");
    let weights = dir.join("w.safetensors");
    assert!(snn(&["init", "--preset", "shd", "--set", "n_hidden_neurons=8", "--out", weights.to_str().unwrap()])
        .status
        .success());
    let before = std::fs::read(&weights).unwrap();
    let out = weights.to_str().unwrap();
    fails_with(
        &snn(&["forward", "--preset", "shd", "--set", "n_hidden_neurons=8", "--weights", out, "--input", out, "--out", out]),
        &["--out", "--weights"],
    );
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    let data = data_in(&dir);
    let stamp = std::fs::read(data.join("shd_train.h5")).unwrap();
    fails_with(&snn(&["synth", "--out", data.to_str().unwrap(), "--seed", "9"]), &["shd_train.h5 already exists", "--force"]);
    assert_eq!(std::fs::read(data.join("shd_train.h5")).unwrap(), stamp);
    assert!(snn(&["synth", "--out", data.to_str().unwrap(), "--seed", "9", "--train", "40", "--test", "20", "--force"])
        .status
        .success());
}

/// NaN in the first epoch leaves no checkpoint; the message promises none, and the same folder
/// starts over, with or without `--resume`; with a new configuration (not with `--resume`, which
/// keeps the run's) it trains, and the failed attempts' events are gone.
#[test]
fn a_run_that_completed_no_epoch_starts_over() {
    let dir = scratch("rel-dead-end");
    let data = data_in(&dir);
    for resume in [&[][..], &["--resume"]] {
        let run = dir.join(format!("run{}", resume.len()));
        let failed = train(&data, &run, &["--epochs", "2", "--set", "lr_w=1e30"]);
        fails_with(&failed, &["stopped in epoch 1", "no epoch was completed, so nothing was saved", "NaN"]);
        assert!(!text(&failed).contains("last.safetensors") && !run.join("last.safetensors").exists());
        let again = train(&data, &run, &[&["--epochs", "2", "--set", "lr_w=1e30"][..], resume].concat());
        fails_with(&again, &["stopped in epoch 1"]);
        assert!(text(&again).contains("completed no epoch: starting it over"), "{}", text(&again));
        if resume.is_empty() {
            let fixed = train(&data, &run, &["--epochs", "1"]);
            assert!(fixed.status.success(), "{}", text(&fixed));
            let events = std::fs::read_dir(&run)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("events"))
                .count();
            assert_eq!(events, 1, "the failed attempts' events remain");
        }
    }
}

/// A second writer is refused while the first runs, naming its pid; Ctrl-C then stops the
/// first after the current batch with exit status 130, and `--resume` continues it with no
/// TensorBoard point written twice.
#[test]
fn one_writer_per_run_and_ctrl_c_exits_130() {
    let dir = scratch("rel-lock");
    let data = data_in(&dir);
    let run = dir.join("run");
    let args = [
        &[
            "train",
            "--preset",
            "shd",
            "--data",
            data.to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
            "--quiet",
            "--epochs",
            "500",
        ][..],
        &SMALL,
    ]
    .concat();
    let first = Command::new(BIN).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while !run.join("last.safetensors").exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = train(&data, &run, &["--resume", "--epochs", "500"]);
    fails_with(&second, &["is in use by another snn-delays process", &format!("pid {}", first.id())]);
    assert!(Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap().success());
    let output = output_within(first, Duration::from_secs(120));
    assert_eq!(output.status.code(), Some(130), "{}", text(&output));
    assert!(text(&output).contains("holds the state after epoch") && text(&output).contains("--resume"), "{}", text(&output));
    let done = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count();
    let resumed = train(&data, &run, &["--resume", "--epochs", "500", "--stop-after", &(done + 1).to_string()]);
    assert!(
        resumed.status.success() && text(&resumed).contains(&format!("paused after {} epochs", done + 1)),
        "{}",
        text(&resumed)
    );
    println!("{}", common::run_oracle("tensorboard_check.py", &[run.to_str().unwrap()]));
}

/// Rewrites a safetensors file with Python: `edit` is a statement on `t` (the tensors, by key)
/// and `m` (the header metadata).
fn edit_safetensors(from: &Path, to: &Path, edit: &str) {
    let script = format!(
        "import json, sys, torch\nfrom safetensors import safe_open\nfrom safetensors.torch import save_file\n\
         f = safe_open(sys.argv[1], 'pt'); t = {{k: f.get_tensor(k) for k in f.keys()}}; m = f.metadata() or {{}}\n{edit}\n\
         save_file(t, sys.argv[2], metadata=m)\n"
    );
    let output = common::run(Command::new(python()).args(["-c", &script]).arg(from).arg(to));
    assert!(output.status.success(), "{}", text(&output));
}

/// Checkpoints are checked when loaded: another run's `last`, a damaged file, a training state
/// that does not fit, NaN weights, a negative BatchNorm variance and integer weights are refused
/// by name; float64 weights load with a warning.
#[test]
fn damaged_or_foreign_checkpoints_are_refused_by_name() {
    let dir = scratch("rel-checkpoints");
    let data = data_in(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    for run in [&a, &b] {
        let output = train(&data, run, &["--epochs", "3", "--stop-after", "1"]);
        assert!(output.status.success(), "{}", text(&output));
    }
    let resume = || train(&data, &a, &["--epochs", "3", "--resume"]);
    let own = std::fs::read(a.join("last.safetensors")).unwrap();
    std::fs::copy(b.join("last.safetensors"), a.join("last.safetensors")).unwrap();
    fails_with(&resume(), &["last.safetensors belongs to another run"]);
    let mut damaged = own.clone();
    let at = damaged.len() - 9;
    damaged[at] ^= 0x55;
    std::fs::write(a.join("last.safetensors"), &damaged).unwrap();
    fails_with(&resume(), &["last.safetensors is damaged"]);
    std::fs::write(a.join("last.safetensors"), &own).unwrap();
    let tampered = dir.join("tampered.safetensors");
    edit_safetensors(
        &a.join("last.safetensors"),
        &tampered,
        "s = json.loads(m['snn_delays.state']); s['epochs_done'] = 99; m['snn_delays.state'] = json.dumps(s)",
    );
    std::fs::copy(&tampered, a.join("last.safetensors")).unwrap();
    fails_with(&resume(), &["99 epochs done", "does not fit"]);
    std::fs::write(a.join("last.safetensors"), &own).unwrap();
    assert!(resume().status.success());
    let eval = |file: &Path| {
        let config = a.join("config.json");
        snn(&[
            "eval",
            "--checkpoint",
            file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
    };
    let best = a.join("best_loss.safetensors");
    let edited = dir.join("edited.safetensors");
    for (edit, needles) in [
        ("t['model.0.weight'][0, 0, 0] = float('nan')", &["`model.0.weight`", "NaN"][..]),
        ("t['model.1.running_var'][3] = -1.0", &["`model.1.running_var`", "negative"]),
        ("t['model.0.weight'] = t['model.0.weight'].long()", &["`model.0.weight`", "Int64"]),
    ] {
        edit_safetensors(&best, &edited, &format!("m.pop('snn_delays.checksum'); {edit}"));
        fails_with(&eval(&edited), needles);
    }
    edit_safetensors(
        &best,
        &edited,
        "m.pop('snn_delays.checksum'); t = {k: v.double() if v.is_floating_point() else v for k, v in t.items()}",
    );
    let converted = eval(&edited);
    assert!(
        converted.status.success() && text(&converted).contains("converting `model.0.weight` from Double"),
        "{}",
        text(&converted)
    );
}

/// A resumed run keeps the thread count it was started with, and so equals an uninterrupted one
/// bit for bit; resuming with another `--threads` says that it will not.
#[test]
fn resume_keeps_the_runs_thread_count() {
    let dir = scratch("rel-threads");
    let data = data_in(&dir);
    let (whole, parts) = (dir.join("whole"), dir.join("parts"));
    assert!(train(&data, &whole, &["--epochs", "3", "--threads", "1"]).status.success());
    assert!(train(&data, &parts, &["--epochs", "3", "--threads", "1", "--stop-after", "1"]).status.success());
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for entry in std::fs::read_dir(&parts).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, other.join(path.file_name().unwrap())).unwrap();
    }
    let warned = train(&data, &other, &["--epochs", "3", "--resume", "--threads", "2", "--stop-after", "2"]);
    assert!(text(&warned).contains("resumes with 2: it will not repeat an uninterrupted run"), "{}", text(&warned));
    let resumed = train(&data, &parts, &["--epochs", "3", "--resume"]);
    assert!(resumed.status.success() && !text(&resumed).contains("warning"), "{}", text(&resumed));
    common::assert_same_run(&whole, &parts);
}

/// `data export --split valid` and `eval --split` follow the configured validation: with a
/// hold-out, valid is 20% of the train file (8 of 40 samples), train the other 32.
#[test]
fn export_follows_the_configured_validation() {
    let dir = scratch("rel-export");
    let data = data_in(&dir);
    let out = dir.join("valid.safetensors");
    let (data, out_path) = (data.to_str().unwrap(), out.to_str().unwrap());
    let output = snn(&[
        "data",
        "export",
        "--dataset",
        "shd",
        "--data",
        data,
        "--split",
        "valid",
        "--set",
        "validation=holdout",
        "--out",
        out_path,
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(common::read(&out)["labels"].size(), [8]);
    let run = dir.join("run");
    assert!(train(Path::new(data), &run, &["--epochs", "1", "--set", "validation=holdout"]).status.success());
    for (split, samples) in [("train", 32), ("valid", 8), ("test", 20)] {
        let checkpoint = run.join("best_loss.safetensors");
        let eval = snn(&["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--data", data, "--split", split, "--json"]);
        assert!(eval.status.success(), "{}", text(&eval));
        let scores: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        assert_eq!(scores["samples"], samples, "{split}: {scores}");
    }
}

/// Parameters blown up to NaN in the second epoch stop the run before anything is logged or
/// saved: the message names the checkpoint of epoch 1, which is left as it was, and neither
/// metrics.jsonl nor the TensorBoard events hold epoch 2. (One batch per epoch, and a learning
/// rate of 1e30.)
#[test]
fn a_nan_keeps_the_last_good_checkpoint() {
    let dir = scratch("rel-nan");
    let data = data_in(&dir);
    let run = dir.join("run");
    let settings = ["--set", "n_hidden_neurons=16", "--set", "batch_size=64", "--set", "max_delay_ms=100", "--set", "lr_w=1e30"];
    let first = train_in(&data, &run, &settings, &["--epochs", "3", "--stop-after", "1"]);
    assert!(first.status.success(), "{}", text(&first));
    let saved = std::fs::read(run.join("last.safetensors")).unwrap();
    let failed = train_in(&data, &run, &settings, &["--epochs", "3", "--resume"]);
    fails_with(&failed, &["stopped in epoch 2", "holds the state after epoch 1"]);
    assert_eq!(std::fs::read(run.join("last.safetensors")).unwrap(), saved);
    assert_eq!(metrics_without_time(&run).len(), 1, "metrics.jsonl holds epoch 1 only");
    common::run_oracle("tensorboard_check.py", &[run.to_str().unwrap()]);
}

/// Temporary files left by a killed writer (`.NAME.tmp-PID`) are removed when the run directory
/// is next opened; other files stay.
#[test]
fn stale_temporaries_are_removed_when_the_run_is_next_opened() {
    let dir = scratch("rel-stale");
    let data = data_in(&dir);
    let run = dir.join("run");
    assert!(train(&data, &run, &["--epochs", "2", "--stop-after", "1"]).status.success());
    let stale = [".last.safetensors.tmp-4242", ".metrics.jsonl.tmp-7"].map(|name| run.join(name));
    for path in &stale {
        std::fs::write(path, b"partial").unwrap();
    }
    std::fs::write(run.join("notes.txt"), b"mine").unwrap();
    let resumed = train(&data, &run, &["--epochs", "2", "--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    for path in &stale {
        assert!(!path.exists(), "{} was left", path.display());
    }
    assert_eq!(std::fs::read(run.join("notes.txt")).unwrap(), b"mine");
}

/// `train … | head -1` ends the run by SIGPIPE at its next line of output; `--resume` then
/// finishes it (from the last completed epoch, or from the start when none was).
#[test]
fn a_run_cut_by_head_resumes() {
    let dir = scratch("rel-head");
    let data = data_in(&dir);
    let run = dir.join("run");
    let base = ["train", "--preset", "shd", "--data", data.to_str().unwrap(), "--run-dir", run.to_str().unwrap(), "--quiet"];
    let args = [&base[..], &SMALL, &["--epochs", "3"]].concat();
    let piped = common::run(Command::new("bash").arg("-c").arg("\"$0\" \"$@\" | head -1").arg(BIN).args(&args));
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 1, "{}", text(&piped));
    let epochs_done = if run.join("metrics.jsonl").exists() { metrics_without_time(&run).len() } else { 0 };
    assert!(epochs_done < 3, "the pipe ended the run early");
    let resumed = train(&data, &run, &["--epochs", "3", "--resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(metrics_without_time(&run).len(), 3);
}

/// Trains (`$bin train …`, the remaining arguments) on a tmpfs of `$size` bytes mounted at `$fs`
/// (in a private mount namespace), then resumes with room; logs, exit codes, the listing after
/// the failure and a copy of the run go to `$out`.
const FULL_DISK: &str = r#"set -u
bin=$0; data=$1; fs=$2; out=$3; size=$4; shift 4
mount -t tmpfs -o "size=$size" tmpfs "$fs" || exit 90
"$bin" train --preset shd --data "$data" --run-dir "$fs/run" --quiet "$@" > "$out/first.log" 2>&1
echo $? > "$out/first.rc"
ls -A "$fs/run" > "$out/after_failure.ls"
mount -o remount,size=64m "$fs"
"$bin" train --preset shd --data "$data" --run-dir "$fs/run" --quiet "$@" --resume > "$out/resume.log" 2>&1
echo $? > "$out/resume.rc"
cp -a "$fs/run" "$out/run"
"#;

/// A write that fails mid-run (the file system full at the second epoch's checkpoint) ends the
/// run with exit 1 and an error naming the file and the cause; the directory keeps no temporary
/// and resumes, once there is room, to the same metrics and weights as an uninterrupted run.
#[test]
fn a_full_disk_ends_the_run_with_an_error_and_a_resumable_directory() {
    let dir = scratch("rel-full-disk");
    let data = data_in(&dir);
    let settings = [&SMALL[..], &["--epochs", "3"]].concat();
    let whole = dir.join("whole");
    let output = train(&data, &whole, &["--epochs", "3"]);
    assert!(output.status.success(), "{}", text(&output));
    let pages = |bytes: u64| bytes.div_ceil(4096) * 4096;
    let files: Vec<_> = std::fs::read_dir(&whole).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).collect();
    let last = std::fs::metadata(whole.join("last.safetensors")).unwrap().len();
    let size = files.iter().map(|&b| pages(b)).sum::<u64>() + pages(last / 2);
    let (fs, out) = (dir.join("fs"), dir.join("out"));
    std::fs::create_dir_all(&fs).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let script = common::run(
        Command::new("unshare")
            .args(["-rm", "bash", "-c", FULL_DISK, BIN, data.to_str().unwrap(), fs.to_str().unwrap(), out.to_str().unwrap()])
            .arg(size.to_string())
            .args(&settings),
    );
    assert!(script.status.success(), "making a full file system needs `unshare -rm` (a mount namespace): {}", text(&script));
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let first = read("first.log");
    assert_eq!(read("first.rc").trim(), "1", "{first}");
    assert!(first.contains("cannot write") && first.contains("No space left on device (os error 28)"), "{first}");
    assert!(!first.contains("panicked") && first.contains("epoch   1/3"), "{first}");
    assert!(!read("after_failure.ls").contains(".tmp-"), "a temporary is left: {}", read("after_failure.ls"));
    assert_eq!(read("resume.rc").trim(), "0", "{}", read("resume.log"));
    common::assert_same_run(&out.join("run"), &whole);
}

/// `export --out` to a named pipe hands the reader the whole file (the same bytes as a regular
/// file gets); to `/dev/null` it writes through and leaves the device a device; to a directory
/// it is refused by name.
#[test]
fn export_writes_through_pipes_and_devices_and_refuses_directories() {
    use std::os::unix::fs::FileTypeExt;
    let dir = scratch("rel-out-paths");
    let (config, weights) = (dir.join("config.json"), dir.join("init.safetensors"));
    let printed = snn(&["config", "--preset", "shd", "--set", "n_hidden_neurons=16"]);
    std::fs::write(&config, &printed.stdout).unwrap();
    assert!(snn(&["init", "--config", config.to_str().unwrap(), "--out", weights.to_str().unwrap()]).status.success());
    let export = |out: &Path| {
        let args = ["export", "--config", config.to_str().unwrap(), "--checkpoint", weights.to_str().unwrap()];
        snn(&[&args[..], &["--format", "nir", "--out", out.to_str().unwrap()]].concat())
    };
    let file = dir.join("model.nir");
    assert!(export(&file).status.success());
    let (pipe, received) = (dir.join("pipe"), dir.join("received.nir"));
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    let reader = Command::new("bash").arg("-c").arg("cat \"$0\" > \"$1\"").arg(&pipe).arg(&received).spawn().unwrap();
    let written = export(&pipe);
    assert!(written.status.success(), "{}", text(&written));
    assert!(output_within(reader, Duration::from_secs(60)).status.success());
    let (got, want) = (std::fs::read(&received).unwrap(), std::fs::read(&file).unwrap());
    assert!(got == want, "the reader got {} bytes, not the file's {} bytes", got.len(), want.len());
    assert!(std::fs::metadata(&pipe).unwrap().file_type().is_fifo(), "the pipe is still a pipe");
    let null = export(Path::new("/dev/null"));
    assert!(null.status.success(), "{}", text(&null));
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null is still a device");
    fails_with(&export(&dir), &[dir.to_str().unwrap(), "is a directory"]);
}
