//! `snn-delays schedule`: prints, for every epoch, the values in force while it trains: the
//! weights' learning rate and Adam β1, the positions' learning rate, and the sigma of the DCLS
//! kernels (§4.3, §4.6); for a recurrent-delay model, both groups' rates and β1 and the σ of each
//! epoch. The same code drives training; the parity tests compare it with PyTorch.

use super::ConfigArgs;
use crate::config::{Config, ModelType};
use crate::train::recurrent::RecurrentTrainer;
use crate::train::Trainer;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn run(args: &ScheduleArgs) -> Result<()> {
    let config = args.config.load()?;
    if config.model_type == ModelType::Delrec {
        return recurrent_schedule(&config);
    }
    let mut tiny = config.clone();
    tiny.n_hidden_neurons = 1;
    tiny.n_hidden_layers = 0;
    let mut trainer = Trainer::new(&tiny, tch::Device::Cpu);
    let mut rows = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        rows.push(serde_json::json!({
            "epoch": epoch,
            "lr_w": trainer.weights.lr,
            "beta1": trainer.weights.beta1,
            "lr_pos": trainer.lr_pos(),
            "sigma": trainer.output_sigma(),
        }));
        trainer.end_epoch(epoch);
    }
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}

/// The recurrent-delay protocol's values per epoch: both groups' rates and β1 (one-cycle cycles
/// the positions' too) and σ.
fn recurrent_schedule(config: &Config) -> Result<()> {
    let mut tiny = config.clone();
    tiny.n_hidden_neurons = 1;
    let mut trainer = RecurrentTrainer::new(&tiny, tch::Device::Cpu)?;
    let mut rows = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        trainer.begin_epoch(epoch);
        rows.push(serde_json::json!({
            "epoch": epoch,
            "lr_w": trainer.weights.lr,
            "beta1": trainer.weights.beta1,
            "lr_pos": trainer.positions.lr,
            "beta1_pos": trainer.positions.beta1,
            "sigma": trainer.sigma,
        }));
        trainer.end_epoch();
    }
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}
