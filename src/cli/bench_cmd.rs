//! `snn-delays bench`: times our training step, or an evaluation pass, on a given batch and
//! weights: the same work that bench/reference_step.py times for the reference (`make bench`).
//! Reports the seconds of each repeat, the time to the end of the first step (start-up, the CUDA
//! kernel's compile and self-check included), the peak resident memory, and what one step (one
//! evaluation batch) dispatches: libtorch ops, nested ones included, the leaves among them, our
//! kernel launches and the reads of the device by the host ([`crate::op_count`]). `--json`
//! prints it as one JSON line.

use super::{ConfigArgs, DeviceArgs};
use crate::checkpoint;
use crate::config::{Config, ModelType};
use crate::infer::Model;
use crate::model::eval_form::{EvalKernels, EvalNetwork};
use crate::model::loss::{class_scores, cross_entropy, one_hot};
use crate::model::DropoutMasks;
use crate::op_count::count;
use crate::train::learner::Learner;
use crate::train::recurrent::RecurrentTrainer;
use crate::train::Trainer;
use anyhow::{ensure, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Batches in one timed evaluation pass (the reference's script uses the same number).
pub const EVAL_BATCHES: usize = 4;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Weights: a reference state_dict (safetensors)
    #[arg(long, value_name = "W.safetensors")]
    weights: PathBuf,
    /// The batch: `x` (T, B, n_inputs) and `y` (B,) (safetensors)
    #[arg(long, value_name = "B.safetensors")]
    batch: PathBuf,
    /// Set every layer's sigma to this value first (e.g. 0.23, its final value)
    #[arg(long)]
    sigma: Option<f64>,
    /// Time an evaluation pass (integer delays, 4 batches) instead of a training step
    #[arg(long)]
    eval: bool,
    /// With --eval: the pure-Rust engine on the eval form instead of libtorch, and its
    /// streaming latency per frame (one sample of the batch, frame by frame)
    #[arg(long, requires = "eval")]
    engine: bool,
    /// Timed runs, each reported (`make bench` takes their median)
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Untimed runs first
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// CPU threads for libtorch and the fused kernels [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as one JSON line
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    super::set_threads(args.threads)?;
    if args.config.load()?.model_type == ModelType::Delrec {
        return run_recurrent(args, started);
    }
    let config = args.config.load_for_network(1, 1)?;
    let device = args.device.select()?;
    let mut trainer = Trainer::new(&config, device);
    checkpoint::load(&trainer.network.vs, &args.weights)?;
    if let Some(sigma) = args.sigma {
        tch::no_grad(|| trainer.network.dcls_layers_mut().for_each(|layer| drop(layer.sigma.fill_(sigma))));
    }
    let (x, targets) = read_batch(args, &config, device)?;
    let engine = args.engine.then(|| Model::new(EvalNetwork::of(&trainer.network, config.time_step_ms)));
    let samples = engine.as_ref().map(|_| per_sample(&x));
    let mut once = || -> Result<()> {
        if let (Some(model), Some(samples)) = (&engine, &samples) {
            for _ in 0..EVAL_BATCHES {
                model.run_all(samples)?;
            }
        } else if args.eval {
            eval_pass(&trainer, &x, &targets)?;
        } else {
            trainer.train_step(&x, &targets, DropoutMasks::DRAW)?;
        }
        synchronize(device);
        Ok(())
    };
    let mut report = timed(args, started, device, &mut once)?;
    report["neuron_backend"] = serde_json::to_value(trainer.network.neuron_backend())?;
    report["backend_note"] = serde_json::to_value(&trainer.network.backend_note)?;
    if let (Some(model), Some(samples)) = (&engine, &samples) {
        report["stream_seconds_per_frame"] = stream_latency(model, &samples[0])?.into();
    } else if args.eval {
        let kernels = trainer.network.eval_kernels();
        report["per_batch"] = serde_json::to_value(count(|| eval_batch(&trainer, &kernels, &x, &targets)).1)?;
        report["per_pass"] = serde_json::to_value(count(|| eval_pass(&trainer, &x, &targets)).1)?;
    } else {
        let (step, counts) = count(|| trainer.train_step(&x, &targets, DropoutMasks::DRAW));
        step?;
        report["per_step"] = serde_json::to_value(counts)?;
    }
    show(args, &report);
    Ok(())
}

/// [`run`] for a recurrent-delay model: its training step (kernels at `--sigma`, else at σ of
/// epoch 0) or one evaluation pass of [`EVAL_BATCHES`] batches on its evaluation kernels.
fn run_recurrent(args: &BenchArgs, started: Instant) -> Result<()> {
    ensure!(!args.engine, "--engine runs the feedforward models' eval form; model_type `delrec` has none yet");
    let config = args.config.load()?;
    let device = args.device.select()?;
    let mut trainer = RecurrentTrainer::new(&config, device)?;
    checkpoint::load(&trainer.network.vs, &args.weights)?;
    if let Some(sigma) = args.sigma {
        trainer.sigma = sigma;
    }
    let (x, targets) = read_batch(args, &config, device)?;
    let eval_pass = |trainer: &RecurrentTrainer| -> Result<()> {
        let kernels = trainer.eval_kernels();
        for _ in 0..EVAL_BATCHES {
            drop(trainer.evaluate_batch(&x, &targets, &kernels)?);
        }
        Ok(())
    };
    let mut once = || -> Result<()> {
        if args.eval {
            eval_pass(&trainer)?;
        } else {
            trainer.train_step(&x, &targets, None)?;
        }
        synchronize(device);
        Ok(())
    };
    let mut report = timed(args, started, device, &mut once)?;
    report["neuron_backend"] = trainer.neurons().0.into();
    if args.eval {
        report["per_pass"] = serde_json::to_value(count(|| eval_pass(&trainer)).1)?;
    } else {
        let (step, counts) = count(|| trainer.train_step(&x, &targets, None));
        step?;
        report["per_step"] = serde_json::to_value(counts)?;
    }
    show(args, &report);
    Ok(())
}

/// The batch file's `x (T, B, n_inputs)` and one-hot targets of its `y (B,)`, on `device`.
fn read_batch(args: &BenchArgs, config: &Config, device: Device) -> Result<(Tensor, Tensor)> {
    let mut tensors: BTreeMap<String, Tensor> = checkpoint::read_tensors(&args.batch)?.into_iter().collect();
    let mut take = |key: &str| tensors.remove(key).with_context(|| format!("{} has no key `{key}`", args.batch.display()));
    let x = take("x")?.to_kind(Kind::Float).to_device(device);
    let targets = one_hot(&take("y")?.to_kind(Kind::Int64).to_device(device), config.derived().n_outputs as i64);
    Ok((x, targets))
}

/// Runs `once` `--warmup` times untimed, then `--repeats` times timed: the report's times.
fn timed(args: &BenchArgs, started: Instant, device: Device, once: &mut dyn FnMut() -> Result<()>) -> Result<serde_json::Value> {
    let mut seconds = Vec::with_capacity(args.repeats);
    for repeat in 0..args.warmup + args.repeats {
        let step = Instant::now();
        once()?;
        if repeat >= args.warmup {
            seconds.push(step.elapsed().as_secs_f64());
        }
    }
    let startup_seconds = started.elapsed().as_secs_f64() - seconds.iter().sum::<f64>();
    Ok(serde_json::json!({
        "seconds": seconds,
        "median_seconds": median(&seconds),
        "startup_seconds": startup_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "device": crate::device::name(device),
    }))
}

fn show(args: &BenchArgs, report: &serde_json::Value) {
    if args.json {
        println!("{report}");
    } else {
        print_report(report);
    }
}

/// The report as text.
fn print_report(report: &serde_json::Value) {
    println!(
        "median {:.4} s over {} repeats (start-up {:.2} s), peak RSS {:.0} MiB, {} neurons on {}",
        report["median_seconds"].as_f64().unwrap_or(f64::NAN),
        report["seconds"].as_array().map_or(0, Vec::len),
        report["startup_seconds"].as_f64().unwrap_or(f64::NAN),
        report["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        report["neuron_backend"].as_str().unwrap_or("?"),
        report["device"].as_str().unwrap_or("?"),
    );
    for (key, what) in
        [("per_step", "one training step"), ("per_batch", "one evaluation batch"), ("per_pass", "one evaluation pass")]
    {
        if let Some(counts) = report.get(key) {
            println!(
                "{what}: {} libtorch ops ({} leaves), {} kernel launches of ours, {} host reads",
                counts["ops"], counts["leaf_ops"], counts["kernels"], counts["host_reads"]
            );
        }
    }
}

fn synchronize(device: tch::Device) {
    if let tch::Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The batch `(T, B, C)` as B time-major samples.
fn per_sample(x: &Tensor) -> Vec<(Vec<f32>, usize)> {
    let steps = x.size()[0] as usize;
    (0..x.size()[1])
        .map(|b| (Vec::<f32>::try_from(x.select(1, b).contiguous().flatten(0, -1)).expect("float32 frames"), steps))
        .collect()
}

/// Mean seconds per streamed frame (the recording's frames, then its padding steps), over
/// the best of three passes.
fn stream_latency(model: &Model, sample: &(Vec<f32>, usize)) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut stream = model.stream();
        let started = Instant::now();
        for frame in sample.0.chunks_exact(model.n_inputs()) {
            stream.step(frame)?;
        }
        stream.finish();
        best = best.min(started.elapsed().as_secs_f64() / stream.steps() as f64);
    }
    Ok(best)
}

/// One evaluation batch as an evaluation pass runs it: forward and loss, nothing read.
fn eval_batch(trainer: &Trainer, kernels: &EvalKernels, x: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let network = &trainer.network;
    Ok(cross_entropy(&class_scores(&network.forward_eval(x, kernels)?, network.loss), targets))
}

/// One evaluation pass as `eval` runs it: the eval form, [`EVAL_BATCHES`] batches, the losses read.
fn eval_pass(trainer: &Trainer, x: &Tensor, targets: &Tensor) -> Result<()> {
    let kernels = trainer.network.eval_kernels();
    let losses: Result<Vec<Tensor>> = (0..EVAL_BATCHES).map(|_| eval_batch(trainer, &kernels, x, targets)).collect();
    crate::train::eval::read_all(&losses?);
    Ok(())
}

/// The process's peak resident set (`VmHWM`) in MiB; 0 where /proc does not say.
fn peak_rss_mib() -> f64 {
    crate::memory::proc_kib("/proc/self/status", "VmHWM").map_or(0.0, |kib| kib as f64 / 1024.0)
}
