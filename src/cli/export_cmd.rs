//! `snn-delays export`: a checkpoint's eval form written for deployment (`crate::export`):
//! `delays` (the inference engine's input), lava-dl `netx` HDF5, or `nir`; or its weights under
//! the original's state_dict keys (`state-dict`). A recurrent-delay network is written with
//! integer delays (σ = 0) as `delays` or `nir`; netx has no recurrent layer.

use super::ConfigArgs;
use crate::checkpoint;
use crate::config::{Config, EvalDelays, ModelType};
use crate::model::eval_form::EvalNetwork;
use crate::model::recurrent::eval_form::{EvalDense, RecurrentEvalNetwork};
use crate::model::recurrent::network::{RecurrentNetwork, RecurrentShape};
use crate::model::Network;
use anyhow::{bail, ensure, Result};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Tensor};

type Tensors = BTreeMap<String, Tensor>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Integer delays, weights, folded BatchNorm and neuron parameters (safetensors), for `infer`
    Delays,
    /// lava-dl netx HDF5: dense layers with a per-synapse delay array and CUBA neurons
    Netx,
    /// NIR HDF5: one Delay and Affine branch per distinct delay, summed into LIF/LI nodes; a
    /// recurrent delay is a Delay node on the recurrent edge
    Nir,
    /// The trained weights under the original's state_dict keys (safetensors): the reference's
    /// `model.N.…`, or DelRec's `layers.N.…` for a recurrent-delay model
    StateDict,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The weights: one of our checkpoints, a reference state_dict, or (delrec) a DelRec one (safetensors)
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
    let source = super::config_beside(&args.config, &args.checkpoint);
    let tensors = checkpoint::read_tensors(&args.checkpoint)?.into_iter().collect();
    let (layers, synapses) = if source.load()?.model_type == ModelType::Delrec {
        export_recurrent(args, &source.load()?, &tensors)?
    } else {
        export_feedforward(args, &source.load_for_network(1, 1)?, &tensors)?
    };
    let size = |path: &PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
    println!(
        "wrote {} ({:?}, {layers}, {synapses} synapses): {:.1} KiB, the checkpoint {:.1} KiB",
        args.out.display(),
        args.format,
        size(&args.out) as f64 / 1024.0,
        size(&args.checkpoint) as f64 / 1024.0
    );
    Ok(())
}

/// A feed-forward network's export; its layers and nonzero synapses, in words.
fn export_feedforward(args: &ExportArgs, config: &Config, tensors: &Tensors) -> Result<(String, usize)> {
    let network = Network::new(config, Device::Cpu);
    checkpoint::load_model_part(&network.vs, &args.checkpoint, tensors)?;
    let form = EvalNetwork::of(&network, config.time_step_ms);
    match args.format {
        Format::Delays => crate::export::delays::write(&form, config, &args.out)?,
        Format::Netx => crate::export::netx::write(&form, &args.out)?,
        Format::Nir => crate::export::nir::write(&form, &args.out)?,
        Format::StateDict => checkpoint::save(&network.vs, &args.out)?,
    }
    let synapses = form.layers.iter().map(|l| nonzero(&l.synapse.weights)).sum();
    Ok((format!("{} layers", form.layers.len()), synapses))
}

/// A recurrent-delay network's export, with integer delays (σ = 0).
fn export_recurrent(args: &ExportArgs, config: &Config, tensors: &Tensors) -> Result<(String, usize)> {
    let network = RecurrentNetwork::new(&RecurrentShape::of(config)?, config.seed as i64, Device::Cpu);
    network.load_weights(&args.checkpoint, tensors)?;
    if config.recurrent_settings()?.eval_delays == EvalDelays::Original {
        eprintln!(
            "note: the export holds integer delays (σ = 0), which `eval` computes with recurrent.eval_delays=integer, not the configured `original`"
        );
    }
    let form = RecurrentEvalNetwork::of(&network, config.time_step_ms);
    match args.format {
        Format::Delays => crate::export::recurrent_delays::write(&form, config, &args.out)?,
        Format::Nir => crate::export::nir::write_recurrent(&form, &args.out)?,
        Format::StateDict => checkpoint::write_tensors(&args.out, &network.delrec_state_dict())?,
        Format::Netx => bail!(
            "lava-dl netx has no recurrent layer (its layer types are input, dense, conv and flatten), so a recurrent-delay network cannot be written as netx; use --format nir or delays"
        ),
    }
    let dense = |d: &EvalDense| nonzero(&d.weights);
    let synapses =
        form.blocks.iter().map(|b| dense(&b.dense) + b.recurrence.as_ref().map_or(0, |r| nonzero(&r.weights))).sum::<usize>()
            + dense(&form.readout.dense);
    let recurrent = form.blocks.iter().filter(|b| b.recurrence.is_some()).count();
    Ok((format!("{} blocks, {recurrent} recurrent, and a readout", form.blocks.len()), synapses))
}

fn nonzero(weights: &[f32]) -> usize {
    weights.iter().filter(|w| **w != 0.0).count()
}
