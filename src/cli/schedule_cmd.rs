//! `snn-delays schedule`: prints, for every epoch, the values in force while it trains: the
//! weights' learning rate and Adam β1, the positions' learning rate, and the sigma of the DCLS
//! kernels (§4.3, §4.6). The same code drives training; the parity test compares it with PyTorch.

use super::ConfigArgs;
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
    config.check_feedforward()?;
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
