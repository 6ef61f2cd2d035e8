//! `snn-delays infer`: the pure-Rust integer-delay engine (`crate::infer`) on a dataset split.
//!
//! Each sample runs on its own steps and the network's tail, never another sample's padding
//! (the framing comes from the configuration stored in the model, unless flags give one), so a
//! prediction does not depend on the other samples: batch mode (samples in parallel) and
//! `--stream` (a frame at a time, as frames would arrive, printing the decision whenever it
//! changes) give the same scores bit for bit, and the accuracy equals `eval --per-sample`'s.
//! The model is a feed-forward or a recurrent-delay network, as exported.

use super::ConfigArgs;
use crate::config::{Config, ConfigSource};
use crate::data::{DataSplits, Split, Subset};
use crate::infer::{prediction, ClassScores, Engine, Semantics};
use crate::progress::{Progress, Unit};
use anyhow::{ensure, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct InferArgs {
    /// The model: `snn-delays export --format delays` (feed-forward or recurrent delays)
    #[arg(long, value_name = "M.safetensors")]
    model: PathBuf,
    /// Dataset folder [default: the stored configuration's data_dir]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// Feed each recording one frame at a time and print the decision as it forms
    #[arg(long)]
    stream: bool,
    /// Only the first N samples
    #[arg(long)]
    limit: Option<usize>,
    /// When a layer's sequence ends: `reference` (each layer ends (K−1)//2 steps after its input,
    /// as `eval` computes) or `nir` (no layer ends, as a NIR graph runs; the recording is
    /// followed by the network's tail of zero frames); a recurrent-delay network has no tail, so
    /// both are the same
    #[arg(long, value_enum, default_value = "reference")]
    semantics: Semantics,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
    /// With --json, also give each sample's class scores (`scores`, one row per sample)
    #[arg(long, requires = "json")]
    scores: bool,
    /// Framing, and the batch size (samples run in parallel at a time) [default: the configuration stored in the model]
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: &InferArgs) -> Result<()> {
    let model = crate::infer::load(&args.model)?;
    let model = model.as_ref();
    let config = data_config(args)?;
    ensure!(
        config.derived().n_inputs == model.n_inputs(),
        "{} takes {} inputs but the dataset gives {} (n_bins {})",
        args.model.display(),
        model.n_inputs(),
        config.derived().n_inputs,
        config.n_bins
    );
    let data = args.data.clone().unwrap_or_else(|| PathBuf::from(&config.data_dir));
    let mut subset = DataSplits::subset(&config, &data, args.split)?;
    subset.indices.truncate(args.limit.unwrap_or(usize::MAX));
    let started = Instant::now();
    let Decided { predictions, scores, labels } =
        if args.stream { stream(model, &subset, args)? } else { batches(model, &subset, config.batch_size, args)? };
    let seconds = started.elapsed().as_secs_f64();
    let correct = predictions.iter().zip(&labels).filter(|(p, l)| **p as i64 == **l).count();
    let accuracy = correct as f64 / labels.len().max(1) as f64;
    let mode = if args.stream { "stream" } else { "batch" };
    if args.json {
        let mut report = serde_json::json!({"split": format!("{:?}", args.split).to_lowercase(), "mode": mode,
            "samples": labels.len(), "accuracy": accuracy, "seconds": seconds, "predictions": predictions});
        if args.scores {
            report["scores"] = serde_json::json!(scores);
        }
        println!("{report}");
    } else {
        println!(
            "{:?}: accuracy {:.2}% on {} samples ({mode} mode, {:.2} s, {:.0} samples/s)",
            args.split,
            100.0 * accuracy,
            labels.len(),
            seconds,
            labels.len() as f64 / seconds
        );
    }
    Ok(())
}

/// The flags' configuration, or the one stored in the model, or the SHD preset.
fn data_config(args: &InferArgs) -> Result<Config> {
    if args.config.preset.is_some() || args.config.config.is_some() {
        return args.config.load();
    }
    match crate::export::delays::stored_config(&args.model)? {
        Some(text) => {
            ConfigSource::from_printed(&text, &format!("the configuration stored in {}", args.model.display()), &args.config.set)
        }
        None => args.config.load(),
    }
}

/// Each sample's decision and class scores, and the labels.
struct Decided {
    predictions: Vec<usize>,
    scores: Vec<Vec<f32>>,
    labels: Vec<i64>,
}

impl Decided {
    fn new(labels: Vec<i64>) -> Decided {
        Decided { predictions: Vec::with_capacity(labels.len()), scores: Vec::with_capacity(labels.len()), labels }
    }

    fn push(&mut self, scores: Vec<f32>) -> usize {
        let decision = prediction(&scores);
        self.predictions.push(decision);
        self.scores.push(scores);
        decision
    }
}

/// Batch mode: the samples of a batch in parallel, each on its own steps.
fn batches(model: &dyn Engine, subset: &Subset, batch_size: usize, args: &InferArgs) -> Result<Decided> {
    let mut decided = Decided::new(subset.labels());
    let progress = Progress::new("infer", decided.labels.len() as u64, Unit::Items, args.json);
    for chunk in subset.indices.chunks(batch_size.max(1)) {
        let samples: Vec<(Vec<f32>, usize)> = subset.source.frames(chunk)?.into_iter().map(|f| (f.values, f.steps)).collect();
        for readout in model.run_all_as(&samples, args.semantics)? {
            decided.push(model.scores(&readout));
        }
        progress.advance(chunk.len() as u64);
    }
    Ok(decided)
}

/// Streaming: each recording frame by frame, unpadded; the decision is printed when it changes.
fn stream(model: &dyn Engine, subset: &Subset, args: &InferArgs) -> Result<Decided> {
    let quiet = args.json;
    let mut decided = Decided::new(subset.labels());
    let step_ms = model.time_step_ms();
    let mut stream = model.stream_as(args.semantics);
    for (sample, &index) in subset.indices.iter().enumerate() {
        let frames = subset.source.frames(&[index])?.pop().context("a sample's frames")?;
        stream.reset();
        let mut scores = ClassScores::new(model.scoring(), model.n_outputs());
        let mut decision = None;
        for frame in frames.values.chunks_exact(frames.channels) {
            scores.add(stream.step(frame)?);
            let now = prediction(&scores.scores());
            if decision != Some(now) && !quiet {
                println!("sample {sample}, {:.0} ms: class {now}", stream.steps() as f64 * step_ms);
            }
            decision = Some(now);
        }
        stream.finish().iter().for_each(|row| scores.add(row));
        let last = decided.push(scores.scores());
        if !quiet {
            println!("sample {sample}: decided class {last} after {} steps (label {})", stream.steps(), decided.labels[sample]);
        }
    }
    Ok(decided)
}
