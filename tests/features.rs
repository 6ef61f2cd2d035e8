//! Features a user runs that no parity test reaches: `bench` and `data bench` (a tiny run, the
//! report parsed), `infer --split/--limit`, the fixed-random-delay model (`snn_delays_lr0`), and
//! checkpoints stored in float16 or with a boolean tensor.

mod common;

use common::{read, scratch, small_dataset, snn, snn_json, text, train_in};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// A small SHD-layout dataset, its config (16 hidden neurons) and the seeded initial weights.
fn setup(dir: &Path, settings: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let data = small_dataset(dir, &["--classes", "4", "--train", "32", "--test", "24", "--seed", "3"]);
    let config = dir.join("config.json");
    let printed = snn(&[&["config", "--preset", "shd", "--set", "n_hidden_neurons=16"][..], settings].concat());
    assert!(printed.status.success(), "{}", text(&printed));
    std::fs::write(&config, &printed.stdout).unwrap();
    let weights = dir.join("init.safetensors");
    let init = snn(&["init", "--config", config.to_str().unwrap(), "--out", weights.to_str().unwrap()]);
    assert!(init.status.success(), "{}", text(&init));
    (data, config, weights)
}

/// `bench` times a training step, an eval pass and the engine on a given batch and reports each
/// run's seconds, their median and the ops a step dispatches.
#[test]
fn bench_reports_training_eval_and_engine_timings() {
    let dir = scratch("features-bench");
    let (_, config, weights) = setup(&dir, &[]);
    let batch = dir.join("batch.safetensors");
    let x = Tensor::rand([30, 4, 140], (Kind::Float, tch::Device::Cpu)).lt(0.1).to_kind(Kind::Float);
    Tensor::write_safetensors(&[("x", &x), ("y", &Tensor::from_slice(&[0i64, 1, 2, 3]))], &batch).unwrap();
    let (config, batch) = (config.to_str().unwrap(), batch.to_str().unwrap());
    let bench = |weights: &Path, extra: &[&str]| {
        let args = ["bench", "--config", config, "--weights", weights.to_str().unwrap(), "--batch", batch];
        snn(&[&args[..], &["--repeats", "2", "--warmup", "0", "--json"], extra].concat())
    };
    let report = |extra: &[&str]| -> serde_json::Value {
        let output = bench(&weights, extra);
        assert!(output.status.success(), "{extra:?}: {}", text(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let step = report(&[]);
    let seconds = step["seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), 2, "{step}");
    assert!(seconds.iter().all(|s| s.as_f64().unwrap() > 0.0) && step["median_seconds"].as_f64().unwrap() > 0.0, "{step}");
    assert!(step["per_step"]["ops"].as_u64().unwrap() > 0 && step["per_step"]["host_reads"].as_u64().is_some(), "{step}");
    let eval = report(&["--eval"]);
    assert!(eval["per_batch"]["ops"].as_u64().unwrap() > 0 && eval["per_pass"]["ops"].as_u64().is_some(), "{eval}");
    let engine = report(&["--eval", "--engine"]);
    assert!(engine["stream_seconds_per_frame"].as_f64().unwrap() > 0.0, "{engine}");
    let missing = bench(&dir.join("none.safetensors"), &[]);
    assert!(!missing.status.success() && text(&missing).contains("none.safetensors"), "{}", text(&missing));
}

/// `data bench` reads the whole train split into batches and reports samples per second.
#[test]
fn data_bench_reports_the_train_split_throughput() {
    let dir = scratch("features-data-bench");
    let (data, _, _) = setup(&dir, &[]);
    let report = snn_json(&["data", "bench", "--dataset", "shd", "--data", data.to_str().unwrap()]);
    assert_eq!(report["samples"], 32, "{report}");
    assert!(report["samples_per_second"].as_f64().unwrap() > 0.0 && report["threads"].as_u64().unwrap() >= 1, "{report}");
}

/// `infer --split` picks the split and `--limit` the first samples, in batch and stream mode.
#[test]
fn infer_takes_a_split_and_a_limit() {
    let dir = scratch("features-infer");
    let (data, config, weights) = setup(&dir, &[]);
    let model = dir.join("model.safetensors");
    let (config, weights, model_s) = (config.to_str().unwrap(), weights.to_str().unwrap(), model.to_str().unwrap());
    let export = snn(&["export", "--config", config, "--checkpoint", weights, "--format", "delays", "--out", model_s]);
    assert!(export.status.success(), "{}", text(&export));
    let data = data.to_str().unwrap();
    let train = snn_json(&["infer", "--model", model_s, "--data", data, "--split", "train", "--limit", "5", "--json"]);
    assert_eq!((train["split"].as_str(), train["samples"].as_u64()), (Some("train"), Some(5)), "{train}");
    assert_eq!(train["predictions"].as_array().unwrap().len(), 5);
    let test = snn_json(&["infer", "--model", model_s, "--data", data, "--json"]);
    assert_eq!((test["split"].as_str(), test["samples"].as_u64()), (Some("test"), Some(24)), "{test}");
    let first = snn_json(&["infer", "--model", model_s, "--data", data, "--split", "train", "--json"]);
    assert_eq!(first["predictions"].as_array().unwrap()[..5], train["predictions"].as_array().unwrap()[..], "the first 5");
    let streamed = snn(&["infer", "--model", model_s, "--data", data, "--stream", "--limit", "2"]);
    let lines = text(&streamed);
    assert!(streamed.status.success(), "{lines}");
    assert!(lines.contains("sample 1: decided class") && !lines.contains("sample 2"), "{lines}");
}

/// `snn_delays_lr0` trains weights on fixed random integer delays: the positions of the last
/// checkpoint are the rounded seeded ones, the weights have moved.
#[test]
fn fixed_random_delays_stay_where_the_seed_put_them() {
    let dir = scratch("features-lr0");
    let (data, _, weights) = setup(&dir, &["--set", "model_type=snn_delays_lr0"]);
    let run = dir.join("run");
    let settings = ["--set", "n_hidden_neurons=16", "--set", "batch_size=16", "--set", "model_type=snn_delays_lr0"];
    let output = train_in(&data, &run, &settings, &["--epochs", "2"]);
    assert!(output.status.success(), "{}", text(&output));
    let (start, end) = (read(&weights), read(&run.join("last.safetensors")));
    let positions: Vec<&String> = start.keys().filter(|k| k.ends_with(".P")).collect();
    assert_eq!(positions.len(), 3);
    for key in positions {
        assert!(start[key].equal(&end[key]), "{key} moved");
        assert!(end[key].equal(&end[key].round()), "{key} is not on the integer grid");
    }
    assert!(!start["model.0.weight"].equal(&end["model.0.weight"]), "the weights did not train");
    assert_eq!(common::metrics_without_time(&run).len(), 2);
}

/// A state dict stored in float16 loads with a warning naming each converted key and evaluates
/// like its float32 values; a boolean tensor where floats belong is refused by name.
#[test]
fn float16_checkpoints_load_and_boolean_ones_are_refused() {
    let dir = scratch("features-dtypes");
    let (data, config, weights) = setup(&dir, &[]);
    let half = dir.join("half.safetensors");
    let rounded = dir.join("rounded.safetensors");
    let boolean = dir.join("boolean.safetensors");
    let tensors = read(&weights);
    let convert = |path: &Path, change: &dyn Fn(&str, &Tensor) -> Tensor| {
        let named: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), change(k, v))).collect();
        Tensor::write_safetensors(&named, path).unwrap();
    };
    let float = |v: &Tensor| v.is_floating_point();
    convert(&half, &|_, v| if float(v) { v.to_kind(Kind::Half) } else { v.shallow_clone() });
    convert(&rounded, &|_, v| if float(v) { v.to_kind(Kind::Half).to_kind(Kind::Float) } else { v.shallow_clone() });
    convert(&boolean, &|k, v| if k == "model.0.weight" { v.gt(0.0) } else { v.shallow_clone() });
    let eval = |checkpoint: &Path| {
        snn(&["eval", "--config", config.to_str().unwrap(), "--checkpoint", checkpoint.to_str().unwrap()]
            .iter()
            .chain(&["--data", data.to_str().unwrap(), "--json", "--device", "cpu"])
            .copied()
            .collect::<Vec<_>>())
    };
    let from_half = eval(&half);
    assert!(from_half.status.success(), "{}", text(&from_half));
    assert!(text(&from_half).contains("converting `model.0.weight` from Half to Float"), "{}", text(&from_half));
    let from_rounded = eval(&rounded);
    let report = |output: &std::process::Output| -> serde_json::Value { serde_json::from_slice(&output.stdout).unwrap() };
    assert_eq!(report(&from_half)["loss"], report(&from_rounded)["loss"], "float16 values read as their float32 equals");
    let refused = eval(&boolean);
    let message = text(&refused);
    assert!(!refused.status.success() && message.contains("`model.0.weight` holds Bool values"), "{message}");
}
