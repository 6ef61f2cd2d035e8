//! Evaluation (docs/method.md §4.7): apply the eval transform (integer delays, the kernel built
//! once), run in eval mode (BatchNorm running statistics, no dropout) without gradients, restore
//! the training form. The result is the unweighted mean of per-batch losses and accuracies, as in
//! the reference; they stay on the device until the end of the pass.

use crate::data::batches::batches;
use crate::data::Subset;
use crate::model::loss::{class_scores, cross_entropy, hit_rate};
use crate::model::Network;
use anyhow::Result;
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Scores {
    pub loss: f64,
    pub accuracy: f64,
}

pub fn evaluate(network: &mut Network, subset: &Subset, batch_size: usize, classes: i64) -> Result<Scores> {
    let form = network.to_eval_form();
    let result = tch::no_grad(|| mean_scores(network, subset, batch_size, classes));
    network.restore(form);
    result
}

fn mean_scores(network: &Network, subset: &Subset, batch_size: usize, classes: i64) -> Result<Scores> {
    let device = network.device();
    let (mut losses, mut accuracies) = (Vec::new(), Vec::new());
    for batch in batches(subset, batch_size, classes, None) {
        let batch = batch?;
        let targets = batch.targets.to_device(device);
        let output = network.forward_eval(&batch.x.to_device(device))?;
        let scores = class_scores(&output, network.loss);
        losses.push(cross_entropy(&scores, &targets));
        accuracies.push(hit_rate(&scores, &targets));
    }
    Ok(Scores { loss: mean(&read_all(&losses)), accuracy: mean(&read_all(&accuracies)) })
}

/// Unweighted mean (NaN for none).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Reads 0-dim tensors, on any device, in one transfer.
pub fn read_all(values: &[Tensor]) -> Vec<f64> {
    if values.is_empty() {
        return Vec::new();
    }
    let stacked = Tensor::stack(values, 0).to_kind(Kind::Double).to_device(tch::Device::Cpu);
    Vec::<f64>::try_from(stacked).expect("a float64 CPU tensor converts")
}
