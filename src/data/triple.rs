//! DelRec's SHD training augmentation (docs/method.md "Recurrent delays", data): an epoch sees
//! every training sample three times, shuffled together: items `0..n` as they are, `n..2n`
//! shifted, `2n..3n` blended.
//!
//! - **Shifted**: input channel c moves by its own `s_c ~ U{−S..S}` steps (S = 100), zero fill,
//!   the length kept: `x'[t, c] = x[t − s_c, c]`.
//! - **Blended**: a partner is drawn uniformly from the other training samples of the class. The
//!   two are aligned by `d = round(μ_a − μ_b)` (half to even), where `μ = Σ_t t·m_t / Σ_t m_t`
//!   is the centre of mass of the step totals `m_t` (0 for an empty sample): the partner is
//!   delayed by `d` steps, or the sample by `−d`, and both are zero-padded to the longer. Each is
//!   thinned, every count rounded (half to even) then drawn `Binomial(n, 1/2)`, and the two are
//!   summed. A sample alone in its class is shifted instead.
//!
//! Each item draws from the seeded [`SplitMix64`] stream of (seed, epoch, item), not NumPy's.

use super::frames::Frames;
use super::rng::SplitMix64;
use super::Subset;
use std::collections::HashMap;

const TRIPLE_STREAM: u64 = 6;
/// The largest shift, in steps.
pub const SHIFT_MAX: usize = 100;

/// What an item is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Original,
    Shifted,
    /// Blended with this source sample.
    Blended(usize),
}

/// One item of a tripled epoch: its source sample, its variant, and its generator.
#[derive(Debug)]
pub struct Item {
    pub sample: usize,
    pub variant: Variant,
    rng: SplitMix64,
}

/// A tripled epoch of a subset.
#[derive(Debug)]
pub struct Tripling {
    seed: u64,
    epoch: u64,
    /// The subset's source samples by class.
    by_class: HashMap<i64, Vec<usize>>,
}

impl Tripling {
    pub fn new(subset: &Subset, seed: u64, epoch: u64) -> Tripling {
        let mut by_class: HashMap<i64, Vec<usize>> = HashMap::new();
        for (&index, label) in subset.indices.iter().zip(subset.labels()) {
            by_class.entry(label).or_default().push(index);
        }
        Tripling { seed, epoch, by_class }
    }

    /// Item `item` of the `3·len(subset)` items.
    pub fn item(&self, subset: &Subset, item: usize) -> Item {
        let n = subset.len();
        let sample = subset.indices[item % n];
        let mut rng = SplitMix64::derived(self.seed ^ self.epoch.rotate_left(32), TRIPLE_STREAM, item as u64);
        let variant = match item / n {
            0 => Variant::Original,
            1 => Variant::Shifted,
            _ => {
                let label = subset.source.labels()[sample];
                let others: Vec<usize> = self.by_class[&label].iter().copied().filter(|&s| s != sample).collect();
                if others.is_empty() {
                    Variant::Shifted
                } else {
                    Variant::Blended(others[rng.below(others.len())])
                }
            }
        };
        Item { sample, variant, rng }
    }
}

impl Item {
    /// The item's frames from its sample's and (for a blend) its partner's.
    pub fn frames(mut self, sample: Frames, partner: Option<&Frames>) -> Frames {
        match (self.variant, partner) {
            (Variant::Shifted, _) | (Variant::Blended(_), None) => shifted(&sample, &mut self.rng),
            (Variant::Blended(_), Some(partner)) => blended(&sample, partner, &mut self.rng),
            (Variant::Original, _) => sample,
        }
    }
}

/// Each channel moved by its own shift in `−S..=S`, zero fill.
fn shifted(x: &Frames, rng: &mut SplitMix64) -> Frames {
    let shifts: Vec<i64> = (0..x.channels).map(|_| rng.below(2 * SHIFT_MAX + 1) as i64 - SHIFT_MAX as i64).collect();
    let mut values = vec![0f32; x.values.len()];
    for t in 0..x.steps as i64 {
        for (c, &shift) in shifts.iter().enumerate() {
            let source = t - shift;
            if (0..x.steps as i64).contains(&source) {
                values[t as usize * x.channels + c] = x.values[source as usize * x.channels + c];
            }
        }
    }
    Frames { steps: x.steps, channels: x.channels, values }
}

