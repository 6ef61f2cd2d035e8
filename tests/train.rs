//! Training as a user meets it: schedule and optimizer parity with PyTorch, resume equal to an
//! uninterrupted run, TensorBoard read back by the `tensorboard` package, evaluation of our and
//! the reference's checkpoints, and clear errors with no partial files on bad input.

mod common;

use common::{
    assert_same_run, metrics_without_time, read, run_oracle, scratch, small_dataset, snn, text, train_in, BIN,
    SSC_NETWORK_ON_SHD_DATA, TINY_RECURRENT,
};
use std::path::{Path, PathBuf};
use std::process::Output;

const SMALL: [&str; 8] = ["--set", "n_hidden_neurons=16", "--set", "batch_size=32", "--set", "max_delay_ms=100", "--epochs", "3"];

/// A small generated dataset, made once per test.
fn dataset(dir: &Path) -> PathBuf {
    small_dataset(dir, &["--classes", "4", "--train", "96", "--test", "32", "--seed", "2"])
}

fn train(data: &Path, run: &Path, extra: &[&str]) -> Output {
    train_in(data, run, &SMALL, extra)
}

/// The fused neuron kernel and the op-by-op oracle train to the same metrics and final weights,
/// bit for bit, with the default FFT convolution and subnormal flushing.
#[test]
fn fused_and_op_by_op_neurons_train_identically() {
    let dir = scratch("backends");
    let data = dataset(&dir);
    let runs: Vec<PathBuf> = ["fused", "ops"]
        .iter()
        .map(|backend| {
            let run = dir.join(backend);
            let output = train(&data, &run, &["--set", &format!("neuron_backend={backend}")]);
            assert!(output.status.success(), "{}", text(&output));
            run
        })
        .collect();
    assert_eq!(metrics_without_time(&runs[0]).len(), 3);
    assert_same_run(&runs[0], &runs[1]);
}

