//! A whole training run in `runs/NAME/` (docs/method.md §4.4–§4.8) of any [`Learner`] (the
//! feedforward network, or a recurrent-delay one): per epoch, shuffled batches through
//! [`Learner::train_step`], then schedules and sigma, evaluation with integer delays,
//! the epoch line, TensorBoard, `metrics.jsonl`, `best_acc`/`best_loss` (reference state dicts,
//! training form) and `last` (resumable). `summary.json` marks a finished run.
//!
//! Determinism: the data order, augmentation and the torch generator (dropout masks) are
//! reseeded from (seed, epoch) at every epoch, so a resumed run equals an uninterrupted one.
//!
//! Data-parallel runs ([`RunOptions::group`]): every rank makes each global batch, trains on its
//! shard ([`super::data_parallel`]) and evaluates its shard; only rank 0 (the observer) locks
//! and writes the run directory, logs and prints. Any rank resumes from `last.safetensors`,
//! whatever the world size that wrote it.

use super::data_parallel::{broadcast_state, define_gradients, synced_step};
use super::eval::{read_all, Pass, Scores};
use super::learner::Learner;
use super::masks::per_sample_masks;
use super::recurrent::RecurrentTrainer;
use super::state::{load_last, save_last, EpochRecord, RunState};
use super::Trainer;
use crate::atomic;
use crate::checkpoint;
use crate::config::{Config, MaskDraw, ModelType};
use crate::data::augment::Augment;
use crate::data::batches::{batches, tripled_batches, Batch};
use crate::data::prefetch::{prefetched, to_device, StagedBatch};
use crate::data::DataSplits;
use crate::distributed::Group;
use crate::logging::{Board, MetricsFile};
use crate::model::DropoutMasks;
use crate::progress::{Progress, Unit};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How to run, beyond the configuration.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub run_dir: PathBuf,
    pub resume: bool,
    pub quiet: bool,
    /// Stop (resumably) once this many epochs are done.
    pub stop_after: Option<usize>,
    pub device: Device,
    /// The device was picked by `--device auto`.
    pub device_auto: bool,
    /// What a training step may allocate.
    pub memory: crate::memory::Budget,
    /// `--threads`, when given.
    pub threads: Option<usize>,
    /// The other processes of a data-parallel run; `None` for one process.
    pub group: Option<Rc<Group>>,
}

/// How a run ended.
pub enum Outcome {
    Finished(serde_json::Value),
    /// Stopped on purpose by `--stop-after`.
    Paused {
        epochs_done: usize,
    },
    /// Stopped by Ctrl-C after the current batch.
    Interrupted {
        epochs_done: usize,
    },
}

/// The error of an interrupted run, so that the process exits with 130 as shells expect.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

struct RunFiles {
    config: PathBuf,
    last: PathBuf,
    summary: PathBuf,
    metrics: PathBuf,
    best_acc: PathBuf,
    best_loss: PathBuf,
}

impl RunFiles {
    fn new(dir: &Path) -> RunFiles {
        RunFiles {
            config: dir.join("config.json"),
            last: dir.join("last.safetensors"),
            summary: dir.join("summary.json"),
            metrics: dir.join("metrics.jsonl"),
            best_acc: dir.join("best_acc.safetensors"),
            best_loss: dir.join("best_loss.safetensors"),
        }
    }
}

/// What rank 0 alone keeps: TensorBoard and `metrics.jsonl`.
struct Observer {
    board: Board,
    metrics: MetricsFile,
}

