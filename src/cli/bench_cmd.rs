//! `snn-delays bench`: times our training step, or an evaluation pass, on a given batch and
//! weights: the same work that bench/reference_step.py times for the reference (`make bench`).
//! Prints one JSON line: the seconds of each repeat and the peak resident memory.

use super::{ConfigArgs, DeviceArgs};
use crate::checkpoint;
use crate::infer::Model;
use crate::model::eval_form::EvalNetwork;
use crate::model::loss::{class_scores, cross_entropy, one_hot};
use crate::model::DropoutMasks;
use crate::train::Trainer;
use anyhow::{ensure, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};

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
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    super::set_threads(args.threads)?;
    let config = args.config.load_for_network(1, 1)?;
    let device = args.device.select()?;
    let mut trainer = Trainer::new(&config, device);
    checkpoint::load(&trainer.network.vs, &args.weights)?;
    if let Some(sigma) = args.sigma {
        tch::no_grad(|| trainer.network.dcls_layers_mut().for_each(|layer| drop(layer.sigma.fill_(sigma))));
    }
    let mut tensors: BTreeMap<String, Tensor> = checkpoint::read_tensors(&args.batch)?.into_iter().collect();
    let mut take = |key: &str| tensors.remove(key).with_context(|| format!("{} has no key `{key}`", args.batch.display()));
    let x = take("x")?.to_kind(Kind::Float).to_device(device);
    let targets = one_hot(&take("y")?.to_kind(Kind::Int64).to_device(device), config.derived().n_outputs as i64);
    let engine = args.engine.then(|| Model::new(EvalNetwork::of(&trainer.network, config.time_step_ms)));
    let samples = engine.as_ref().map(|_| per_sample(&x));
    let mut once = || -> Result<()> {
        if let (Some(model), Some(samples)) = (&engine, &samples) {
            for _ in 0..EVAL_BATCHES {
                model.run_all(samples)?;
            }
        } else if args.eval {
            eval_pass(&mut trainer, &x, &targets)?;
        } else {
            trainer.train_step(&x, &targets, DropoutMasks::DRAW)?;
        }
        if let tch::Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
        Ok(())
    };
    for _ in 0..args.warmup {
        once()?;
    }
    let mut seconds = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let started = Instant::now();
        once()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    let mut report = serde_json::json!({ "seconds": seconds, "peak_rss_mib": peak_rss_mib() });
    if let (Some(model), Some(samples)) = (&engine, &samples) {
        report["stream_seconds_per_frame"] = stream_latency(model, &samples[0])?.into();
    }
    println!("{report}");
    Ok(())
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

/// One evaluation pass as `eval` runs it: the eval form, [`EVAL_BATCHES`] batches, the losses read.
fn eval_pass(trainer: &mut Trainer, x: &Tensor, targets: &Tensor) -> Result<()> {
    let network = &trainer.network;
    let kernels = network.eval_kernels();
    let losses: Result<Vec<Tensor>> = (0..EVAL_BATCHES)
        .map(|_| Ok(cross_entropy(&class_scores(&network.forward_eval(x, &kernels)?, network.loss), targets)))
        .collect();
    crate::train::eval::read_all(&losses?);
    Ok(())
}

/// The process's peak resident set (`VmHWM`) in MiB; 0 where /proc does not say.
fn peak_rss_mib() -> f64 {
    crate::memory::proc_kib("/proc/self/status", "VmHWM").map_or(0.0, |kib| kib as f64 / 1024.0)
}