/// The default computation (FFT, flushed taps) and the exact one (direct convolution, taps
/// kept) train the full-width SHD preset for 3 epochs on the same data and seed to the same
/// results within the README's figures: train loss within 1e-4 and validation loss within 1e-3
/// (relative; an eval-form delay at a half step may round the other way), accuracies within one
/// sample, every final float tensor within 1e-4 in relative norm. The figures seen are printed.
#[test]
fn default_and_exact_settings_train_alike() {
    let dir = scratch("default-vs-exact");
    let data = dataset(&dir);
    let exact = ["--set", "convolution=direct", "--set", "flush_subnormal_taps=false"];
    let run = |name: &str, settings: &[&str]| {
        let run = dir.join(name);
        let output = train_in(&data, &run, &[&["--set", "batch_size=32", "--epochs", "3"][..], settings].concat(), &[]);
        assert!(output.status.success(), "{}", text(&output));
        run
    };
    let (default, exact) = (run("default", &[]), run("exact", &exact));
    let (a, b) = (metrics_without_time(&default), metrics_without_time(&exact));
    assert_eq!(a.len(), 3);
    let relative = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-12);
    for (epoch, (a, b)) in a.iter().zip(&b).enumerate() {
        let value = |record: &serde_json::Value, key: &str| record[key].as_f64().unwrap();
        let (train, valid) =
            (relative(value(a, "train_loss"), value(b, "train_loss")), relative(value(a, "valid_loss"), value(b, "valid_loss")));
        println!("epoch {}: train loss differs by {train:.1e}, validation loss by {valid:.1e} (relative)", epoch + 1);
        assert!(train <= 1e-4 && valid <= 1e-3, "epoch {}: {a} vs {b}", epoch + 1);
        for key in ["train_acc", "valid_acc"] {
            assert!((value(a, key) - value(b, key)).abs() <= 1.0 / 32.0 + 1e-12, "epoch {} {key}: {a} vs {b}", epoch + 1);
        }
    }
    let (a, b) = (read(&default.join("last.safetensors")), read(&exact.join("last.safetensors")));
    let mut worst = (0.0, String::new());
    for (key, value) in a.iter().filter(|(key, value)| key.starts_with("model.") && value.is_floating_point()) {
        let (value, other) = (value.to_kind(tch::Kind::Double), b[key].to_kind(tch::Kind::Double));
        let norm = (&value - &other).norm().double_value(&[]) / other.norm().double_value(&[]).max(1e-30);
        if norm > worst.0 {
            worst = (norm, key.clone());
        }
    }
    println!("final weights: largest relative norm of the difference {:.1e} ({})", worst.0, worst.1);
    assert!(worst.0 <= 1e-4, "{} differs by {:.1e} in relative norm", worst.1, worst.0);
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
    assert_same_run(&whole, &split);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap()).unwrap();
    for key in ["best_valid_acc", "best_valid_epoch", "test_acc_at_best_valid", "best_test_acc", "final", "params", "seconds"] {
        assert!(summary.get(key).is_some(), "summary lacks {key}");
    }
    let metrics = metrics_without_time(&whole);
    assert_eq!(metrics.iter().map(|m| m["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3], "epochs from 1");
    let best = summary["best_valid_epoch"].as_u64().unwrap();
    assert_eq!(metrics[best as usize - 1]["valid_acc"], summary["best_valid_acc"]);
    assert_eq!(metrics[best as usize - 1]["valid_acc_batch_mean"], summary["test_acc_batch_mean_at_best_valid"]);
    for run in [&whole, &split] {
        println!("{}", run_oracle("tensorboard_check.py", &[run.to_str().unwrap()]));
    }

    let eval = |file: &str| {
        let checkpoint = whole.join(file);
        let evaluated = snn(&["eval", "--checkpoint", checkpoint.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"]);
        assert!(evaluated.status.success(), "{}", text(&evaluated));
        serde_json::from_slice::<serde_json::Value>(&evaluated.stdout).unwrap()
    };
    assert_eq!(eval("best_acc.safetensors")["accuracy"], summary["best_valid_acc"], "eval reproduces the best epoch's accuracy");
    let lowest =
        metrics_without_time(&whole).iter().map(|epoch| epoch["valid_loss"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert_eq!(
        eval("best_loss.safetensors")["loss"].as_f64(),
        Some(lowest),
        "best_loss holds the lowest validation loss's weights"
    );

    let refused = train(&data, &whole, &[]);
    assert!(!refused.status.success() && text(&refused).contains("finished run"), "{}", text(&refused));
    let other = train(&data, &split, &["--resume", "--set", "dropout_p=0.1"]);
    assert!(!other.status.success() && text(&other).contains("dropout_p"), "{}", text(&other));
}

/// With every augmentation on (TimeNeurons mask, CutMix, RNoise), a run paused after one epoch
/// and resumed as the pause message says (`--resume --run-dir`, no config flags) equals an
/// uninterrupted one, and the augmentations change what it trains on.
#[test]
fn augmented_runs_resume_identically() {
    let dir = scratch("augment");
    let data = dataset(&dir);
    let augmented = ["--set", "augment=true", "--set", "rnoise_sig=0.5"];
    let whole = dir.join("whole");
    let output = train(&data, &whole, &augmented);
    assert!(output.status.success(), "{}", text(&output));
    let split = dir.join("split");
    assert!(train(&data, &split, &[&augmented[..], &["--stop-after", "1"]].concat()).status.success());
    let resumed = snn(&["train", "--resume", "--run-dir", split.to_str().unwrap(), "--data", data.to_str().unwrap(), "--quiet"]);
    assert!(resumed.status.success(), "resumed with the run's own config.json: {}", text(&resumed));
    assert_same_run(&whole, &split);
    let plain = dir.join("plain");
    assert!(train(&data, &plain, &[]).status.success());
    let train_loss = |run: &Path| metrics_without_time(run)[0]["train_loss"].clone();
    assert_ne!(train_loss(&whole), train_loss(&plain), "augmentation changed nothing");
}

/// `eval` of a state dict saved by the reference network, on weights randomised away from the
/// seeded init, gives the reference's own evaluation: the same accuracies, the losses within
/// 1e-6, both as the reference's means over batches and weighted by samples
/// (tests/oracle/eval_parity.py; 4 outputs for the 4 classes; batches of 12, 12 and 8).
#[test]
fn eval_of_a_reference_state_dict_equals_the_reference_evaluation() {
    let dir = scratch("eval-reference");
    let data = dataset(&dir);
    let settings = [
        "n_hidden_neurons=16",
        "n_outputs=4",
        "batch_size=12",
        "max_delay_ms=100",
        "convolution=direct",
        "flush_subnormal_taps=false",
    ];
    let mut args = vec!["--bin", BIN, "--data", data.to_str().unwrap()];
    args.extend(settings.iter().flat_map(|s| ["--set", s]));
    println!("{}", run_oracle("eval_parity.py", &args));
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

/// A run whose `config.json` was written before `dropout_masks` existed resumes with the key's
/// default.
#[test]
fn a_run_from_before_a_config_key_existed_resumes_with_its_default() {
    let dir = scratch("older-config");
    let data = dataset(&dir);
    let run = dir.join("run");
    let output = train(&data, &run, &["--stop-after", "1"]);
    assert!(output.status.success(), "{}", text(&output));
    let path = run.join("config.json");
    let mut saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(saved.as_object_mut().unwrap().remove("dropout_masks").is_some());
    std::fs::write(&path, serde_json::to_string_pretty(&saved).unwrap()).unwrap();
    let output = train(&data, &run, &["--resume"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(metrics_without_time(&run).len(), 3);
}

/// The DelRec presets train from one command on generated data (at 16 neurons, 4 classes): a
/// run writes the usual files and its best checkpoint records σ; a run paused after one epoch and
/// resumed equals an uninterrupted one; `eval` of the best checkpoint gives the run's test
/// accuracy there; `init` counts the published parameters.
#[test]
fn recurrent_delay_presets_train_and_resume() {
    let dir = scratch("delrec-run");
    let data = dataset(&dir);
    for preset in ["delrec-shd", "delrec-ssc"] {
        let run = |name: &str, extra: &[&str]| {
            let run = dir.join(format!("{preset}-{name}"));
            let mut args =
                vec!["train", "--preset", preset, "--data", data.to_str().unwrap(), "--run-dir", run.to_str().unwrap()];
            args.extend(["--quiet", "--epochs", "2"]);
            args.extend(TINY_RECURRENT);
            if preset == "delrec-ssc" {
                args.extend(SSC_NETWORK_ON_SHD_DATA);
            }
            let output = snn(&[&args[..], extra].concat());
            assert!(output.status.success(), "{preset} {name}: {}", text(&output));
            run
        };
        let whole = run("whole", &[]);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["model_type"], "delrec");
        let metadata = snn_delays::checkpoint::read_metadata(&whole.join("best_acc.safetensors")).unwrap();
        let best = summary["best_valid_epoch"].as_u64().unwrap() as usize;
        let sigma = metrics_without_time(&whole)[best - 1]["sigma"].as_f64();
        assert_eq!(metadata.get("snn_delays.sigma").and_then(|s| s.parse().ok()), sigma, "the best epoch's σ in its checkpoint");
        run("split", &["--stop-after", "1"]);
        let split = run("split", &["--resume"]);
        assert_same_run(&whole, &split);
        let best = whole.join("best_acc.safetensors");
        let evaluated = snn(&["eval", "--checkpoint", best.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"]);
        assert!(evaluated.status.success(), "{}", text(&evaluated));
        let scores: serde_json::Value = serde_json::from_slice(&evaluated.stdout).unwrap();
        assert_eq!(scores["accuracy"], summary["test_acc_at_best_valid"], "eval reproduces the best epoch's test accuracy");
    }
    for (preset, count) in [("delrec-ssc", "374819"), ("delrec-shd", "173844")] {
        let out = dir.join(format!("{preset}-init.safetensors"));
        let output = snn(&["init", "--preset", preset, "--out", out.to_str().unwrap()]);
        assert!(text(&output).contains(&format!("{count} trainable parameters")), "{}", text(&output));
    }
}

/// The `recurrent` section is checked like the rest of a configuration.
#[test]
fn recurrent_settings_are_checked_by_name() {
    for (args, expected) in [
        (&["--preset", "shd", "--set", "recurrent.buffer=presynaptic"][..], "holds no settings"),
        (&["--preset", "delrec-ssc", "--set", "recurrent.bogus=1"][..], "unknown config key `recurrent.bogus`"),
        (&["--preset", "delrec-ssc", "--set", "recurrent.buffer=ring"][..], "recurrent"),
        (&["--preset", "delrec-ssc", "--set", "n_hidden_layers=2"][..], "n_hidden_layers"),
        (&["--preset", "delrec-shd", "--set", "recurrent.recurrent_dropout=1.5"][..], "recurrent.recurrent_dropout"),
        (&["--preset", "shd", "--set", "model_type=delrec"][..], "config key `recurrent` is missing"),
    ] {
        let output = snn(&[&["config"][..], args].concat());
        assert!(!output.status.success() && text(&output).contains(expected), "{args:?}: {}", text(&output));
    }
    let output = snn(&["config", "--preset", "delrec-ssc", "--set", "recurrent.buffer=postsynaptic"]);
    assert!(output.status.success() && text(&output).contains("\"buffer\": \"postsynaptic\""), "{}", text(&output));
}

/// `schedule` prints DelRec's per-epoch values: σ ×0.95 per epoch on a 100-epoch clock, both
/// groups on one-cycle (`delrec-ssc`) peaking at epoch 29 with β1 at 0.85.
#[test]
fn the_recurrent_schedule_follows_the_spec() {
    let output = snn(&["schedule", "--preset", "delrec-ssc"]);
    assert!(output.status.success(), "{}", text(&output));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.len(), 100);
    let value = |epoch: usize, key: &str| rows[epoch][key].as_f64().unwrap();
    assert_eq!(value(0, "sigma"), 10.0);
    assert!((value(50, "sigma") - 0.769).abs() < 5e-4 && (value(99, "sigma") - 0.0623).abs() < 5e-5);
    assert_eq!((value(29, "lr_w"), value(29, "lr_pos"), value(29, "beta1_pos")), (1e-3, 5e-2, 0.85));
}

/// The long-timing generated task (burst onsets up to 500 ms apart, `make bench-delays`'s second
/// table): recurrent delays (the `delrec-ssc` network, one-cycle peak 5e-3, 20 epochs) learn it,
/// recurrence without delays does not.
#[test]
fn recurrent_delays_solve_the_long_task_and_recurrence_without_delays_cannot() {
    let dir = scratch("long-task");
    let data = small_dataset(&dir, &["--max-offset-ms", "500", "--duration-ms", "900"]);
    let best = |name: &str, extra: &[&str]| {
        let run = dir.join(name);
        let mut args =
            vec!["train", "--preset", "delrec-ssc", "--data", data.to_str().unwrap(), "--run-dir", run.to_str().unwrap()];
        args.extend([
            "--quiet",
            "--epochs",
            "20",
            "--set",
            "n_hidden_neurons=64",
            "--set",
            "batch_size=64",
            "--set",
            "n_outputs=10",
        ]);
        args.extend([
            "--set",
            "dataset=shd",
            "--set",
            "validation=test",
            "--set",
            "integration=grid",
            "--set",
            "time_step_ms=10",
        ]);
        args.extend(["--set", "lr_w=5e-3"]);
        let output = snn(&[&args[..], extra].concat());
        assert!(output.status.success(), "{}", text(&output));
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        summary["best_valid_acc"].as_f64().unwrap()
    };
    let (delays, none) = (best("delays", &[]), best("no-delays", &["--set", "recurrent.learn_delays=false"]));
    assert!(delays >= 0.9, "recurrent delays reach only {delays}");
    assert!(none <= 0.6, "recurrence without delays reaches {none}: the task no longer needs recurrent delays");
}
