//! The GPU check (scripts/gpu_check.sh) as a machine with only python3 + torch meets it: its CPU dry
//! run in a Python that holds torch and torch's own dependencies and nothing else (`python -S` on a
//! folder of links to exactly those packages), with the reference's packages from a kit as
//! `make gpu-kit` makes it. Every section that does not need CUDA runs and passes; those that do are
//! skipped with the reason; a failing section does not stop the next.

mod common;

use common::{python, repo, scratch, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A torch-only Python (with `extra` packages linked in too) and its kit: `(python, kit)`.
fn torch_only(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let mut command = Command::new(python());
    command.arg(repo().join("tests/oracle/torch_only_env.py")).arg(dir);
    if !extra.is_empty() {
        command.arg("--with").args(extra);
    }
    let output = common::run(&mut command);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text.lines().map(PathBuf::from);
    (lines.next().unwrap(), lines.next().unwrap())
}

fn gpu_check(python: &Path, kit: &Path, bin: &str, out: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let output = common::run(
        Command::new("bash")
            .arg(repo().join("scripts/gpu_check.sh"))
            .args(["--bin", bin, "--out", out.to_str().unwrap(), "--device", "cpu"])
            .args(extra)
            .env("PYTHON", python)
            .env("SNN_GPU_KIT", kit),
    );
    let results = std::fs::read_to_string(out.join("results.json")).unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
    (output, serde_json::from_str(&results).unwrap())
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn status<'a>(results: &'a serde_json::Value, section: &str) -> &'a str {
    results["sections"][section]["status"].as_str().unwrap_or_else(|| panic!("no section {section} in {results}"))
}

#[test]
fn the_dry_run_passes_with_torch_alone_and_runs_the_reference_where_numpy_is_there() {
    let dir = scratch("gpu-check");
    let (bare, kit) = torch_only(&dir.join("bare"), &[]);
    let (output, results) = gpu_check(&bare, &kit, BIN, &dir.join("out-bare"), &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(!shown.contains("Traceback"), "{shown}");
    for section in ["environment", "startup", "determinism", "dispatch", "step_times", "recurrent"] {
        assert_eq!(status(&results, section), "ok", "{section}: {results}");
    }
    for section in ["nccl", "parity", "epoch"] {
        assert_eq!(status(&results, section), "skipped", "{section}: {results}");
        assert!(results["sections"][section]["reason"].as_str().unwrap().contains("needs CUDA"));
    }
    if tch::Cuda::device_count() == 0 {
        assert_eq!(status(&results, "no_cuda_error"), "ok", "{results}");
    }
    let dispatch = &results["sections"]["dispatch"]["detail"]["rows"][0];
    assert_eq!(dispatch["ours_step"]["host_reads"], 1, "one host read per training step: {dispatch}");
    assert_eq!(dispatch["ours_eval_batch"]["host_reads"], 0, "none per evaluation batch: {dispatch}");
    let reference = results["sections"]["step_times"]["detail"]["rows"][0]["reference"].as_str().unwrap_or("");
    assert!(reference.contains("skipped") && reference.contains("numpy"), "{results}");
    for file in ["summary.md", "log.txt"] {
        assert!(dir.join("out-bare").join(file).exists(), "{file} missing");
    }
    let (with_numpy, kit) = torch_only(&dir.join("numpy"), &["numpy"]);
    let (output, results) = gpu_check(&with_numpy, &kit, BIN, &dir.join("out-numpy"), &["--sections", "dispatch", "step_times"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let rows = &results["sections"]["dispatch"]["detail"]["rows"][0];
    assert!(rows["reference_step"]["ops"].as_u64().unwrap() > 0 && rows["ours_step"]["ops"].as_u64().unwrap() > 0, "{rows}");
    assert!(results["sections"]["step_times"]["detail"]["rows"][0]["reference_s"].as_f64().unwrap() > 0.0, "{results}");
}

/// A section that fails (here: a binary whose `devices` command breaks) is recorded with its reason,
/// the next section still runs, and the check exits 1.
#[test]
fn a_failing_section_does_not_stop_the_next() {
    let dir = scratch("gpu-check-failing");
    let (bare, kit) = torch_only(&dir.join("env"), &[]);
    let broken = dir.join("snn-delays");
    std::fs::write(&broken, format!("#!/bin/sh\n[ \"$1\" = devices ] && {{ echo broken >&2; exit 3; }}\nexec {BIN} \"$@\"\n"))
        .unwrap();
    Command::new("chmod").args(["755", broken.to_str().unwrap()]).status().unwrap();
    let (output, results) =
        gpu_check(&bare, &kit, broken.to_str().unwrap(), &dir.join("out"), &["--sections", "environment", "startup"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(status(&results, "environment"), "failed");
    assert!(results["sections"]["environment"]["reason"].as_str().unwrap().contains("broken"), "{results}");
    assert_eq!(status(&results, "startup"), "ok", "{results}");
}
