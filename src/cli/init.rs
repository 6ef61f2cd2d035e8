//! `snn-delays init`: writes the seeded initial weights (docs/method.md §1.6) as a reference
//! `state_dict`, e.g. to start the PyTorch reference from the same point.

use super::ConfigArgs;
use crate::checkpoint;
use crate::model::Network;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to write the state_dict (safetensors)
    #[arg(long, value_name = "W.safetensors")]
    out: PathBuf,
}

pub fn run(args: &InitArgs) -> Result<()> {
    let config = args.config.load_for_network(1, 1)?;
    let network = Network::new(&config, tch::Device::Cpu);
    checkpoint::save(&network.vs, &args.out)?;
    println!("wrote {} ({} trainable parameters, seed {})", args.out.display(), network.trainable_parameter_count(), config.seed);
    Ok(())
}
