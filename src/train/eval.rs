//! Evaluation (docs/method.md §4.7): apply the eval transform (integer delays, the kernel built
//! once), run in eval mode (BatchNorm running statistics, no dropout) without gradients, restore
//! the training form. Batches are made one ahead on a helper thread, cut to this process's shard
//! and pinned for a non-blocking copy ([`crate::data::prefetch`]). Per-batch losses and
//! accuracies stay on the device until the end of the pass: a pass reads the device once.
//! [`Scores`] holds their sample-weighted means (each sample counts once) and, for parity, the
//! reference's unweighted mean over batches (docs/method.md §3). With [`Pass::per_sample`] each
//! sample runs on its own steps instead of its batch's padded length, as the deployment engine
//! runs it (docs/method.md, "Deployment").

use crate::data::batches::batches;
use crate::data::prefetch::{prefetched, to_device, StagedBatch};
use crate::data::Subset;
use crate::distributed::Group;
use crate::model::loss::{class_scores, cross_entropy, hit_rate, hits, sample_cross_entropy};
use crate::model::Network;
use crate::progress::{Progress, Unit};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

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

    /// The scores of samples each evaluated on its own: the reference's means over batches are
    /// then means over batches of one, the sample-weighted figures.
    pub fn of_single_samples(self) -> Scores {
        Scores { loss_batch_mean: self.loss, accuracy_batch_mean: self.accuracy, ..self }
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
    /// Each sample on its own (its own length and the network's tail, never the batch's
    /// padding), as a deployed model runs; otherwise the reference's padded batches.
    pub per_sample: bool,
}

/// Evaluates `subset`. With a group, each rank evaluates its shard of every batch and the
/// per-batch sums are added over the ranks: the figures of one process, up to summation order.
pub fn evaluate(network: &Network, subset: &Subset, pass: &Pass, group: Option<&Group>) -> Result<Scores> {
    let kernels = network.eval_kernels();
    let score = |x: &Tensor| Ok(class_scores(&network.forward_eval(x, &kernels)?, network.loss));
    evaluate_with(network.device(), &score, subset, pass, group)
}

/// Maps an input `(T, B, C)` on the device to class scores `(B, classes)`.
pub type ScoreFn<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// [`evaluate`] for any model, given as its function from inputs to class scores.
pub fn evaluate_with(device: Device, score: &ScoreFn, subset: &Subset, pass: &Pass, group: Option<&Group>) -> Result<Scores> {
    tch::no_grad(|| pass_scores(device, score, subset, pass, group))
}

fn pass_scores(device: Device, score: &ScoreFn, subset: &Subset, pass: &Pass, group: Option<&Group>) -> Result<Scores> {
    let (mut figures, mut sizes) = (Vec::new(), Vec::new());
    let progress = Progress::new(pass.label, subset.len() as u64, Unit::Items, pass.quiet);
    let world = group.map(|g| g.world.clone());
    let stage = |_, batch: crate::data::batches::Batch| {
        let rows = world.as_ref().map(|w| w.shard(batch.lengths.len()));
        Ok(StagedBatch::of(batch, rows, device))
    };
    prefetched(batches(subset, pass.batch_size, pass.classes, None), stage, |_, staged: StagedBatch| {
        progress.advance(staged.size as u64);
        figures.push(match (group, pass.per_sample) {
            (_, true) => per_sample_sums(device, score, &staged)?,
            (None, false) => batch_means(device, score, &staged)?,
            (Some(_), false) => shard_sums(device, score, &staged)?,
        });
        sizes.push(staged.size);
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    if figures.is_empty() {
        return Ok(Scores::from_batches(&[], &[], &[]));
    }
    let mut table = Tensor::stack(&figures, 0);
    if let Some(group) = group {
        group.sum(&table)?;
    }
    if group.is_some() || pass.per_sample {
        let counts: Vec<f64> = sizes.iter().map(|&n| n as f64).collect();
        let counts = Tensor::from_slice(&counts).to_device(table.device()).unsqueeze(1);
        table /= counts;
    }
    let values = Vec::<f64>::try_from(table.to_device(tch::Device::Cpu).flatten(0, -1))?;
    if let Some(group) = group {
        group.check()?;
    }
    let column = |c: usize| values.chunks(2).map(|row| row[c]).collect::<Vec<_>>();
    let scores = Scores::from_batches(&column(0), &column(1), &sizes);
    Ok(if pass.per_sample { scores.of_single_samples() } else { scores })
}

/// The class scores of a staged batch, on `device`, and its targets there.
fn scores(device: Device, score: &ScoreFn, staged: &StagedBatch) -> Result<(Tensor, Tensor)> {
    Ok((score(&to_device(&staged.x, device))?, to_device(&staged.targets, device)))
}

/// A whole batch's mean loss and accuracy, `[2]` float64.
fn batch_means(device: Device, score: &ScoreFn, staged: &StagedBatch) -> Result<Tensor> {
    let (scores, targets) = scores(device, score, staged)?;
    Ok(Tensor::stack(&[cross_entropy(&scores, &targets).to_kind(Kind::Double), hit_rate(&scores, &targets)], 0))
}

/// The summed loss and hits of this process's rows of a batch, each sample run on its own
/// steps: the samples of one length together, cut to it. `[2]` float64.
fn per_sample_sums(device: Device, score: &ScoreFn, staged: &StagedBatch) -> Result<Tensor> {
    let (x, targets) = (to_device(&staged.x, device), to_device(&staged.targets, device));
    let mut sums = Tensor::zeros([2], (Kind::Double, device));
    for (length, rows) in rows_by_length(&staged.lengths) {
        let rows = Tensor::from_slice(&rows).to_device(device);
        let scores = score(&x.narrow(0, 0, length).index_select(1, &rows))?;
        let targets = targets.index_select(0, &rows);
        let losses = sample_cross_entropy(&scores, &targets);
        sums += Tensor::stack(&[losses.sum(Kind::Double), hits(&scores, &targets).sum(Kind::Double)], 0);
    }
    Ok(sums)
}

/// The rows of each distinct length, shortest first.
fn rows_by_length(lengths: &[usize]) -> Vec<(i64, Vec<i64>)> {
    let mut groups = std::collections::BTreeMap::<i64, Vec<i64>>::new();
    for (row, &length) in lengths.iter().enumerate() {
        groups.entry(length as i64).or_default().push(row as i64);
    }
    groups.into_iter().collect()
}

/// The summed loss and hits of this process's rows of a batch, `[2]` float64 (zeros for none).
fn shard_sums(device: Device, score: &ScoreFn, staged: &StagedBatch) -> Result<Tensor> {
    if staged.targets.size()[0] == 0 {
        return Ok(Tensor::zeros([2], (Kind::Double, device)));
    }
    let (scores, targets) = scores(device, score, staged)?;
    let losses = sample_cross_entropy(&scores, &targets);
    Ok(Tensor::stack(&[losses.sum(Kind::Double), hits(&scores, &targets).sum(Kind::Double)], 0))
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