pub fn train(config: &Config, data_dir: &Path, options: &RunOptions) -> Result<Outcome> {
    let group = options.group.as_deref();
    if group.is_some() {
        check_shardable(config)?;
    }
    let leader = group.is_none_or(Group::is_leader);
    let files = RunFiles::new(&options.run_dir);
    let _lock = leader.then(|| lock_run_dir(&options.run_dir)).transpose()?;
    let mut resume = leader && check_run_dir(config, &files, options)?;
    if let Some(group) = group {
        resume = group.leader_value(i64::from(resume))? != 0;
    }
    let data = DataSplits::open(config, data_dir)?;
    let steps = data.max_steps()?;
    let what = format!("a training step at batch {} and up to {steps} steps", config.batch_size);
    let parts = crate::memory::training_step(config, steps as u64, config.batch_size as u64);
    options.memory.check(&what, &parts)?;
    if let Device::Cuda(index) = options.device {
        options.memory.cuda(index)?.check(&format!("{what} on cuda:{index}"), &parts)?;
    }
    let mut trainer: Box<dyn Learner> = match config.model_type {
        ModelType::Delrec => Box::new(RecurrentTrainer::new(config, options.device)?),
        _ => Box::new(Trainer::new(config, options.device)),
    };
    let trainer = trainer.as_mut();
    let (mut state, mut marks) = if resume {
        let (state, marks) = load_last(&files.last, trainer)?;
        check_resumed_state(&state, &files, options)?;
        (state, marks)
    } else {
        let mut state = RunState::new(trainer);
        if group.is_some() {
            state.threads = None;
        }
        if leader {
            let mut written = config.to_json();
            written[crate::config::RUN_ID_KEY] = serde_json::Value::from(state.run_id.clone());
            atomic::write_bytes(&files.config, serde_json::to_string_pretty(&written)?.as_bytes())?;
        }
        (state, trainer.positions())
    };
    if let Some(group) = &options.group {
        join_training(trainer, &state, group)?;
    }
    let mut observer = leader.then(|| open_observer(&options.run_dir, &files, config, &state, resume)).transpose()?;
    let interrupted = interrupt_flag();
    if leader {
        let slow = crate::model::time_conv::slow_on(config.convolution, options.device, crate::device::cudnn_enabled())
            .filter(|_| config.has_delays());
        if let Some(why) = &slow {
            eprintln!("warning: {why}");
        }
        println!("{} | {}", data.protocol(), run_header(trainer, &data, options, slow.as_deref()));
    }
    while state.epochs_done < config.epochs {
        let epoch = state.epochs_done;
        let started = Instant::now();
        let board = observer.as_mut().map(|o| &mut o.board);
        trainer.begin_epoch(epoch);
        let trained = train_epoch(trainer, &data, epoch, &mut state, board, options, &interrupted)
            .map_err(|e| e.context(format!("stopped in epoch {} ({})", epoch + 1, saved_so_far(&files, epoch))))?;
        let Some(train) = trained else {
            if leader {
                println!("interrupted during epoch {}: {}", epoch + 1, saved_so_far(&files, epoch));
            }
            return Ok(Outcome::Interrupted { epochs_done: epoch });
        };
        trainer.end_epoch(epoch);
        if let Some(key) = non_finite_parameter(trainer) {
            bail!(
                "stopped in epoch {}: parameter `{key}` is no longer finite (is the learning rate too high?); {}",
                epoch + 1,
                saved_so_far(&files, epoch)
            );
        }
        let classes = config.derived().n_outputs as i64;
        let pass =
            |label| Pass { batch_size: config.batch_size, classes, label, quiet: options.quiet || !leader, per_sample: false };
        let valid = trainer.evaluate(&data.valid, &pass("valid"), group)?;
        let test = data.test.as_ref().map(|t| trainer.evaluate(t, &pass("test"), group)).transpose()?;
        state.seconds += started.elapsed().as_secs_f64();
        let record = EpochRecord {
            lr_w: trainer.schedules().0.lr,
            lr_pos: trainer.lr_pos(),
            sigma: trainer.sigma(),
            seconds: started.elapsed().as_secs_f64(),
            ..EpochRecord::new(epoch + 1, &train, &valid, test.as_ref())
        };
        update_best(&mut state, &record, trainer, leader.then_some(&files), data.valid_is_test)?;
        state.history.push(record.clone());
        state.epochs_done += 1;
        if let Some(observer) = observer.as_mut() {
            log_epoch(&mut observer.board, trainer, &record, &mut marks);
            println!("{}", epoch_line(&record, &state, config.epochs));
            observer.metrics.append(&serde_json::to_value(&record)?)?;
            save_last(&files.last, trainer, &state, &marks)?;
            observer.board.flush()?;
        }
        if options.stop_after.is_some_and(|n| state.epochs_done >= n) && state.epochs_done < config.epochs {
            return Ok(Outcome::Paused { epochs_done: state.epochs_done });
        }
    }
    let summary = summary(trainer, &state, &data, options);
    if leader {
        atomic::write_bytes(&files.summary, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    }
    Ok(Outcome::Finished(summary))
}

/// A data-parallel run splits batches over ranks, which the reference's per-batch dropout masks
/// (drawn from the global generator) cannot follow.
fn check_shardable(config: &Config) -> Result<()> {
    let recurrent_dropout = config.recurrent.as_ref().is_some_and(|r| r.recurrent_dropout > 0.0);
    if (config.dropout_p > 0.0 || recurrent_dropout) && config.dropout_masks == MaskDraw::Global {
        bail!(
            "a run over several processes needs per-sample dropout masks (the reference draws one mask per batch from the global generator, which cannot be split over ranks): add --set dropout_masks=per_sample, in a one-process run too if you want to compare with it"
        );
    }
    Ok(())
}

/// Makes this rank's trainer one of the group's: BatchNorm over the global batch, gradients
/// defined everywhere, rank 0's parameters; every rank must have resumed from the same epoch.
fn join_training(learner: &mut dyn Learner, state: &RunState, group: &Rc<Group>) -> Result<()> {
    let leader_epochs = group.leader_value(state.epochs_done as i64)?;
    anyhow::ensure!(
        leader_epochs == state.epochs_done as i64,
        "rank {} resumed after epoch {} but rank 0 after epoch {leader_epochs}: every rank must see the same run directory (a shared file system)",
        group.world.rank,
        state.epochs_done
    );
    learner.join_group(group.clone() as Rc<dyn crate::model::GlobalSum>);
    define_gradients(learner);
    broadcast_state(learner, group)
}

/// Opens TensorBoard and `metrics.jsonl` for rank 0; a new run's board gets its config.
fn open_observer(dir: &Path, files: &RunFiles, config: &Config, state: &RunState, resume: bool) -> Result<Observer> {
    let mut board = Board::open(dir)?;
    if !resume {
        board.text("config", &format!("```\n{}\n```", serde_json::to_string_pretty(&config.to_json())?), 0);
    }
    let lines = state.history.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>()?;
    Ok(Observer { board, metrics: MetricsFile::new(files.metrics.clone(), lines) })
}

/// What a stopped run leaves to continue from, for messages: never a file that does not exist.
fn saved_so_far(files: &RunFiles, epochs_done: usize) -> String {
    if epochs_done > 0 && files.last.exists() {
        format!("{} holds the state after epoch {epochs_done}; continue with --resume", files.last.display())
    } else {
        "no epoch was completed, so nothing was saved; the same command starts the run over".into()
    }
}

/// Takes an exclusive lock on the run directory (created if needed) for this process's life;
/// the operating system releases it if the process dies.
fn lock_run_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
    let path = dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            bail!(
                "run directory {} is in use by another snn-delays process{}; wait for it to end or choose another --run-dir",
                dir.display(),
                if holder.is_empty() { String::new() } else { format!(" (pid {holder})") }
            );
        }
        Err(std::fs::TryLockError::Error(error)) => {
            bail!("cannot lock {} ({error}): choose a --run-dir on a file system that supports locks", path.display())
        }
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    remove_stale_temporaries(dir)?;
    Ok(file)
}

