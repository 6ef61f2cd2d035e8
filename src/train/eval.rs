//! Evaluation (semantics.md §4.7): apply the eval transform (integer delays), run in eval mode
//! (BatchNorm running statistics, no dropout) without gradients, restore the training form.
//! The result is the unweighted mean of per-batch losses and accuracies, as in the reference.

use crate::data::batches::batches;
use crate::data::Subset;
use crate::model::loss::{accuracy, class_scores, cross_entropy};
use crate::model::{DropoutMasks, Network};
use anyhow::Result;

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
        let output = network.forward(&batch.x.to_device(device), false, DropoutMasks::DRAW)?;
        let scores = class_scores(&output, network.loss);
        losses.push(cross_entropy(&scores, &targets).double_value(&[]));
        accuracies.push(accuracy(&scores, &targets));
    }
    Ok(Scores { loss: mean(&losses), accuracy: mean(&accuracies) })
}

/// Unweighted mean (NaN for none).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}
