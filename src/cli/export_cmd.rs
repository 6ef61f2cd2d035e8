//! `snn-delays export`: a checkpoint's eval form written for deployment (`crate::export`):
//! `delays` (the inference engine's input), lava-dl `netx` HDF5, or `nir`.

use super::ConfigArgs;
use crate::checkpoint;
use crate::model::eval_form::EvalNetwork;
use crate::model::Network;
use anyhow::{ensure, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tch::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Integer delays, weights, folded BatchNorm and neuron parameters (safetensors), for `infer`
    Delays,
    /// lava-dl netx HDF5: dense layers with a per-synapse delay array and CUBA neurons
    Netx,
    /// NIR HDF5: one Delay and Affine branch per distinct delay, summed into LIF/LI nodes
    Nir,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The weights: one of our checkpoints or a reference state_dict (safetensors)
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    ensure!(
        !super::same_file(&args.out, &args.checkpoint),
        "--out {} is the checkpoint; choose another output",
        args.out.display()
    );
    let config = super::config_beside(&args.config, &args.checkpoint).load_for_network(1, 1)?;
    let network = Network::new(&config, Device::Cpu);
    let tensors = checkpoint::read_tensors(&args.checkpoint)?.into_iter().collect();
    checkpoint::load_model_part(&network.vs, &args.checkpoint, &tensors)?;
    let form = EvalNetwork::of(&network, config.time_step_ms);
    match args.format {
        Format::Delays => crate::export::delays::write(&form, &config, &args.out)?,
        Format::Netx => crate::export::netx::write(&form, &args.out)?,
        Format::Nir => crate::export::nir::write(&form, &args.out)?,
    }
    let size = |path: &PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
    let synapses: usize = form.layers.iter().map(|l| l.synapse.weights.iter().filter(|w| **w != 0.0).count()).sum();
    println!(
        "wrote {} ({:?}, {} layers, {synapses} synapses): {:.1} KiB, the checkpoint {:.1} KiB",
        args.out.display(),
        args.format,
        form.layers.len(),
        size(&args.out) as f64 / 1024.0,
        size(&args.checkpoint) as f64 / 1024.0
    );
    Ok(())
}