/// `μ = Σ_t t·m_t / Σ_t m_t`, 0 when the sample is empty.
fn centre_of_mass(x: &Frames) -> f64 {
    let (mut moment, mut mass) = (0f64, 0f64);
    for (t, row) in x.values.chunks_exact(x.channels.max(1)).enumerate() {
        let total: f64 = row.iter().map(|&v| f64::from(v)).sum();
        moment += t as f64 * total;
        mass += total;
    }
    if mass > 0.0 {
        moment / mass
    } else {
        0.0
    }
}

/// The thinned sum of the sample and its partner, aligned by their centres of mass.
fn blended(a: &Frames, b: &Frames, rng: &mut SplitMix64) -> Frames {
    let d = (centre_of_mass(a) - centre_of_mass(b)).round_ties_even() as i64;
    let (delay_a, delay_b) = (d.min(0).unsigned_abs() as usize, d.max(0) as usize);
    let steps = (a.steps + delay_a).max(b.steps + delay_b);
    let channels = a.channels;
    let mut values = vec![0f32; steps * channels];
    for (x, delay) in [(a, delay_a), (b, delay_b)] {
        for (k, &v) in x.values.iter().enumerate() {
            values[delay * channels + k] += thinned(v, rng);
        }
    }
    Frames { steps, channels, values }
}

/// `Binomial(round(v), 1/2)`: the count of ones among `round(v)` fair bits.
fn thinned(v: f32, rng: &mut SplitMix64) -> f32 {
    let mut n = v.round_ties_even().max(0.0) as u64;
    let mut kept = 0u32;
    while n > 0 {
        let bits = n.min(64);
        let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        kept += (rng.next_u64() & mask).count_ones();
        n -= bits;
    }
    kept as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(steps: usize, channels: usize, values: &[f32]) -> Frames {
        Frames { steps, channels, values: values.to_vec() }
    }

    #[test]
    fn a_shift_moves_each_channel_alone_and_keeps_the_length() {
        let x = frames(300, 2, &(0..600).map(|k| (k % 2) as f32 + 1.0).collect::<Vec<_>>());
        let mut rng = SplitMix64::new(3);
        let y = shifted(&x, &mut rng);
        assert_eq!((y.steps, y.channels), (300, 2));
        let mut again = SplitMix64::new(3);
        let shifts: Vec<i64> = (0..2).map(|_| again.below(201) as i64 - 100).collect();
        for (c, shift) in shifts.iter().enumerate() {
            let kept = (0..300).filter(|t| y.values[t * 2 + c] != 0.0).count() as i64;
            assert_eq!(kept, 300 - shift.abs(), "channel {c} shifted by {shift}");
            assert!((0..300).all(|t| y.values[t * 2 + c] == 0.0 || y.values[t * 2 + c] == (c + 1) as f32));
        }
    }

    #[test]
    fn centres_of_mass_align_a_blend_and_thinning_halves_the_counts() {
        let a = frames(4, 1, &[0.0, 0.0, 0.0, 1000.0]);
        let b = frames(2, 1, &[1000.0, 0.0]);
        assert_eq!((centre_of_mass(&a), centre_of_mass(&b), centre_of_mass(&frames(2, 1, &[0.0, 0.0]))), (3.0, 0.0, 0.0));
        let y = blended(&a, &b, &mut SplitMix64::new(1));
        assert_eq!((y.steps, y.values[..3].to_vec()), (5, vec![0.0; 3]), "b is delayed by 3 steps onto a");
        assert!((y.values[3] - 1000.0).abs() < 100.0, "two halves of 1000 sum to about 1000: {}", y.values[3]);
        let z = blended(&b, &a, &mut SplitMix64::new(1));
        assert_eq!((z.steps, z.values[3] > 800.0), (5, true), "the earlier sample is delayed instead");
        let mut rng = SplitMix64::new(9);
        let draws: Vec<f32> = (0..2000).map(|_| thinned(3.4, &mut rng)).collect();
        assert!(draws.iter().all(|&k| (0.0..=3.0).contains(&k)), "round(3.4) = 3 trials");
        let mean = draws.iter().sum::<f32>() / 2000.0;
        assert!((mean - 1.5).abs() < 0.1, "Binomial(3, 1/2) has mean 1.5: {mean}");
        let many = thinned(200.0, &mut rng);
        assert!((60.0..=140.0).contains(&many), "Binomial(200, 1/2) beyond 64 bits: {many}");
    }
}
