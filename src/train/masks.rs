//! Per-sample dropout masks (config `dropout_masks = per_sample`, docs/method.md §2.6 and
//! "Data-parallel training"): sample `i`'s mask for dropout `l` of a pass (a hidden layer's, or
//! for a recurrent-delay network each dropout in the order it takes them) during epoch `e` keeps
//! each of its `C` channels (value `1/(1−p)`) unless a uniform draw from its own SplitMix64
//! stream of `(seed, e, i, l)` falls below `p` (value 0). The mask depends on nothing else, so a
//! sample gets the same mask in any batch and on any rank.

use crate::data::rng::SplitMix64;
use tch::{Device, Tensor};

const DROPOUT_STREAM: u64 = 5;

/// One `(b, C)` mask per dropout of `plan` (its probability `p` and width `C`) for the samples
/// `indices` (their source indices).
pub fn per_sample_masks(seed: u64, epoch: u64, indices: &[usize], plan: &[(f64, usize)], device: Device) -> Vec<Option<Tensor>> {
    let dropouts = plan.len() as u64;
    plan.iter()
        .enumerate()
        .map(|(l, &(p, channels))| {
            let kept = (1.0 / (1.0 - p)) as f32;
            let mut values = Vec::with_capacity(indices.len() * channels);
            for &sample in indices {
                let stream = (sample as u64).wrapping_mul(dropouts).wrapping_add(l as u64);
                let mut rng = SplitMix64::derived(seed ^ epoch.rotate_left(32), DROPOUT_STREAM, stream);
                values.extend((0..channels).map(|_| if rng.uniform() < p { 0.0 } else { kept }));
            }
            Some(Tensor::from_slice(&values).reshape([indices.len() as i64, channels as i64]).to_device(device))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_keeps_its_mask_in_any_batch() {
        let plan = [(0.4, 256), (0.4, 256)];
        let whole = per_sample_masks(0, 3, &[7, 1, 4], &plan, Device::Cpu);
        let alone = per_sample_masks(0, 3, &[4], &plan, Device::Cpu);
        assert_eq!(whole.len(), 2);
        for (all, one) in whole.iter().zip(&alone) {
            assert!(all.as_ref().unwrap().get(2).equal(&one.as_ref().unwrap().get(0)));
        }
        let layer0 = whole[0].as_ref().unwrap();
        assert!(!layer0.get(0).equal(&layer0.get(1)), "different samples draw different masks");
        let dropped = layer0.eq(0.0).to_kind(tch::Kind::Float).mean(tch::Kind::Float).double_value(&[]);
        assert!((dropped - 0.4).abs() < 0.1, "{dropped}");
        let next_epoch = per_sample_masks(0, 4, &[4], &plan, Device::Cpu);
        assert!(!next_epoch[0].as_ref().unwrap().equal(alone[0].as_ref().unwrap()));
    }
}
