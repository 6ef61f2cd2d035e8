//! `snn-delays forward`: the parity tool. Loads a reference `state_dict`, runs one batch and
//! writes the output sequence, the loss and (with `--grad`) every trainable parameter's gradient.
//!
//! Input file keys: `x` (T, B, n_inputs) f32; optional `y` (B,) integer labels; optional
//! `mask.<l>` (B, H) dropout mask of hidden layer l. Output keys: `output`, `loss`, `grad.<key>`;
//! with `--record`, `current.<l>` (each neuron layer's input, the output layer last) and
//! `spikes.<l>` (each hidden layer's spikes).

use super::{ConfigArgs, DeviceArgs};
use crate::checkpoint;
use crate::config::Config;
use crate::model::loss::{class_scores, cross_entropy, one_hot};
use crate::model::{DropoutMasks, Network, Recording};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Weights: a state_dict with the reference key names (safetensors)
    #[arg(long, value_name = "W.safetensors")]
    weights: PathBuf,
    /// Input batch: `x`, optional `y` and `mask.<l>` (safetensors)
    #[arg(long, value_name = "X.safetensors")]
    input: PathBuf,
    /// Where to write `output`, `loss` and `grad.<key>` (safetensors)
    #[arg(long, value_name = "OUT.safetensors")]
    out: PathBuf,
    /// Also compute the gradient of the loss for every trainable parameter (needs `y`)
    #[arg(long)]
    grad: bool,
    /// Compute in eval mode, after the eval transform (integer delays, running BN statistics)
    #[arg(long)]
    eval: bool,
    /// Also write each neuron layer's input current (`current.<l>`, the output layer last) and
    /// each hidden layer's spikes (`spikes.<l>`)
    #[arg(long)]
    record: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// A parsed and checked input file.
struct Batch {
    x: Tensor,
    labels: Option<Tensor>,
    masks: Vec<Option<Tensor>>,
}

pub fn run(args: &ForwardArgs) -> Result<()> {
    for (flag, input) in [("--weights", &args.weights), ("--input", &args.input)] {
        ensure!(!super::same_file(&args.out, input), "--out {} is the {flag} file; choose another output", args.out.display());
    }
    let config = args.config.load_for_network(1, 1)?;
    let device = args.device.select()?;
    let network = Network::new(&config, device);
    checkpoint::load(&network.vs, &args.weights)?;
    let batch = read_batch(&args.input, &config, network.hidden.len())?;
    ensure!(!args.grad || batch.labels.is_some(), "--grad needs labels: {} has no `y`", args.input.display());
    ensure!(!(args.grad && args.eval), "--grad computes training-mode gradients; it cannot be combined with --eval");
    let x = batch.x.to_device(device);
    let mut record = Recording { on: args.record, ..Recording::default() };
    let pass = match args.eval {
        true => None,
        false => Some(network.forward_train_recording(&x, DropoutMasks(&batch.masks), &mut record)?),
    };
    let output = match &pass {
        Some(pass) => pass.output.shallow_clone(),
        None => network.forward_eval_recording(&x, &network.eval_kernels(), &mut record)?,
    };
    let mut results = vec![("output".to_string(), output.shallow_clone())];
    results.extend(record.currents.into_iter().enumerate().map(|(l, current)| (format!("current.{l}"), current)));
    results.extend(record.spikes.into_iter().enumerate().map(|(l, spikes)| (format!("spikes.{l}"), spikes)));
    if let Some(labels) = &batch.labels {
        let targets = one_hot(&labels.to_device(device), config.derived().n_outputs as i64);
        let loss = cross_entropy(&class_scores(&output, config.loss), &targets);
        if let (true, Some(pass)) = (args.grad, pass) {
            pass.backward(&loss)?;
            for (key, parameter) in network.named_trainable() {
                results.push((format!("grad.{key}"), parameter.grad()));
            }
        }
        results.push(("loss".to_string(), loss));
    }
    checkpoint::write_tensors(&args.out, &results)
}

fn read_batch(path: &Path, config: &Config, hidden_layers: usize) -> Result<Batch> {
    let mut tensors: BTreeMap<String, Tensor> = checkpoint::read_tensors(path)?.into_iter().collect();
    let derived = config.derived();
    let x = tensors.remove("x").with_context(|| format!("{} has no key `x`", path.display()))?;
    let shape = x.size();
    ensure!(
        shape.len() == 3 && shape[2] == derived.n_inputs as i64 && shape[0] > 0 && shape[1] > 0,
        "{}: `x` must have shape (T, B, {}), got {shape:?}",
        path.display(),
        derived.n_inputs
    );
    ensure!(x.is_floating_point(), "{}: `x` must be floating point, got {:?}", path.display(), x.kind());
    let batch = shape[1];
    let labels = tensors.remove("y").map(|y| check_labels(path, y, batch, derived.n_outputs as i64)).transpose()?;
    let mut masks: Vec<Option<Tensor>> = (0..hidden_layers).map(|_| None).collect();
    for (key, mask) in tensors {
        let layer = key.strip_prefix("mask.").and_then(|l| l.parse::<usize>().ok());
        match layer {
            Some(l) if l < hidden_layers => masks[l] = Some(mask),
            Some(l) => bail!("{}: `{key}` names hidden layer {l}, but the network has {hidden_layers}", path.display()),
            None => bail!("{}: unexpected key `{key}` (expected x, y, mask.<l>)", path.display()),
        }
    }
    Ok(Batch { x: x.to_kind(Kind::Float), labels, masks })
}

fn check_labels(path: &Path, y: Tensor, batch: i64, classes: i64) -> Result<Tensor> {
    ensure!(
        y.size() == [batch] && !y.is_floating_point(),
        "{}: `y` must be integer labels of shape ({batch},), got {:?} {:?}",
        path.display(),
        y.kind(),
        y.size()
    );
    let y = y.to_kind(Kind::Int64);
    let values = Vec::<i64>::try_from(&y)?;
    if let Some((sample, label)) = values.iter().enumerate().find(|(_, &l)| !(0..classes).contains(&l)) {
        bail!("{}: `y` of sample {sample} is {label}, outside 0..{classes}", path.display());
    }
    Ok(y)
}
