//! The resumable state of a run, saved as `last.safetensors`: the model under its reference keys,
//! the Adam moments (`optim.weights.<key>.exp_avg`, …), the position marks used by the `dpos`
//! logs (`dpos_mark.<layer>`), and the rest as JSON in the header's `snn_delays.state`.
//! The random streams need no saving: each epoch reseeds from (seed, epoch).

use super::eval::Scores;
use super::learner::Learner;
use super::schedule::LrSchedule;
use crate::checkpoint;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::Tensor;

const STATE_KEY: &str = "snn_delays.state";
const WEIGHTS_PREFIX: &str = "optim.weights";
const POSITIONS_PREFIX: &str = "optim.positions";
const MARK_PREFIX: &str = "dpos_mark";

/// The metrics of one epoch, as written to `metrics.jsonl`. Losses and accuracies are
/// sample-weighted; the `*_batch_mean` fields are the reference's unweighted means over batches.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch's number, counted from 1.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub valid_loss: f64,
    pub valid_acc: f64,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    pub train_loss_batch_mean: f64,
    pub train_acc_batch_mean: f64,
    pub valid_loss_batch_mean: f64,
    pub valid_acc_batch_mean: f64,
    pub test_loss_batch_mean: Option<f64>,
    pub test_acc_batch_mean: Option<f64>,
    pub lr_w: f64,
    pub lr_pos: f64,
    pub sigma: f64,
    pub seconds: f64,
}

impl EpochRecord {
    /// The record of epoch `number` (from 1) from its passes' scores; schedules and time are
    /// filled in by the caller.
    pub fn new(number: usize, train: &Scores, valid: &Scores, test: Option<&Scores>) -> EpochRecord {
        EpochRecord {
            epoch: number,
            train_loss: train.loss,
            train_acc: train.accuracy,
            valid_loss: valid.loss,
            valid_acc: valid.accuracy,
            test_loss: test.map(|t| t.loss),
            test_acc: test.map(|t| t.accuracy),
            train_loss_batch_mean: train.loss_batch_mean,
            train_acc_batch_mean: train.accuracy_batch_mean,
            valid_loss_batch_mean: valid.loss_batch_mean,
            valid_acc_batch_mean: valid.accuracy_batch_mean,
            test_loss_batch_mean: test.map(|t| t.loss_batch_mean),
            test_acc_batch_mean: test.map(|t| t.accuracy_batch_mean),
            lr_w: 0.0,
            lr_pos: 0.0,
            sigma: 0.0,
            seconds: 0.0,
        }
    }
}

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub batches_done: usize,
    pub best_valid_acc: f64,
    pub best_valid_loss: f64,
    pub best_valid_epoch: Option<usize>,
    pub test_acc_at_best_valid: Option<f64>,
    pub best_test_acc: Option<f64>,
    pub history: Vec<EpochRecord>,
    pub lr_w: LrSchedule,
    pub lr_pos: Option<LrSchedule>,
    pub weight_steps: BTreeMap<String, u64>,
    pub position_steps: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Identifies the run; `config.json` holds the same id, so a `last` from another run is refused.
    #[serde(default)]
    pub run_id: String,
    /// libtorch's CPU threads: a resumed run repeats an uninterrupted one bitwise only with these.
    #[serde(default)]
    pub threads: Option<i32>,
}

impl RunState {
    pub fn new(trainer: &dyn Learner) -> RunState {
        let (lr_w, lr_pos) = trainer.schedules();
        RunState {
            epochs_done: 0,
            batches_done: 0,
            run_id: new_run_id(),
            threads: Some(tch::get_num_threads()),
            best_valid_acc: 0.0,
            best_valid_loss: 1e6,
            best_valid_epoch: None,
            test_acc_at_best_valid: None,
            best_test_acc: None,
            history: Vec::new(),
            lr_w: lr_w.clone(),
            lr_pos: lr_pos.cloned(),
            weight_steps: BTreeMap::new(),
            position_steps: BTreeMap::new(),
            seconds: 0.0,
        }
    }
}

/// Writes `last.safetensors` atomically.
pub fn save_last(path: &Path, trainer: &dyn Learner, state: &RunState, marks: &[Tensor]) -> Result<()> {
    let mut state = state.clone();
    let ((lr_w, lr_pos), (weights, positions)) = (trainer.schedules(), trainer.optimizers());
    state.lr_w = lr_w.clone();
    state.lr_pos = lr_pos.cloned();
    state.weight_steps = weights.steps();
    state.position_steps = positions.map(|a| a.steps()).unwrap_or_default();
    let mut tensors = checkpoint::state_dict(trainer.vs());
    tensors.extend(weights.state_tensors(WEIGHTS_PREFIX));
    if let Some(adam) = positions {
        tensors.extend(adam.state_tensors(POSITIONS_PREFIX));
    }
    tensors.extend(marks.iter().enumerate().map(|(i, t)| (format!("{MARK_PREFIX}.{i}"), t.shallow_clone())));
    let metadata = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(&state)?)]);
    checkpoint::write_tensors_with_metadata(path, &tensors, Some(metadata))
}

/// Restores a trainer from `last.safetensors`; returns the run state and the dpos marks.
/// A new run's id: the clock's nanoseconds and the process id, in hex.
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

pub fn load_last(path: &Path, trainer: &mut dyn Learner) -> Result<(RunState, Vec<Tensor>)> {
    let metadata = checkpoint::read_metadata(path)?;
    let Some(json) = metadata.get(STATE_KEY) else {
        bail!("{} holds no training state (`{STATE_KEY}`): it is not a `last` checkpoint", path.display());
    };
    let state: RunState = serde_json::from_str(json).with_context(|| format!("{}: unreadable training state", path.display()))?;
    let epochs = trainer.config().epochs;
    anyhow::ensure!(
        state.epochs_done <= epochs && state.history.len() == state.epochs_done,
        "{}: its training state ({} epochs done, {} recorded) does not fit this run of {epochs} epochs",
        path.display(),
        state.epochs_done,
        state.history.len()
    );
    let tensors: BTreeMap<String, Tensor> = checkpoint::read_tensors(path)?.into_iter().collect();
    checkpoint::load_model_part(trainer.vs(), path, &tensors)?;
    let context = || format!("{}: optimizer state", path.display());
    let (weights, positions) = trainer.optimizers_mut();
    tch::no_grad(|| weights.load_state(WEIGHTS_PREFIX, &tensors, &state.weight_steps)).with_context(context)?;
    if let Some(adam) = positions {
        tch::no_grad(|| adam.load_state(POSITIONS_PREFIX, &tensors, &state.position_steps)).with_context(context)?;
    }
    trainer.set_schedules(state.lr_w.clone(), state.lr_pos.clone());
    let device = trainer.device();
    let marks = (0..).map_while(|i| tensors.get(&format!("{MARK_PREFIX}.{i}")).map(|t| t.to_device(device))).collect();
    Ok((state, marks))
}
