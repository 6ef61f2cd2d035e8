//! `snn-delays replay`: runs the exact training procedure (both Adams, schedules per epoch,
//! position clamping, sigma decay) on given batches and dropout masks, from given weights, and
//! writes every step's loss and the final weights: the optimizer parity tool.
//!
//! Batches file keys: `e<E>.b<K>.x` (T, B, n_inputs), `e<E>.b<K>.y` (B,), optional
//! `e<E>.b<K>.mask.<l>` (B, H). Output: `losses` and `accuracies` (steps,), f64; the final
//! state dict under its reference keys; `lr_w`, `beta1`, `lr_pos`, `sigma` after the last epoch.

use super::{ConfigArgs, DeviceArgs};
use crate::checkpoint;
use crate::model::loss::one_hot;
use crate::model::DropoutMasks;
use crate::train::eval::read_all;
use crate::train::Trainer;
use anyhow::{Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long, value_name = "W.safetensors")]
    weights: PathBuf,
    #[arg(long, value_name = "BATCHES.safetensors")]
    batches: PathBuf,
    #[arg(long, value_name = "OUT.safetensors")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: &ReplayArgs) -> Result<()> {
    let config = args.config.load_for_network(1, 1)?;
    let device = args.device.select()?;
    let mut trainer = Trainer::new(&config, device);
    checkpoint::load(&trainer.network.vs, &args.weights)?;
    let tensors: BTreeMap<String, Tensor> = checkpoint::read_tensors(&args.batches)?.into_iter().collect();
    let classes = config.derived().n_outputs as i64;
    let (mut losses, mut accuracies) = (Vec::new(), Vec::new());
    for epoch in 0.. {
        if !tensors.contains_key(&format!("e{epoch}.b0.x")) {
            break;
        }
        for batch in 0.. {
            let prefix = format!("e{epoch}.b{batch}");
            let Some(x) = tensors.get(&format!("{prefix}.x")) else { break };
            let y = tensors
                .get(&format!("{prefix}.y"))
                .with_context(|| format!("{}: missing `{prefix}.y`", args.batches.display()))?;
            let masks: Vec<Option<Tensor>> = (0..config.n_hidden_layers)
                .map(|l| tensors.get(&format!("{prefix}.mask.{l}")).map(Tensor::shallow_clone))
                .collect();
            let targets = one_hot(&y.to_kind(Kind::Int64).to_device(device), classes);
            let step = trainer.train_step(&x.to_kind(Kind::Float).to_device(device), &targets, DropoutMasks(&masks))?;
            losses.push(step.loss);
            accuracies.push(step.accuracy);
        }
        trainer.end_epoch(epoch);
    }
    let mut out = checkpoint::state_dict(&trainer.network.vs);
    out.push(("losses".into(), Tensor::from_slice(&losses)));
    out.push(("accuracies".into(), Tensor::from_slice(&read_all(&accuracies))));
    for (key, value) in [
        ("lr_w", trainer.weights.lr),
        ("beta1", trainer.weights.beta1),
        ("lr_pos", trainer.lr_pos()),
        ("sigma", trainer.output_sigma()),
    ] {
        out.push((key.into(), Tensor::from(value)));
    }
    checkpoint::write_tensors(&args.out, &out)
}
