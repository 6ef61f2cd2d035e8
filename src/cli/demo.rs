//! `snn-delays demo`: one training-mode forward and backward pass on a generated batch of
//! spike counts, printing the loss, the trainable parameter count and the timings.

use super::{ConfigArgs, DeviceArgs};
use crate::config::name_of;
use crate::model::loss::{accuracy, class_scores, cross_entropy, one_hot};
use crate::model::{DropoutMasks, Network};
use anyhow::{ensure, Result};
use clap::Args;
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Time steps of the generated batch
    #[arg(long, default_value_t = 100)]
    steps: i64,
    /// Samples in the generated batch [default: the config's batch_size]
    #[arg(long)]
    batch: Option<i64>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let batch = args.batch.unwrap_or(args.config.load()?.batch_size as i64);
    ensure!(args.steps > 0 && batch > 0, "--steps and --batch must be positive");
    let config = args.config.load_for_network(args.steps as usize, batch as usize)?;
    let derived = config.derived();
    let device = args.device.select()?;
    let network = Network::new(&config, device);
    let inputs = derived.n_inputs as i64;
    let x = Tensor::rand([args.steps, batch, inputs, config.n_bins as i64], (Kind::Float, device)).lt(0.05).sum_dim_intlist(
        3,
        false,
        Kind::Float,
    );
    let labels = Tensor::randint(derived.n_outputs as i64, [batch], (Kind::Int64, device));
    let targets = one_hot(&labels, derived.n_outputs as i64);

    let started = Instant::now();
    let pass = network.forward_train(&x, DropoutMasks::DRAW)?;
    let output = pass.output.shallow_clone();
    let scores = class_scores(&output, config.loss);
    let loss = cross_entropy(&scores, &targets);
    let forward_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    pass.backward(&loss)?;
    let backward_seconds = started.elapsed().as_secs_f64();

    println!(
        "{} preset, model {}, {} hidden layers of {}",
        name_of(&config.dataset),
        name_of(&config.model_type),
        config.n_hidden_layers,
        config.n_hidden_neurons
    );
    println!("trainable parameters: {}", network.trainable_parameter_count());
    println!("input (T, B, C) = {:?} of spike counts -> output {:?}", x.size(), output.size());
    println!("loss: {:.6}   accuracy: {:.4}", loss.double_value(&[]), accuracy(&scores, &targets));
    for (name, group) in [("weights", network.parameter_groups().weights), ("positions", network.parameter_groups().positions)] {
        let norms: Vec<String> = group.iter().map(|p| format!("{:.3e}", p.grad().norm().double_value(&[]))).collect();
        if !norms.is_empty() {
            println!("gradient norm of {name} per layer: {}", norms.join(", "));
        }
    }
    println!("forward {forward_seconds:.2} s, backward {backward_seconds:.2} s on {}", crate::device::name(device));
    Ok(())
}
