//! Helpers shared by the integration tests: running the Python oracles from `.venv` and
//! comparing tensors against them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tch::{Kind, Tensor};

/// Our binary, as built for the tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_snn-delays");

/// Runs `snn-delays` with `args`.
pub fn snn(args: &[&str]) -> Output {
    run(Command::new(BIN).args(args))
}

/// Runs `snn-delays` with `args`, which must succeed, and parses its standard output as JSON.
pub fn snn_json(args: &[&str]) -> serde_json::Value {
    let output = snn(args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&output)))
}

/// How long a child process of a test may run before it is killed and the test fails.
pub const CHILD_LIMIT: Duration = Duration::from_secs(900);

/// Kills a process that outlives its limit (SIGKILL), so that a hang fails the test instead of
/// hanging `make test`. Dropping the deadline dismisses it.
pub struct Deadline {
    done: Arc<(Mutex<bool>, Condvar)>,
    expired: Arc<AtomicBool>,
}

impl Deadline {
    pub fn start(child: &Child, limit: Duration) -> Deadline {
        let (done, expired) = (Arc::new((Mutex::new(false), Condvar::new())), Arc::new(AtomicBool::new(false)));
        let (watched, flag, pid) = (done.clone(), expired.clone(), child.id().to_string());
        std::thread::spawn(move || {
            let (lock, signal) = &*watched;
            let (finished, _) = signal.wait_timeout_while(lock.lock().unwrap(), limit, |finished| !*finished).unwrap();
            if !*finished {
                flag.store(true, Ordering::SeqCst);
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        });
        Deadline { done, expired }
    }

    /// Whether the process had to be killed.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let (lock, signal) = &*self.done;
        *lock.lock().unwrap() = true;
        signal.notify_all();
    }
}

/// Waits for `child` and its output; kills it after `limit` and fails the test if it had to.
pub fn output_within(child: Child, limit: Duration) -> Output {
    let deadline = Deadline::start(&child, limit);
    let output = child.wait_with_output().unwrap();
    assert!(!deadline.expired(), "a child process ran past {limit:?} and was killed:\n{}", text(&output));
    output
}

/// Runs `command` to its end with its output captured, within [`CHILD_LIMIT`].
pub fn run(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    let child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    output_within(child, CHILD_LIMIT)
}

/// Standard output and standard error together.
pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Python, which has the pinned reference packages.
pub fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make test`, which creates .venv", python.display());
    python
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("snn-delays-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a Python script from `tests/oracle` and panics with its output if it fails.
pub fn run_oracle(script: &str, args: &[&str]) -> String {
    let output =
        run(Command::new(python()).arg(repo().join("tests/oracle").join(script)).args(args).env("PYTHONUNBUFFERED", "1"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{script} failed:\n{text}");
    text
}

/// Runs a Python script from `tests/oracle` that must fail (exit 1, not a crash); its output.
pub fn run_oracle_failing(script: &str, args: &[&str]) -> String {
    let output =
        run(Command::new(python()).arg(repo().join("tests/oracle").join(script)).args(args).env("PYTHONUNBUFFERED", "1"));
    let text = text(&output);
    assert_eq!(output.status.code(), Some(1), "{script} was expected to report failures:\n{text}");
    text
}

/// Two runs have the same metrics and the same final weights, bit for bit.
pub fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(metrics_without_time(a), metrics_without_time(b));
    let (a, b) = (read(&a.join("last.safetensors")), read(&b.join("last.safetensors")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, value) in &a {
        assert!(value.equal(&b[key]), "{key} differs");
    }
}

pub fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

/// The cases `case0`, `case1`, … of an oracle file, each as its own map without the prefix.
pub fn cases(path: &Path) -> Vec<BTreeMap<String, Tensor>> {
    let mut all: BTreeMap<usize, BTreeMap<String, Tensor>> = BTreeMap::new();
    for (key, value) in read(path) {
        let (case, field) = key.split_once('.').unwrap();
        let index: usize = case.trim_start_matches("case").parse().unwrap();
        all.entry(index).or_default().insert(field.to_string(), value);
    }
    all.into_values().collect()
}

/// The agreement of one tensor with its reference.
#[derive(Debug)]
pub struct Agreement {
    pub max_abs_diff: f64,
    pub bitwise: bool,
    /// `|ours − ref| ≤ tolerance · max(1, |ref|)` everywhere.
    pub within: bool,
}

pub fn agreement(ours: &Tensor, reference: &Tensor, tolerance: f64) -> Agreement {
    assert_eq!(ours.size(), reference.size(), "shapes differ");
    let ours = ours.detach().to_kind(Kind::Double);
    let reference = reference.detach().to_kind(Kind::Double);
    let diff = (&ours - &reference).abs();
    let bound = reference.abs().clamp_min(1.0) * tolerance;
    Agreement {
        max_abs_diff: if diff.numel() == 0 { 0.0 } else { diff.max().double_value(&[]) },
        bitwise: ours.equal(&reference),
        within: diff.le_tensor(&bound).all().int64_value(&[]) == 1,
    }
}

/// A run's `metrics.jsonl` records, without their wall-clock `seconds`.
pub fn metrics_without_time(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            record.as_object_mut().unwrap().remove("seconds");
            record
        })
        .collect()
}

/// Settings that make a recurrent-delay (DelRec) preset tiny: 16 neurons, batch 32, 4 classes.
/// `delrec-ssc` on generated data in the SHD layout: SHD's files, a held-out validation split,
/// the 10 ms grid.
pub const SSC_NETWORK_ON_SHD_DATA: [&str; 8] =
    ["--set", "dataset=shd", "--set", "validation=holdout", "--set", "integration=grid", "--set", "time_step_ms=10"];

pub const TINY_RECURRENT: [&str; 6] = ["--set", "n_hidden_neurons=16", "--set", "batch_size=32", "--set", "n_outputs=4"];

/// A generated SHD-layout dataset in `dir/data`; `args` sets classes, sizes and seed.
pub fn small_dataset(dir: &Path, args: &[&str]) -> PathBuf {
    let data = dir.join("data");
    let output = snn(&[&["synth", "--out", data.to_str().unwrap()][..], args].concat());
    assert!(output.status.success(), "{}", text(&output));
    data
}

/// `snn-delays train --preset shd` on `data` into `run`, quiet, with `settings` then `extra`.
pub fn train_in(data: &Path, run: &Path, settings: &[&str], extra: &[&str]) -> Output {
    let base = ["train", "--preset", "shd", "--data", data.to_str().unwrap(), "--run-dir", run.to_str().unwrap(), "--quiet"];
    snn(&[&base[..], settings, extra].concat())
}
