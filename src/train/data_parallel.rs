//! One training step of a data-parallel run (docs/method.md, "Data-parallel training"): each
//! rank computes the gradients of its shard's loss weighted by its share `b_r/B` of the global
//! batch, so that their sum over the ranks is the gradient of the global batch's mean loss; one
//! all-reduce sums them, with the loss, the hits and the ranks' stop requests packed behind; then
//! every rank applies the same update. BatchNorm's global statistics are summed inside the
//! forward and backward ([`crate::model::global_norm`]).

use super::learner::Learner;
use super::optim::Adam;
use super::{check_finite, BatchResult};
use crate::distributed::Group;
use crate::model::loss::hits;
use crate::model::DropoutMasks;
use anyhow::Result;
use tch::{Kind, Tensor};

/// A step's result, and whether any rank asked to stop after it.
pub struct SyncedStep {
    pub result: BatchResult,
    pub stop: bool,
}

/// Gives every optimized parameter a (zero) gradient, so that a rank whose shard is empty still
/// has gradients to contribute before its first backward.
pub fn define_gradients(trainer: &dyn Learner) {
    let params: Vec<Tensor> = optimized(trainer).filter(|p| !p.grad().defined()).collect();
    if let Some(first) = params.first() {
        params[1..].iter().fold((first * 0.0).sum(Kind::Float), |sum, p| sum + (p * 0.0).sum(Kind::Float)).backward();
    }
}

/// Overwrites every parameter and buffer with rank 0's, so that all ranks start equal.
pub fn broadcast_state(trainer: &dyn Learner, group: &Group) -> Result<()> {
    tch::no_grad(|| crate::checkpoint::state_dict(trainer.vs()).iter().try_for_each(|(_, tensor)| group.broadcast(tensor)))
}

/// Trains on this rank's shard `(x, targets)` of a global batch of `global_batch` samples.
pub fn synced_step(
    trainer: &mut dyn Learner,
    group: &Group,
    shard: (&Tensor, &Tensor),
    masks: DropoutMasks,
    global_batch: usize,
    stop_requested: bool,
) -> Result<SyncedStep> {
    let (x, targets) = shard;
    trainer.zero_grad();
    let samples = targets.size()[0];
    let share = samples as f64 / global_batch as f64;
    let (loss, scores) = trainer.compute_gradients(x, targets, masks, Some(share))?;
    let hit_count = tch::no_grad(|| hits(&scores, targets).sum(Kind::Float));
    let stop = Tensor::full([], if stop_requested { 1.0 } else { 0.0 }, (Kind::Float, x.device()));
    let tail = Tensor::stack(&[loss * share, hit_count, stop], 0);
    let grads: Vec<Tensor> = optimized(trainer).map(|p| p.grad()).collect();
    let flat: Vec<Tensor> = grads.iter().map(|g| g.flatten(0, -1)).chain([tail.to_kind(Kind::Float)]).collect();
    let buffer = Tensor::cat(&flat, 0);
    group.sum(&buffer)?;
    let mut offset = 0;
    for grad in &grads {
        let n = grad.numel() as i64;
        grad.shallow_clone().copy_(&buffer.narrow(0, offset, n).view_as(grad));
        offset += n;
    }
    let totals = Vec::<f64>::try_from(buffer.narrow(0, offset, 3).to_kind(Kind::Double).to_device(tch::Device::Cpu))?;
    group.check()?;
    let loss = check_finite(totals[0])?;
    trainer.apply_gradients();
    let accuracy = Tensor::from(totals[1] / global_batch as f64);
    Ok(SyncedStep { result: BatchResult { loss, accuracy }, stop: totals[2] > 0.0 })
}

/// The parameters the optimizers step, in their order.
fn optimized(trainer: &dyn Learner) -> impl Iterator<Item = Tensor> + '_ {
    let (weights, positions) = trainer.optimizers();
    std::iter::once(weights).chain(positions).flat_map(Adam::params).map(|p| p.param.shallow_clone())
}
