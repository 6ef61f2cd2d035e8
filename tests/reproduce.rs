//! `snn-delays reproduce` end to end on a generated SHD-layout task with tiny settings: both
//! protocols over two seeds, an interrupted run resumed, finished runs reused, the results files
//! consistent with the runs' summaries, and a changed setting refused.

mod common;

use common::{scratch, small_dataset, snn, text, train_in, TINY_RECURRENT};
use std::path::Path;

const TINY: [&str; 6] = ["--set", "n_hidden_neurons=16", "--set", "batch_size=32", "--set", "max_delay_ms=100"];

fn reproduce(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let base = ["reproduce", "--dataset", "shd", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    snn(&[&base[..], &["--seeds", "2", "--epochs", "2", "--quiet"], &TINY, extra].concat())
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn both_protocols_over_seeds_resume_reuse_and_report() {
    let dir = scratch("reproduce");
    let data = small_dataset(&dir, &["--classes", "4", "--train", "96", "--test", "40", "--seed", "3"]);
    let out = dir.join("out");
    let interrupted = out.join("paper-seed0");
    let first =
        train_in(&data, &interrupted, &TINY, &["--epochs", "2", "--seed", "0", "--set", "validation=test", "--stop-after", "1"]);
    assert!(first.status.success(), "{}", text(&first));

    let done = reproduce(&data, &out, &[]);
    let log = text(&done);
    assert!(done.status.success(), "{log}");
    assert!(log.contains("paper protocol, seed 0") && log.contains("resuming"), "{log}");
    assert_eq!(std::fs::read_to_string(interrupted.join("metrics.jsonl")).unwrap().lines().count(), 2);

    let results = json(&out.join("results.json"));
    let protocols = results["protocols"].as_array().unwrap();
    assert_eq!(protocols.iter().map(|p| p["protocol"]["name"].as_str().unwrap()).collect::<Vec<_>>(), ["paper", "holdout"]);
    for protocol in protocols {
        let runs = protocol["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let accuracies: Vec<f64> = runs
            .iter()
            .map(|run| {
                let summary = json(&Path::new(run["run_dir"].as_str().unwrap()).join("summary.json"));
                assert_eq!(run["test_acc"], summary["test_acc_at_best_valid"]);
                assert_eq!(run["test_acc_batch_mean"], summary["test_acc_batch_mean_at_best_valid"]);
                run["test_acc"].as_f64().unwrap()
            })
            .collect();
        let mean = (accuracies[0] + accuracies[1]) / 2.0;
        let std = (accuracies[0] - accuracies[1]).abs() / 2f64.sqrt();
        assert!((protocol["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{protocol}");
        assert!((protocol["std"].as_f64().unwrap() - std).abs() < 1e-12, "{protocol}");
    }
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("95.07 ± 0.24") && table.contains("93.77 ± 0.68") && table.contains("| holdout ("), "{table}");

    let summary = out.join("holdout-seed1/summary.json");
    let written = std::fs::metadata(&summary).unwrap().modified().unwrap();
    let again = reproduce(&data, &out, &[]);
    assert!(again.status.success() && text(&again).matches("finished earlier, reused").count() == 4, "{}", text(&again));
    assert_eq!(std::fs::metadata(&summary).unwrap().modified().unwrap(), written, "a reused run is not rewritten");

    let changed = reproduce(&data, &out, &["--set", "dropout_p=0.1"]);
    assert!(!changed.status.success() && text(&changed).contains("dropout_p"), "{}", text(&changed));
}

/// `--preset delrec-shd` runs DelRec's recurrent delays under DelRec's SHD protocol (20 % of
/// train held out), and a preset of another dataset is refused.
#[test]
fn the_delrec_presets_reproduce_under_their_protocol() {
    let dir = scratch("reproduce-delrec");
    let data = small_dataset(&dir, &["--classes", "4", "--train", "96", "--test", "40", "--seed", "3"]);
    let out = dir.join("out");
    let base = [
        "reproduce",
        "--dataset",
        "shd",
        "--preset",
        "delrec-shd",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let done = snn(&[&base[..], &["--seeds", "2", "--epochs", "2", "--quiet"], &TINY_RECURRENT].concat());
    assert!(done.status.success(), "{}", text(&done));
    let results = json(&out.join("results.json"));
    assert_eq!(results["preset"], "delrec-shd");
    let protocols = results["protocols"].as_array().unwrap();
    assert_eq!(protocols.len(), 1);
    assert_eq!(protocols[0]["protocol"]["name"], "holdout");
    for run in protocols[0]["runs"].as_array().unwrap() {
        let summary = json(&Path::new(run["run_dir"].as_str().unwrap()).join("summary.json"));
        assert_eq!(summary["model_type"], "delrec");
        assert_eq!(run["test_acc"], summary["test_acc_at_best_valid"]);
    }
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("# Reproduction: DELREC-SHD") && table.contains("| holdout ("), "{table}");
    let wrong = snn(&["reproduce", "--dataset", "ssc", "--preset", "delrec-shd", "--data", data.to_str().unwrap()]);
    assert!(!wrong.status.success() && text(&wrong).contains("trains on shd, not on --dataset ssc"), "{}", text(&wrong));
}
