//! `snn-delays eval`: evaluates a checkpoint with integer delays on one split. Accepts our
//! checkpoints (best, last) and state dicts saved from the PyTorch reference.

use super::{ConfigArgs, DeviceArgs};
use crate::checkpoint;
use crate::data::{DataSplits, Split};
use crate::model::Network;
use crate::train::eval::{evaluate, Pass};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The weights: a reference state_dict or one of our checkpoints (safetensors)
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
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let config = super::config_beside(&args.config, &args.checkpoint).load_for_network(1, 1)?;
    let network = Network::new(&config, args.device.select()?);
    let tensors = checkpoint::read_tensors(&args.checkpoint)?.into_iter().collect();
    checkpoint::load_model_part(&network.vs, &args.checkpoint, &tensors)?;
    let data = args.data.clone().unwrap_or_else(|| PathBuf::from(&config.data_dir));
    let subset = DataSplits::subset(&config, &data, args.split)?;
    let split = format!("{:?}", args.split).to_lowercase();
    let pass =
        Pass { batch_size: config.batch_size, classes: config.derived().n_outputs as i64, label: &split, quiet: args.json };
    let scores = evaluate(&network, &subset, &pass, None).with_context(|| format!("evaluating {}", args.checkpoint.display()))?;
    if args.json {
        let mut report = serde_json::to_value(scores)?;
        report["split"] = split.into();
        report["checkpoint"] = serde_json::to_value(&args.checkpoint)?;
        println!("{report}");
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