/// Removes temporary files (`.NAME.tmp-PID`, see [`atomic`]) left by writers that were killed:
/// under the lock, no other process writes here.
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    remove_files(dir, |name| name.starts_with('.') && name.contains(".tmp-"))
}

/// Removes the files of `dir` whose names match.
fn remove_files(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|name| matches(&name.to_string_lossy())) {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The summary of a run in `dir` that finished with `config`; `None` when no run there has
/// finished; an error when the finished run used another configuration.
pub fn finished_summary(config: &Config, dir: &Path) -> Result<Option<serde_json::Value>> {
    let files = RunFiles::new(dir);
    if !files.summary.exists() {
        return Ok(None);
    }
    check_same_config(config, &files)?;
    let text = std::fs::read_to_string(&files.summary).with_context(|| format!("cannot read {}", files.summary.display()))?;
    let summary = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", files.summary.display()))?;
    Ok(Some(summary))
}

/// Refuses to overwrite a run, and to resume one with another configuration. A folder whose run
/// completed no epoch (no `last.safetensors`) starts over, with or without `--resume`. Returns
/// whether to resume from `last.safetensors`.
fn check_run_dir(config: &Config, files: &RunFiles, options: &RunOptions) -> Result<bool> {
    let dir = options.run_dir.display();
    if files.summary.exists() && !options.resume {
        bail!("run directory {dir} already holds a finished run; choose another --run-dir");
    }
    if !files.last.exists() {
        if options.resume && !files.config.exists() {
            bail!("--resume: run directory {dir} holds no run ({} does not exist)", files.config.display());
        }
        if files.config.exists() {
            if options.resume {
                check_same_config(config, files)?;
            }
            println!("run directory {dir} holds a run that completed no epoch: starting it over");
            start_over(&options.run_dir)?;
        }
        return Ok(false);
    }
    if !options.resume {
        bail!("run directory {dir} already holds a run; continue it with --resume or choose another --run-dir");
    }
    check_same_config(config, files)?;
    Ok(true)
}

/// `last.safetensors` must belong to this run (the id in `config.json`); libtorch runs on the
/// run's thread count unless `--threads` says otherwise, which the log then flags. The ranks of
/// a multi-process run keep their launcher's threads (and record none: a run resumed at another
/// world size cannot repeat its rounding anyway).
fn check_resumed_state(state: &RunState, files: &RunFiles, options: &RunOptions) -> Result<()> {
    let saved = read_run_config(files)?;
    if let Some(id) = saved.get(crate::config::RUN_ID_KEY).and_then(serde_json::Value::as_str) {
        anyhow::ensure!(
            id == state.run_id,
            "{} belongs to another run (id {}) than {} (id {id}); copy back this run's own checkpoint",
            files.last.display(),
            state.run_id,
            files.config.display()
        );
    }
    if options.group.is_some() {
        return Ok(());
    }
    match (state.threads, options.threads) {
        (Some(recorded), None) => tch::set_num_threads(recorded),
        (Some(recorded), Some(asked)) if recorded as usize != asked => println!(
            "warning: the run used {recorded} CPU threads and resumes with {asked}: it will not repeat an uninterrupted run bit for bit"
        ),
        _ => {}
    }
    Ok(())
}

/// Removes what an attempt that completed no epoch left: its config, events and metrics.
fn start_over(dir: &Path) -> Result<()> {
    remove_files(dir, |name| name.starts_with("events.out.tfevents") || name == "metrics.jsonl" || name == "config.json")
}

/// The run's `config.json`, parsed.
fn read_run_config(files: &RunFiles) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(&files.config).with_context(|| format!("cannot read {}", files.config.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", files.config.display()))
}

/// The configuration must equal the run's `config.json` (the data folder may move). A key that
/// the run's file lacks (added to the configuration after the run was written) takes its default.
fn check_same_config(config: &Config, files: &RunFiles) -> Result<()> {
    let saved = with_defaults(read_run_config(files)?);
    let current = config.to_json();
    let differing: Vec<String> = current
        .as_object()
        .expect("config is an object")
        .iter()
        .filter(|(key, value)| key.as_str() != "data_dir" && saved.get(key.as_str()) != Some(value))
        .map(|(key, value)| {
            format!("{key}: run has {}, now {value}", saved.get(key.as_str()).unwrap_or(&serde_json::Value::Null))
        })
        .collect();
    if !differing.is_empty() {
        bail!("the configuration differs from the run's {}: {}", files.config.display(), differing.join("; "));
    }
    Ok(())
}

/// A saved configuration with the defaults of keys it lacks filled in; as it is if it does not
/// parse (the comparison then names the differing keys).
fn with_defaults(saved: serde_json::Value) -> serde_json::Value {
    let mut fields = saved.clone();
    if let Some(map) = fields.as_object_mut() {
        map.remove("derived");
        map.remove(crate::config::RUN_ID_KEY);
    }
    serde_json::from_value::<Config>(fields).map_or(saved, |parsed| parsed.to_json())
}

/// Trains one epoch; `None` when interrupted by Ctrl-C. Batches are made one ahead on a helper
/// thread; the loss is read once per step (for its finiteness check), while accuracies and the
/// per-batch position changes stay on the device until the epoch ends.
fn train_epoch(
    trainer: &mut dyn Learner,
    data: &DataSplits,
    epoch: usize,
    state: &mut RunState,
    board: Option<&mut Board>,
    options: &RunOptions,
    interrupted: &AtomicBool,
) -> Result<Option<Scores>> {
    let config = trainer.config().clone();
    let seed = config.seed;
    tch::manual_seed((seed as i64).wrapping_mul(1_000_003).wrapping_add(epoch as i64));
    let augment = config.augment.then(|| Augment::from_config(&config));
    let classes = config.derived().n_outputs as i64;
    let at_start = trainer.positions();
    let mut previous: Vec<Tensor> = at_start.iter().map(Tensor::shallow_clone).collect();
    let mut moves: Vec<Vec<Tensor>> = at_start.iter().map(|_| Vec::new()).collect();
    let (mut losses, mut accuracies, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    let epoch_batches = if config.recurrent.as_ref().is_some_and(|r| r.augment) {
        tripled_batches(&data.train, config.batch_size, classes, seed, epoch as u64)
    } else {
        batches(&data.train, config.batch_size, classes, Some((seed, epoch as u64)))
    };
    let label = format!("epoch {}/{}", epoch + 1, config.epochs);
    let group = options.group.as_deref();
    let quiet = options.quiet || group.is_some_and(|g| !g.is_leader());
    let mut progress = Progress::new(&label, epoch_batches.batch_count() as u64, Unit::Items, quiet);
    let device = options.device;
    let world = group.map(|g| g.world.clone());
    let augment_here = augment.filter(Augment::draws_from_torch);
    let ready = |batch: Batch| {
        let rows = world.as_ref().map(|w| w.shard(batch.lengths.len()));
        StagedBatch::of(batch, rows, device)
    };
    let stage = |index: usize, mut batch: Batch| -> Result<Staged> {
        if augment_here.is_some() {
            return Ok(Staged::Unaugmented(batch));
        }
        if let Some(augment) = &augment {
            augment.apply(&mut batch, seed, epoch as u64, index as u64);
        }
        Ok(Staged::Ready(ready(batch)))
    };
    let finished = prefetched(epoch_batches, stage, |index, staged| {
        let batch = match staged {
            Staged::Ready(batch) => batch,
            Staged::Unaugmented(mut batch) => {
                if let Some(augment) = &augment_here {
                    augment.apply(&mut batch, seed, epoch as u64, index as u64);
                }
                ready(batch)
            }
        };
        sizes.push(batch.size);
        let (step, stop) = batch_step(trainer, &batch, epoch, group, interrupted.load(Ordering::SeqCst), device)?;
        losses.push(step.loss);
        accuracies.push(step.accuracy);
        let now = trainer.positions();
        for (layer, (before, after)) in previous.iter().zip(&now).enumerate() {
            moves[layer].push(mean_abs_change(before, after));
        }
        previous = now;
        progress.set_position(index as u64 + 1);
        progress.refresh_message(|| {
            let scores = Scores::from_batches(&losses, &read_all(&accuracies), &sizes);
            format!("loss {:.4} acc {:.2}%", scores.loss, 100.0 * scores.accuracy)
        });
        Ok(if stop { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
    })?;
    progress.finish();
    if !finished {
        return Ok(None);
    }
    if let Some(board) = board {
        for (layer, changes) in moves.iter().enumerate() {
            for (offset, change) in read_all(changes).into_iter().enumerate() {
                board.scalar(&format!("dpos{layer}"), change, state.batches_done + offset);
            }
        }
        for (layer, (before, after)) in at_start.iter().zip(&previous).enumerate() {
            board.scalar(&format!("dpos{layer}_epoch"), mean_abs_change(before, after).double_value(&[]), epoch);
        }
    }
    state.batches_done += losses.len();
    Ok(Some(Scores::from_batches(&losses, &read_all(&accuracies), &sizes)))
}

/// What the helper thread hands over: a batch ready for its step, or one still to be augmented on
/// this thread (its augmentation draws from the torch generator, whose order must not change).
enum Staged {
    Ready(StagedBatch),
    Unaugmented(Batch),
}

/// One training step on a staged batch: the whole of it in one process, this rank's shard in a
/// group. Returns the step's result and whether to stop after it (Ctrl-C here, or on any rank).
fn batch_step(
    trainer: &mut dyn Learner,
    batch: &StagedBatch,
    epoch: usize,
    group: Option<&Group>,
    stop_requested: bool,
    device: Device,
) -> Result<(super::BatchResult, bool)> {
    let masks = dropout_masks(trainer, epoch, &batch.indices, device);
    let (x, targets) = (to_device(&batch.x, device), to_device(&batch.targets, device));
    match group {
        None => Ok((trainer.train_step(&x, &targets, DropoutMasks(&masks))?, stop_requested)),
        Some(group) => {
            let synced = synced_step(trainer, group, (&x, &targets), DropoutMasks(&masks), batch.size, stop_requested)?;
            Ok((synced.result, synced.stop))
        }
    }
}

/// Per-sample masks when the config asks for them; none (drawn by the network) otherwise.
fn dropout_masks(trainer: &dyn Learner, epoch: usize, indices: &[usize], device: Device) -> Vec<Option<Tensor>> {
    let config = trainer.config();
    match config.dropout_masks {
        MaskDraw::PerSample => per_sample_masks(config.seed, epoch as u64, indices, &trainer.dropout_plan(), device),
        MaskDraw::Global => Vec::new(),
    }
}

/// Keeps the best checkpoints (§4.7): strictly higher valid accuracy, strictly lower valid loss.
/// The first epoch is always the best so far (the reference starts from accuracy 0, so a run
/// that never rose above 0 had no best epoch and no test accuracy to report).
/// Only rank 0 passes `files` and saves.
fn update_best(
    state: &mut RunState,
    record: &EpochRecord,
    trainer: &dyn Learner,
    files: Option<&RunFiles>,
    valid_is_test: bool,
) -> Result<()> {
    let test_acc = if valid_is_test { Some(record.valid_acc) } else { record.test_acc };
    if let Some(acc) = test_acc {
        state.best_test_acc = Some(state.best_test_acc.map_or(acc, |best| best.max(acc)));
    }
    if record.valid_acc > state.best_valid_acc || state.best_valid_epoch.is_none() {
        state.best_valid_acc = record.valid_acc;
        state.best_valid_epoch = Some(record.epoch);
        state.test_acc_at_best_valid = test_acc;
        if let Some(files) = files {
            save_best(trainer, &files.best_acc)?;
        }
    }
    if record.valid_loss < state.best_valid_loss {
        state.best_valid_loss = record.valid_loss;
        if let Some(files) = files {
            save_best(trainer, &files.best_loss)?;
        }
    }
    Ok(())
}

/// A best checkpoint: the model's state dict, with the learner's metadata in the header.
fn save_best(trainer: &dyn Learner, path: &Path) -> Result<()> {
    checkpoint::write_tensors_with_metadata(path, &checkpoint::state_dict(trainer.vs()), Some(trainer.checkpoint_metadata()))
}

/// The first trainable parameter holding a NaN or an infinity, checked once per epoch before
/// anything is logged or saved.
fn non_finite_parameter(trainer: &dyn Learner) -> Option<String> {
    checkpoint::state_dict(trainer.vs())
        .into_iter()
        .find(|(_, tensor)| tensor.requires_grad() && tensor.isfinite().all().int64_value(&[]) == 0)
        .map(|(key, _)| key)
}

/// The mean absolute change of positions, a 0-dim float64 tensor on their device.
fn mean_abs_change(before: &Tensor, after: &Tensor) -> Tensor {
    (after - before).abs().mean(Kind::Double)
}

/// The per-epoch scalars and histograms of §4.8, at the epoch's number (from 1). Losses and
/// accuracies are sample-weighted; `*_batch_mean` are the reference's means over batches.
fn log_epoch(board: &mut Board, trainer: &dyn Learner, record: &EpochRecord, marks: &mut [Tensor]) {
    let step = record.epoch;
    for (tag, value) in [
        ("loss_train", record.train_loss),
        ("acc_train", record.train_acc),
        ("loss_valid", record.valid_loss),
        ("acc_valid", record.valid_acc),
        ("loss_train_batch_mean", record.train_loss_batch_mean),
        ("acc_train_batch_mean", record.train_acc_batch_mean),
        ("loss_valid_batch_mean", record.valid_loss_batch_mean),
        ("acc_valid_batch_mean", record.valid_acc_batch_mean),
        ("lr_w", record.lr_w),
        ("lr_pos", record.lr_pos),
        ("sigma", record.sigma),
    ] {
        board.scalar(tag, value, step);
    }
    let test = [
        ("loss_test", record.test_loss),
        ("acc_test", record.test_acc),
        ("loss_test_batch_mean", record.test_loss_batch_mean),
        ("acc_test_batch_mean", record.test_acc_batch_mean),
    ];
    for (tag, value) in test {
        if let Some(value) = value {
            board.scalar(tag, value, step);
        }
    }
    trainer.log_layers(board, step);
    let now = trainer.positions();
    for (i, mark) in marks.iter_mut().enumerate().take(now.len()) {
        if (step - 1).is_multiple_of(5) && step > 1 {
            board.scalar(&format!("dpos{i}_5epochs"), mean_abs_change(mark, &now[i]).double_value(&[]), step);
            *mark = now[i].copy();
        }
    }
}

fn epoch_line(record: &EpochRecord, state: &RunState, epochs: usize) -> String {
    let mut line = format!(
        "epoch {:>3}/{epochs} | train loss {:.4} acc {:6.2}% | valid loss {:.4} acc {:6.2}% (best {:6.2}%)",
        record.epoch,
        record.train_loss,
        100.0 * record.train_acc,
        record.valid_loss,
        100.0 * record.valid_acc,
        100.0 * state.best_valid_acc
    );
    if let (Some(loss), Some(acc)) = (record.test_loss, record.test_acc) {
        line += &format!(
            " | test loss {loss:.4} acc {:6.2}% (best {:6.2}%)",
            100.0 * acc,
            100.0 * state.best_test_acc.unwrap_or(0.0)
        );
    }
    line + &format!(" | sigma {:.3} lr_w {:.2e} | {:.1} s", record.sigma, record.lr_w, record.seconds)
}

/// The run's first line; `slow_convolution` says why the time convolution will be slow, if it will.
fn run_header(trainer: &dyn Learner, data: &DataSplits, options: &RunOptions, slow_convolution: Option<&str>) -> String {
    let chosen = match (options.device_auto, options.device) {
        (false, _) => "",
        (true, Device::Cpu) => " (auto: no CUDA device)",
        (true, _) => " (auto: CUDA present)",
    };
    let (neurons, note) = trainer.neurons();
    let note = note.map_or(String::new(), |why| format!(" ({why})"));
    let convolution = slow_convolution.map_or(String::new(), |why| format!(", {why}"));
    let gpu = match options.device {
        Device::Cuda(index) => format!(" ({})", crate::device::cuda::describe(index)),
        _ => String::new(),
    };
    let processes = options.group.as_ref().map_or(String::new(), |group| {
        let backend = if group.device.is_cuda() { "NCCL" } else { "Gloo" };
        format!(" × {} processes ({backend}, {})", group.world.size, group.world.launcher)
    });
    format!(
        "{} {}: {} trainable parameters, {} train samples, device {}{gpu}{chosen}{processes}, {} neurons{note}{convolution}, run {}",
        crate::config::name_of(&trainer.config().dataset),
        crate::config::name_of(&trainer.config().model_type),
        trainer.trainable_parameter_count(),
        data.train.len(),
        crate::device::name(options.device),
        neurons,
        options.run_dir.display()
    )
}

/// `summary.json`: accuracies are sample-weighted and epochs counted from 1; the best epoch is
/// chosen on the sample-weighted validation accuracy. The `*_batch_mean` figures are the
/// reference's means over batches: the best of them, and the test one at the best epoch.
fn summary(trainer: &dyn Learner, state: &RunState, data: &DataSplits, options: &RunOptions) -> serde_json::Value {
    let at_best = state.history.iter().find(|record| Some(record.epoch) == state.best_valid_epoch);
    let best_batch_mean = state.history.iter().map(|record| record.valid_acc_batch_mean).fold(f64::NAN, f64::max);
    let test_batch_mean =
        at_best.and_then(
            |record| {
                if data.valid_is_test {
                    Some(record.valid_acc_batch_mean)
                } else {
                    record.test_acc_batch_mean
                }
            },
        );
    serde_json::json!({
        "best_valid_acc": state.best_valid_acc,
        "best_valid_epoch": state.best_valid_epoch,
        "test_acc_at_best_valid": state.test_acc_at_best_valid,
        "best_test_acc": state.best_test_acc,
        "best_valid_acc_batch_mean": best_batch_mean,
        "test_acc_batch_mean_at_best_valid": test_batch_mean,
        "final": state.history.last(),
        "params": trainer.trainable_parameter_count(),
        "seconds": state.seconds,
        "epochs": state.epochs_done,
        "protocol": data.protocol(),
        "valid_is_test": data.valid_is_test,
        "model_type": trainer.config().model_type,
        "device": crate::device::name(options.device),
        "processes": options.group.as_ref().map_or(1, |group| group.world.size),
        "neuron_backend": trainer.neurons().0,
    })
}

/// Set by Ctrl-C; the loop stops after the current batch.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler = flag.clone();
        let _ = ctrlc::set_handler(move || handler.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}
