//! `snn-delays init`: writes the seeded initial weights (docs/method.md §1.6) as a reference
//! `state_dict`, e.g. to start the PyTorch reference from the same point; for a recurrent-delay
//! model (`--preset delrec-ssc`, `delrec-shd`), its network's variables.

use super::ConfigArgs;
use crate::checkpoint;
use crate::config::ModelType;
use crate::model::recurrent::network::{RecurrentNetwork, RecurrentShape};
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
    let config = args.config.load()?;
    let (vs, parameters) = if config.model_type == ModelType::Delrec {
        let network = RecurrentNetwork::new(&RecurrentShape::of(&config)?, config.seed as i64, tch::Device::Cpu);
        let parameters = network.trainable_parameters();
        (network.vs, parameters)
    } else {
        let config = args.config.load_for_network(1, 1)?;
        let network = Network::new(&config, tch::Device::Cpu);
        let parameters = network.trainable_parameter_count();
        (network.vs, parameters)
    };
    checkpoint::save(&vs, &args.out)?;
    println!("wrote {} ({parameters} trainable parameters, seed {})", args.out.display(), config.seed);
    Ok(())
}
