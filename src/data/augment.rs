//! Training augmentations (docs/method.md §5.7), applied to a batch `(T, B, C)` and its targets:
//! - TimeNeurons mask, per sample: with probability p zero `size ~ U[0, time_mask_size)` steps
//!   from `ind ~ U[0, T − time_mask_size)`; then, independently with probability p, zero
//!   `size ~ U[0, neuron_mask_size)` inputs from `ind ~ U[0, C − neuron_mask_size)`;
//! - CutMix, for i = 0..B−2 with j = i+1 and probability q: `λ ~ U(0,1)`, `cut = ⌊λ·T⌋`,
//!   copy steps `ind .. ind+cut` of sample j into sample i and set `y_i = (1−λ)·y_i + λ·y_j`;
//! - RNoise: add `|round(N(0, σ))|` to every input.
//!
//! Draws come from the seeded [`SplitMix64`] stream of (seed, epoch, batch), not NumPy's.

use super::batches::Batch;
use super::rng::SplitMix64;
use tch::{Kind, Tensor};

const AUGMENT_STREAM: u64 = 2;

/// The augmentation settings of a run.
#[derive(Clone, Copy, Debug)]
pub struct Augment {
    pub time_neuron_proba: f64,
    pub time_mask_size: usize,
    pub neuron_mask_size: usize,
    pub cutmix_proba: f64,
    pub rnoise_sigma: f64,
}

impl Augment {
    pub fn from_config(config: &crate::config::Config) -> Augment {
        let derived = config.derived();
        Augment {
            time_neuron_proba: config.tn_mask_aug_proba,
            time_mask_size: derived.time_mask_size,
            neuron_mask_size: derived.neuron_mask_size,
            cutmix_proba: config.cutmix_aug_proba,
            rnoise_sigma: config.rnoise_sig,
        }
    }

    /// Whether [`Augment::apply`] draws from the torch generator (RNoise does), so that it must run
    /// where the training step draws, in the same order; the other augmentations draw only from
    /// their own seeded stream and may run on any thread.
    pub fn draws_from_torch(&self) -> bool {
        self.rnoise_sigma > 0.0
    }

    /// Augments a batch in place, deterministically for `(seed, epoch, batch_index)`.
    pub fn apply(&self, batch: &mut Batch, seed: u64, epoch: u64, batch_index: u64) {
        let mut rng = SplitMix64::derived(seed ^ epoch.rotate_left(32), AUGMENT_STREAM, batch_index);
        tch::no_grad(|| {
            self.time_neuron_mask(&mut batch.x, &mut rng);
            self.cutmix(&mut batch.x, &mut batch.targets, &mut rng);
            if self.rnoise_sigma > 0.0 {
                let noise = (Tensor::randn(batch.x.size(), (Kind::Float, batch.x.device())) * self.rnoise_sigma).round().abs();
                batch.x += noise;
            }
        });
    }

    fn time_neuron_mask(&self, x: &mut Tensor, rng: &mut SplitMix64) {
        let (steps, batch, channels) = (x.size()[0] as usize, x.size()[1], x.size()[2] as usize);
        for b in 0..batch {
            if rng.uniform() < self.time_neuron_proba {
                let size = rng.below(self.time_mask_size);
                let start = rng.below(steps.saturating_sub(self.time_mask_size));
                let size = size.min(steps - start);
                let _ = x.narrow(0, start as i64, size as i64).select(1, b).fill_(0.0);
            }
            if rng.uniform() < self.time_neuron_proba {
                let size = rng.below(self.neuron_mask_size);
                let start = rng.below(channels.saturating_sub(self.neuron_mask_size));
                let size = size.min(channels - start);
                let _ = x.select(1, b).narrow(1, start as i64, size as i64).fill_(0.0);
            }
        }
    }

    fn cutmix(&self, x: &mut Tensor, targets: &mut Tensor, rng: &mut SplitMix64) {
        let (steps, batch) = (x.size()[0] as usize, x.size()[1]);
        for i in 0..batch - 1 {
            if rng.uniform() >= self.cutmix_proba {
                continue;
            }
            let lambda = rng.uniform();
            let cut = (lambda * steps as f64) as usize;
            let start = rng.below(steps - cut) as i64;
            let source = x.narrow(0, start, cut as i64).select(1, i + 1).copy();
            x.narrow(0, start, cut as i64).select(1, i).copy_(&source);
            let mixed = targets.get(i) * (1.0 - lambda) + targets.get(i + 1) * lambda;
            targets.get(i).copy_(&mixed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The SHD mask sizes with the given probabilities and RNoise sigma.
    fn augment(time_neuron_proba: f64, cutmix_proba: f64, rnoise_sigma: f64) -> Augment {
        Augment { time_neuron_proba, time_mask_size: 8, neuron_mask_size: 28, cutmix_proba, rnoise_sigma }
    }

    fn batch() -> Batch {
        let x = Tensor::ones([30, 6, 140], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5]);
        let targets = labels.one_hot(6).to_kind(Kind::Float);
        Batch { x, labels, targets, lengths: vec![30; 6], indices: (0..6).collect() }
    }

    #[test]
    fn masks_zero_inputs_and_cutmix_keeps_targets_normalised() {
        let augment = augment(1.0, 1.0, 0.0);
        let mut b = batch();
        augment.apply(&mut b, 0, 0, 0);
        assert!(b.x.sum(Kind::Float).double_value(&[]) < 30.0 * 6.0 * 140.0);
        let sums = b.targets.sum_dim_intlist(1, false, None::<Kind>);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
        assert!(b.targets.get(0).double_value(&[1]) > 0.0);
        let mut again = batch();
        augment.apply(&mut again, 0, 0, 0);
        assert!(again.x.equal(&b.x), "same seed, same augmentation");
    }

    #[test]
    fn rnoise_adds_non_negative_whole_numbers_of_the_expected_size() {
        let augment = augment(0.0, 0.0, 2.0);
        let mut b = batch();
        augment.apply(&mut b, 0, 0, 0);
        let noise = &b.x - 1.0;
        assert_eq!(noise.min().double_value(&[]), 0.0);
        assert!(noise.equal(&noise.round()), "whole numbers");
        let mean = noise.mean(Kind::Double).double_value(&[]);
        assert!((1.5..1.7).contains(&mean), "E|round(N(0, 2))| is about 1.6, got {mean}");
    }
}
