//! Training as a user meets it: schedule and optimizer parity with PyTorch, resume equal to an
//! uninterrupted run, TensorBoard read back by the `tensorboard` package, evaluation of our and
//! the reference's checkpoints, and clear errors with no partial files on bad input.

mod common;

use common::{metrics_without_time, python, run_oracle, scratch, small_dataset, snn, text, train_in, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SMALL: [&str; 8] = ["--set", "n_hidden_neurons=16", "--set", "batch_size=32", "--set", "max_delay_ms=100", "--epochs", "3"];

/// A small generated dataset, made once per test.
fn dataset(dir: &Path) -> PathBuf {
    small_dataset(dir, &["--classes", "4", "--train", "96", "--test", "32", "--seed", "2"])
}

fn train(data: &Path, run: &Path, extra: &[&str]) -> Output {
    train_in(data, run, &SMALL, extra)
}

/// The fused neuron kernel and the op-by-op oracle train to the same metrics, bit for bit, with
/// the default FFT convolution and subnormal flushing.
#[test]
fn fused_and_op_by_op_neurons_train_identically() {
    let dir = scratch("backends");
    let data = dataset(&dir);
    let runs: Vec<Vec<serde_json::Value>> = ["fused", "ops"]
        .iter()
        .map(|backend| {
            let run = dir.join(backend);
            let output = train(&data, &run, &["--set", &format!("neuron_backend={backend}")]);
            assert!(output.status.success(), "{}", text(&output));
            metrics_without_time(&run)
        })
        .collect();
    assert_eq!(runs[0].len(), 3);
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn schedules_equal_pytorch_for_every_epoch_of_every_preset() {
    println!("{}", run_oracle("schedule_parity.py", &["--bin", BIN]));
}

#[test]
fn optimizer_steps_agree_with_torch_adam() {
    println!("{}", run_oracle("optimizer_parity.py", &["--bin", BIN, "--neuron", "lif"]));
    println!("{}", run_oracle("optimizer_parity.py", &["--bin", BIN, "--neuron", "plif"]));
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_and_tensorboard_reads_it() {
    let dir = scratch("resume");
    let data = dataset(&dir);
    let whole = dir.join("whole");
    let output = train(&data, &whole, &[]);
    assert!(output.status.success(), "{}", text(&output));
    for file in
        ["config.json", "metrics.jsonl", "summary.json", "best_acc.safetensors", "best_loss.safetensors", "last.safetensors"]
    {
        assert!(whole.join(file).exists(), "{file} missing");
    }
    let split = dir.join("split");
    let first = train(&data, &split, &["--stop-after", "2"]);
    assert!(first.status.success() && text(&first).contains("paused after 2 epochs"), "{}", text(&first));
    assert!(!split.join("summary.json").exists());
    let second = train(&data, &split, &["--resume"]);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(metrics_without_time(&whole), metrics_without_time(&split));
    let read = |run: &Path| common::read(&run.join("last.safetensors"));
    let (a, b) = (read(&whole), read(&split));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, value) in &a {
        assert!(value.equal(&b[key]), "{key} differs after resume");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap()).unwrap();
    for key in ["best_valid_acc", "best_valid_epoch", "test_acc_at_best_valid", "best_test_acc", "final", "params", "seconds"] {
        assert!(summary.get(key).is_some(), "summary lacks {key}");
    }
    println!("{}", run_oracle("tensorboard_check.py", &[whole.to_str().unwrap()]));

    let evaluated = snn(&[
        "eval",
        "--checkpoint",
        whole.join("best_acc.safetensors").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(evaluated.status.success(), "{}", text(&evaluated));
    let report: serde_json::Value = serde_json::from_slice(&evaluated.stdout).unwrap();
    assert_eq!(report["accuracy"], summary["best_valid_acc"], "eval reproduces the best epoch's accuracy");

    let refused = train(&data, &whole, &[]);
    assert!(!refused.status.success() && text(&refused).contains("finished run"), "{}", text(&refused));
    let other = train(&data, &split, &["--resume", "--set", "dropout_p=0.1"]);
    assert!(!other.status.success() && text(&other).contains("dropout_p"), "{}", text(&other));
}

#[test]
fn eval_accepts_a_state_dict_saved_by_the_pytorch_reference() {
    let dir = scratch("eval-reference");
    let data = dataset(&dir);
    let config = dir.join("config.json");
    let printed = snn(&[&["config", "--preset", "shd"][..], &SMALL[..6]].concat());
    std::fs::write(&config, &printed.stdout).unwrap();
    let weights = dir.join("reference.safetensors");
    let script = "import sys, json; sys.path.insert(0, sys.argv[3]); from reference import ReferenceSnn; \
                  from safetensors.torch import save_file; cfg = json.load(open(sys.argv[1])); net = ReferenceSnn(cfg); \
                  net.init_as_reference(); save_file({k: v.contiguous() for k, v in net.state_dict().items()}, sys.argv[2])";
    let oracle_dir = common::repo().join("tests/oracle");
    let saved = Command::new(python())
        .args(["-c", script, config.to_str().unwrap(), weights.to_str().unwrap(), oracle_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(saved.status.success(), "{}", text(&saved));
    let evaluated = snn(&[
        "eval",
        "--config",
        config.to_str().unwrap(),
        "--checkpoint",
        weights.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(evaluated.status.success() && text(&evaluated).contains("integer delays"), "{}", text(&evaluated));
}

#[test]
fn bad_training_inputs_fail_clearly_without_partial_files() {
    let dir = scratch("train-errors");
    let data = dataset(&dir);
    let missing = train(&dir.join("no-such-data"), &dir.join("run-missing"), &[]);
    assert!(!missing.status.success() && text(&missing).contains("no-such-data"), "{}", text(&missing));
    assert!(!dir.join("run-missing/config.json").exists(), "no run files for a run that never started");

    let contradiction = snn(&["train", "--preset", "shd", "--data", data.to_str().unwrap(), "--set", "validation=file"]);
    assert!(
        !contradiction.status.success() && text(&contradiction).contains("SHD has no validation file"),
        "{}",
        text(&contradiction)
    );

    let run = dir.join("run");
    assert!(train(&data, &run, &["--stop-after", "1"]).status.success());
    let mismatched = snn(&[
        "eval",
        "--preset",
        "shd",
        "--set",
        "n_hidden_neurons=17",
        "--checkpoint",
        run.join("last.safetensors").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let message = text(&mismatched);
    assert!(!mismatched.status.success() && message.contains("model.0.weight") && message.contains("[17, 140, 1]"), "{message}");
    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(run.join("best_acc.safetensors")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let broken = snn(&[
        "eval",
        "--config",
        run.join("config.json").to_str().unwrap(),
        "--checkpoint",
        truncated.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!broken.status.success() && text(&broken).contains("truncated.safetensors"), "{}", text(&broken));

    let exploding = train(&data, &dir.join("nan"), &["--set", "lr_w=1e30"]);
    let message = text(&exploding);
    assert!(!exploding.status.success() && message.contains("training loss is"), "{message}");
}

/// The README's accuracy table, asserted: on the generated delay task (`make run`'s data and
/// settings), learned delays solve it and a network without delays cannot. The summary names
/// the protocol (validation on the test split, as the paper did for SHD).
#[test]
fn learned_delays_solve_the_generated_task_and_no_delays_cannot() {
    let dir = scratch("beats-chance");
    let data = small_dataset(&dir, &["--classes", "10"]);
    let best = |model: &str| {
        let run = dir.join(model);
        let settings = ["--set", "n_hidden_neurons=64", "--set", "batch_size=64", "--set", &format!("model_type={model}")];
        let output = train_in(&data, &run, &settings, &["--epochs", "12"]);
        assert!(output.status.success(), "{}", text(&output));
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert!(summary["protocol"].as_str().unwrap().contains("TEST split"), "{summary}");
        summary["best_valid_acc"].as_f64().unwrap()
    };
    let (delays, none) = (best("snn_delays"), best("snn"));
    assert!(delays >= 0.9, "learned delays reach only {delays}");
    assert!(none <= 0.5, "no delays reach {none}: the task no longer needs delays");
}
