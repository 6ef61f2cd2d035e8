//! The command line as a user meets it: printed configs, CUDA linkage, and clear errors on bad
//! input that name the file, key, sample or value.

mod common;

use common::{python, scratch, snn, snn_json, BIN};
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

fn stderr_of_failure(args: &[&str]) -> String {
    let output = snn(args);
    assert!(!output.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn config_json(args: &[&str]) -> serde_json::Value {
    snn_json(&[&["config"], args].concat())
}

#[test]
fn config_prints_presets_with_derived_values_and_applies_overrides() {
    let ssc = config_json(&["--preset", "ssc"]);
    assert_eq!(ssc["derived"]["kernel_size"], 31);
    assert_eq!(ssc["derived"]["final_sigma_epoch"], 15);
    assert_eq!(ssc["batch_size"], 128);
    let edited = config_json(&["--preset", "shd", "--set", "epochs=40", "--set", "model_type=snn"]);
    assert_eq!((edited["epochs"].as_u64(), edited["derived"]["lr_pos"].as_f64()), (Some(40), Some(0.0)));
    let dir = scratch("cli-config");
    let file = dir.join("c.json");
    std::fs::write(&file, r#"{"dataset": "gsc", "epochs": 3}"#).unwrap();
    let from_file = config_json(&["--config", file.to_str().unwrap(), "--set", "seed=9"]);
    assert_eq!(
        (from_file["dataset"].as_str(), from_file["epochs"].as_u64(), from_file["seed"].as_u64()),
        (Some("gsc"), Some(3), Some(9))
    );
}

#[test]
fn invalid_config_values_name_their_key() {
    for (assignment, needle) in [
        ("init_tau_ms=5", "init_tau_ms"),
        ("n_bins=3", "n_bins"),
        ("dropout_p=1.5", "dropout_p"),
        ("model_type=rnn", "model_type"),
        ("loss=l2", "loss"),
        ("no_such_key=1", "no_such_key"),
    ] {
        let message = stderr_of_failure(&["config", "--set", assignment]);
        assert!(message.contains(needle), "{assignment}: {message}");
    }
    let message = stderr_of_failure(&["config", "--config", "/no/such/file.json"]);
    assert!(message.contains("/no/such/file.json"), "{message}");
}

#[test]
fn cuda_support_is_linked_even_without_a_gpu() {
    assert!(tch::utils::has_cudart(), "libtorch_cuda was dropped at link time");
    let output = common::run(Command::new(python()).args(["-c", "import torch; print(torch.version.cuda)"]));
    let wheel_cuda = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let (major, minor) = wheel_cuda.split_once('.').expect("the torch wheel is a CUDA build");
    let expected = major.parse::<i64>().unwrap() * 1000 + minor.parse::<i64>().unwrap() * 10;
    assert_eq!(tch::utils::version_cudart(), expected, "torch wheel reports CUDA {wheel_cuda}");
    let readelf = common::run(Command::new("readelf").args(["-d", BIN]));
    assert!(String::from_utf8_lossy(&readelf.stdout).contains("libtorch_cuda.so"));
}

fn write(path: &Path, tensors: &[(&str, Tensor)]) {
    Tensor::write_safetensors(tensors, path).unwrap();
}

fn forward_error(dir: &Path, weights: &Path, batch: &[(&str, Tensor)], extra: &[&str]) -> String {
    let input = dir.join("x.safetensors");
    write(&input, batch);
    let out = dir.join("out.safetensors");
    let args = [
        &[
            "forward",
            "--preset",
            "shd",
            "--set",
            "n_hidden_neurons=8",
            "--weights",
            weights.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ][..],
        extra,
    ]
    .concat();
    let message = stderr_of_failure(&args);
    assert!(!out.exists(), "no output file after a failure");
    message
}

#[test]
fn forward_rejects_bad_weights_and_inputs_by_name() {
    let dir = scratch("cli-forward");
    let weights = dir.join("w.safetensors");
    let small = ["init", "--preset", "shd", "--set", "n_hidden_neurons=8", "--out", weights.to_str().unwrap()];
    assert!(snn(&small).status.success());
    let x = || Tensor::zeros([5, 2, 140], (Kind::Float, tch::Device::Cpu));
    let y = |labels: &[i64]| Tensor::from_slice(labels);

    let other = dir.join("other.safetensors");
    assert!(snn(&["init", "--preset", "shd", "--set", "n_hidden_neurons=9", "--out", other.to_str().unwrap()]).status.success());
    let message = forward_error(&dir, &other, &[("x", x())], &[]);
    assert!(message.contains("model.0.weight") && message.contains("[9, 140, 1]"), "{message}");

    let truncated = dir.join("truncated.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let message = forward_error(&dir, &truncated, &[("x", x())], &[]);
    assert!(message.contains("truncated.safetensors"), "{message}");

    let wrong = Tensor::zeros([5, 2, 700], (Kind::Float, tch::Device::Cpu));
    let message = forward_error(&dir, &weights, &[("x", wrong)], &[]);
    assert!(message.contains("`x`") && message.contains("700"), "{message}");
    let message = forward_error(&dir, &weights, &[("x", x()), ("y", y(&[3, 20]))], &[]);
    assert!(message.contains("sample 1") && message.contains("20"), "{message}");
    let message = forward_error(&dir, &weights, &[("x", x())], &["--grad"]);
    assert!(message.contains("`y`"), "{message}");
    let mask = Tensor::ones([2, 8], (Kind::Float, tch::Device::Cpu));
    let message = forward_error(&dir, &weights, &[("x", x()), ("mask.2", mask)], &[]);
    assert!(message.contains("mask.2"), "{message}");
}

#[test]
fn demo_runs_a_forward_and_backward_pass_of_the_shd_preset() {
    let output = snn(&["demo", "--batch", "4", "--steps", "20"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("trainable parameters: 214016"), "{text}");
    assert!(text.contains("output [56, 4, 20]"), "{text}");
}

/// Every command that takes a device takes `--device auto|cpu|cuda|cuda:N` and `--cudnn`; without
/// a GPU, `--device cuda` is a clear error (exit 1, no panic) and `auto` runs on the CPU.
#[test]
fn device_flags_are_uniform_and_missing_cuda_is_a_clear_error() {
    let small = ["--preset", "shd", "--set", "n_hidden_neurons=8"];
    for command in ["train", "eval", "forward", "demo", "replay", "bench"] {
        let help = String::from_utf8_lossy(&snn(&[command, "--help"]).stdout).into_owned();
        assert!(help.contains("--device") && help.contains("--cudnn") && help.contains("[default: auto]"), "{command}: {help}");
    }
    let demo = snn(&[&["demo", "--steps", "5", "--batch", "2", "--cudnn"][..], &small].concat());
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
    let message = stderr_of_failure(&["demo", "--device", "tpu"]);
    assert!(message.contains("`tpu`"), "{message}");
    if tch::Cuda::device_count() == 0 {
        assert!(String::from_utf8_lossy(&demo.stdout).contains("on cpu"));
        let output = snn(&[&["demo", "--steps", "5", "--batch", "2", "--device", "cuda"][..], &small].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("CUDA is not available") && !stderr.contains("panicked"), "{stderr}");
    }
}
