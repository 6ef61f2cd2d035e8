//! Evaluation (docs/method.md §4.7): apply the eval transform (integer delays, the kernel built
//! once), run in eval mode (BatchNorm running statistics, no dropout) without gradients, restore
//! the training form. Per-batch losses and accuracies stay on the device until the end of the
//! pass; [`Scores`] holds their sample-weighted means (each sample counts once) and, for parity,
//! the reference's unweighted mean over batches (docs/method.md §3).

use crate::data::batches::batches;
use crate::data::Subset;
use crate::distributed::Group;
use crate::model::eval_form::EvalKernels;
use crate::model::loss::{class_scores, cross_entropy, hit_rate};
use crate::model::Network;
use crate::progress::{Progress, Unit};
use anyhow::Result;
use tch::{Kind, Reduction, Tensor};

/// A pass's loss and accuracy over `samples` samples.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Scores {
    /// Sample-weighted: `Σ_b n_b·loss_b / Σ_b n_b`, the mean loss per sample.
    pub loss: f64,
    /// Sample-weighted: the fraction of samples classified correctly.
    pub accuracy: f64,
    /// The reference's figure: the unweighted mean of per-batch losses.
    pub loss_batch_mean: f64,
    /// The reference's figure: the unweighted mean of per-batch accuracies, so that a smaller
    /// last batch weighs as much as a full one.
    pub accuracy_batch_mean: f64,
    pub samples: usize,
}

impl Scores {
    /// The scores of batches of `sizes` samples with per-batch `losses` and `accuracies`.
    pub fn from_batches(losses: &[f64], accuracies: &[f64], sizes: &[usize]) -> Scores {
        let samples = sizes.iter().sum::<usize>();
        let weighted =
            |values: &[f64]| values.iter().zip(sizes).map(|(value, &n)| value * n as f64).sum::<f64>() / samples as f64;
        Scores {
            loss: weighted(losses),
            accuracy: weighted(accuracies),
            loss_batch_mean: mean(losses),
            accuracy_batch_mean: mean(accuracies),
            samples,
        }
    }
}

/// How an evaluation pass runs and shows its progress.
pub struct Pass<'a> {
    pub batch_size: usize,
    pub classes: i64,
    /// The progress bar's label (the split).
    pub label: &'a str,
    /// No progress bar.
    pub quiet: bool,
}

pub fn evaluate(network: &Network, subset: &Subset, pass: &Pass) -> Result<Scores> {
    let kernels = network.eval_kernels();
    tch::no_grad(|| mean_scores(network, &kernels, subset, pass))
}

/// [`evaluate`] shared by the ranks of `group`: the same figures, up to summation order.
pub fn evaluate_sharded(network: &Network, subset: &Subset, pass: &Pass, group: &Group) -> Result<Scores> {
    let kernels = network.eval_kernels();
    tch::no_grad(|| sharded_scores(network, &kernels, subset, pass, group))
}

fn sharded_scores(network: &Network, kernels: &EvalKernels, subset: &Subset, pass: &Pass, group: &Group) -> Result<Scores> {
    let device = network.device();
    let (mut sums, mut sizes) = (Vec::new(), Vec::new());
    let progress = Progress::new(pass.label, subset.len() as u64, Unit::Items, pass.quiet);
    for batch in batches(subset, pass.batch_size, pass.classes, None) {
        let batch = batch?;
        let size = batch.lengths.len();
        progress.advance(size as u64);
        let rows = group.world.shard(size);
        let mut sum = Tensor::zeros([2], (Kind::Double, device));
        if !rows.is_empty() {
            let (start, len) = (rows.start as i64, rows.len() as i64);
            let x = batch.x.narrow(1, start, len).to_device(device);
            let targets = batch.targets.narrow(0, start, len).to_device(device);
            let scores = class_scores(&network.forward_eval(&x, kernels)?, network.loss);
            let losses = scores.cross_entropy_loss::<Tensor>(&targets, None, Reduction::None, -100, 0.0);
            let hits = scores.argmax(1, false).eq_tensor(&targets.argmax(1, false));
            sum = Tensor::stack(&[losses.sum(Kind::Double), hits.sum(Kind::Double)], 0);
        }
        sums.push(sum);
        sizes.push(size);
    }
    if sums.is_empty() {
        return Ok(Scores::from_batches(&[], &[], &[]));
    }
    let totals = Tensor::stack(&sums, 0);
    group.sum(&totals)?;
    let totals = Vec::<f64>::try_from(totals.to_device(tch::Device::Cpu).flatten(0, -1))?;
    let per_batch = |column: usize| totals.chunks(2).zip(&sizes).map(|(row, &n)| row[column] / n as f64).collect::<Vec<_>>();
    Ok(Scores::from_batches(&per_batch(0), &per_batch(1), &sizes))
}

fn mean_scores(network: &Network, kernels: &EvalKernels, subset: &Subset, pass: &Pass) -> Result<Scores> {
    let device = network.device();
    let (mut losses, mut accuracies, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    let progress = Progress::new(pass.label, subset.len() as u64, Unit::Items, pass.quiet);
    for batch in batches(subset, pass.batch_size, pass.classes, None) {
        let batch = batch?;
        progress.advance(batch.lengths.len() as u64);
        let targets = batch.targets.to_device(device);
        let output = network.forward_eval(&batch.x.to_device(device), kernels)?;
        let scores = class_scores(&output, network.loss);
        losses.push(cross_entropy(&scores, &targets));
        accuracies.push(hit_rate(&scores, &targets));
        sizes.push(batch.lengths.len());
    }
    Ok(Scores::from_batches(&read_all(&losses), &read_all(&accuracies), &sizes))
}

/// Unweighted mean (NaN for none).
fn mean(values: &[f64]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_last_batch_weighs_by_its_samples() {
        let scores = Scores::from_batches(&[1.0, 4.0], &[1.0, 0.0], &[3, 1]);
        assert_eq!((scores.loss, scores.accuracy, scores.samples), (1.75, 0.75, 4));
        assert_eq!((scores.loss_batch_mean, scores.accuracy_batch_mean), (2.5, 0.5));
    }
}
