//! `snn-delays eval`: evaluates a checkpoint with integer delays on one split. Accepts our
//! checkpoints (best, last) and state dicts saved from the PyTorch reference; for a
//! recurrent-delay model, its run's checkpoints or a DelRec state dict (`layers.N.…`), evaluated
//! as `recurrent.eval_delays` says (at the σ the checkpoint records, for `original`). By default the
//! reference's protocol (batches padded to their longest sample); `--per-sample` runs each
//! sample on its own steps, as `infer` does.

use super::{ConfigArgs, DeviceArgs};
use crate::checkpoint;
use crate::config::{EvalDelays, ModelType};
use crate::data::{DataSplits, Split};
use crate::model::Network;
use crate::train::eval::{evaluate, Pass};
use crate::train::learner::{Learner, SIGMA_KEY};
use crate::train::recurrent::RecurrentTrainer;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The weights: one of our checkpoints, a reference state_dict, or (delrec) a DelRec one (safetensors)
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: PathBuf,
    /// Dataset folder [default: the config's data_dir]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
    /// Run each sample on its own (its own length and the network's tail), as `infer` and a
    /// deployed model do, instead of the reference's batches padded to their longest sample
    #[arg(long)]
    per_sample: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let source = super::config_beside(&args.config, &args.checkpoint);
    let config = source.load()?;
    let data = args.data.clone().unwrap_or_else(|| PathBuf::from(&config.data_dir));
    let subset = DataSplits::subset(&config, &data, args.split)?;
    let split = format!("{:?}", args.split).to_lowercase();
    let classes = config.derived().n_outputs as i64;
    let pass = Pass { batch_size: config.batch_size, classes, label: &split, quiet: args.json, per_sample: args.per_sample };
    let tensors = checkpoint::read_tensors(&args.checkpoint)?.into_iter().collect();
    let scores = if config.model_type == ModelType::Delrec {
        let mut trainer = RecurrentTrainer::new(&config, args.device.select()?)?;
        trainer.network.load_weights(&args.checkpoint, &tensors)?;
        trainer.sigma = recorded_sigma(&trainer, &args.checkpoint)?;
        trainer.evaluate(&subset, &pass, None)
    } else {
        let config = source.load_for_network(1, 1)?;
        let network = Network::new(&config, args.device.select()?);
        checkpoint::load_model_part(&network.vs, &args.checkpoint, &tensors)?;
        evaluate(&network, &subset, &pass, None)
    };
    let scores = scores.with_context(|| format!("evaluating {}", args.checkpoint.display()))?;
    if args.json {
        let mut report = serde_json::to_value(scores)?;
        report["split"] = split.into();
        report["checkpoint"] = serde_json::to_value(&args.checkpoint)?;
        report["protocol"] = if args.per_sample { "per-sample" } else { "padded batches" }.into();
        println!("{report}");
    } else if args.per_sample {
        println!(
            "{split}: loss {:.4}, accuracy {:.2}% on {} samples (integer delays, each sample on its own)",
            scores.loss,
            100.0 * scores.accuracy,
            scores.samples
        );
    } else {
        println!(
            "{split}: loss {:.4}, accuracy {:.2}% on {} samples (integer delays; the reference's means over batches: \
             loss {:.4}, accuracy {:.2}%)",
            scores.loss,
            100.0 * scores.accuracy,
            scores.samples,
            scores.loss_batch_mean,
            100.0 * scores.accuracy_batch_mean
        );
    }
    Ok(())
}

/// The σ a recurrent-delay checkpoint was written at, which the `original` evaluation needs (the
/// `integer` one uses σ = 0).
fn recorded_sigma(trainer: &RecurrentTrainer, path: &std::path::Path) -> Result<f64> {
    let recorded = checkpoint::read_metadata(path)?.get(SIGMA_KEY).map(|text| text.parse::<f64>());
    match (recorded, trainer.recurrent.eval_delays) {
        (Some(Ok(sigma)), _) => Ok(sigma),
        (Some(Err(_)), _) => bail!("{}: header key `{SIGMA_KEY}` is not a number", path.display()),
        (None, EvalDelays::Integer) => Ok(0.0),
        (None, EvalDelays::Original) => bail!(
            "{} records no σ (`{SIGMA_KEY}`), which recurrent.eval_delays=original evaluates at; use a best checkpoint of a run, or recurrent.eval_delays=integer",
            path.display()
        ),
    }
}
