//! Batches (docs/method.md §5.4): samples zero-padded at the end to the batch's longest, laid out
//! `(T_max, B, C)` for the network, with int64 labels, float targets (one-hot, or soft after
//! CutMix) and the original lengths. The order is shuffled per epoch from the seed; the last
//! partial batch is kept. Each batch's samples are framed in parallel. A tripled epoch
//! ([`tripled_batches`]) holds each sample as it is, shifted and blended ([`super::triple`]).

use super::frames::Frames;
use super::rng::SplitMix64;
use super::triple::{Item, Tripling, Variant};
use super::Subset;
use anyhow::Result;
use std::ops::Range;
use tch::Tensor;

/// Data-order stream of the generator, kept apart from augmentation and hold-out streams.
const ORDER_STREAM: u64 = 1;

#[derive(Debug)]
pub struct Batch {
    pub x: Tensor,
    pub labels: Tensor,
    pub targets: Tensor,
    pub lengths: Vec<usize>,
    /// The samples' indices in their source, in batch order.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Inputs `(T_max, b, C)` and targets `(b, classes)` of the samples at `rows`, contiguous:
    /// a rank's shard, padded as the whole batch is.
    pub fn rows(&self, rows: Range<usize>) -> (Tensor, Tensor) {
        let (start, len) = (rows.start as i64, rows.len() as i64);
        (self.x.narrow(1, start, len).contiguous(), self.targets.narrow(0, start, len).contiguous())
    }
}

/// Pads the frames of the samples `indices` to the longest and stacks them as `(T_max, B, C)`.
pub fn collate(frames: &[Frames], indices: &[usize], labels: &[i64], classes: i64) -> Batch {
    let batch = frames.len();
    let channels = frames.first().map_or(0, |f| f.channels);
    let steps = frames.iter().map(|f| f.steps).max().unwrap_or(0);
    let mut values = vec![0.0f32; steps * batch * channels];
    for (b, sample) in frames.iter().enumerate() {
        for (t, row) in sample.values.chunks(channels.max(1)).enumerate() {
            let start = (t * batch + b) * channels;
            values[start..start + channels].copy_from_slice(row);
        }
    }
    let x = Tensor::from_slice(&values).reshape([steps as i64, batch as i64, channels as i64]);
    let mut one_hot = vec![0.0f32; batch * classes as usize];
    for (b, &label) in labels.iter().enumerate() {
        one_hot[b * classes as usize + label as usize] = 1.0;
    }
    let targets = Tensor::from_slice(&one_hot).reshape([batch as i64, classes]);
    let lengths = frames.iter().map(|f| f.steps).collect();
    Batch { x, labels: Tensor::from_slice(labels), targets, lengths, indices: indices.to_vec() }
}

/// Iterates over the batches of a subset.
pub struct Batches<'a> {
    subset: &'a Subset,
    /// Source indices, or the items of a [`Tripling`].
    order: Vec<usize>,
    batch_size: usize,
    classes: i64,
    next: usize,
    tripling: Option<Tripling>,
}

/// Batches in subset order, or shuffled for `(seed, epoch)`.
pub fn batches(subset: &Subset, batch_size: usize, classes: i64, shuffle: Option<(u64, u64)>) -> Batches<'_> {
    let mut order = subset.indices.clone();
    if let Some((seed, epoch)) = shuffle {
        SplitMix64::derived(seed, ORDER_STREAM, epoch).shuffle(&mut order);
    }
    Batches { subset, order, batch_size: batch_size.max(1), classes, next: 0, tripling: None }
}

/// Batches of the tripled epoch `epoch` (DelRec's SHD augmentation, [`super::triple`]): its
/// `3·len(subset)` items shuffled for `(seed, epoch)`.
pub fn tripled_batches(subset: &Subset, batch_size: usize, classes: i64, seed: u64, epoch: u64) -> Batches<'_> {
    let mut order: Vec<usize> = (0..3 * subset.len()).collect();
    SplitMix64::derived(seed, ORDER_STREAM, epoch).shuffle(&mut order);
    let tripling = Some(Tripling::new(subset, seed, epoch));
    Batches { subset, order, batch_size: batch_size.max(1), classes, next: 0, tripling }
}

impl Batches<'_> {
    pub fn batch_count(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// The frames of a tripled epoch's `items` and their source indices.
    fn tripled(&self, tripling: &Tripling, items: &[usize]) -> Result<(Vec<Frames>, Vec<usize>)> {
        let items: Vec<Item> = items.iter().map(|&item| tripling.item(self.subset, item)).collect();
        let samples: Vec<usize> = items.iter().map(|item| item.sample).collect();
        let partners: Vec<usize> = items
            .iter()
            .filter_map(|item| match item.variant {
                Variant::Blended(partner) => Some(partner),
                _ => None,
            })
            .collect();
        let mut partner_frames = self.subset.source.frames(&partners)?.into_iter();
        let frames = self.subset.source.frames(&samples)?;
        let made = items
            .into_iter()
            .zip(frames)
            .map(|(item, frames)| {
                let partner = matches!(item.variant, Variant::Blended(_)).then(|| partner_frames.next()).flatten();
                item.frames(frames, partner.as_ref())
            })
            .collect();
        Ok((made, samples))
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let chosen = &self.order[self.next..end];
        self.next = end;
        let made = match &self.tripling {
            Some(tripling) => self.tripled(tripling, chosen),
            None => self.subset.source.frames(chosen).map(|frames| (frames, chosen.to_vec())),
        };
        let all_labels = self.subset.source.labels();
        Some(made.map(|(frames, indices)| {
            let labels: Vec<i64> = indices.iter().map(|&i| all_labels[i]).collect();
            collate(&frames, &indices, &labels, self.classes)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collate_pads_at_the_end_in_time_major_layout() {
        let a = Frames { steps: 2, channels: 3, values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        let b = Frames { steps: 1, channels: 3, values: vec![7.0, 8.0, 9.0] };
        let batch = collate(&[a, b], &[7, 3], &[1, 0], 2);
        assert_eq!(batch.x.size(), [2, 2, 3]);
        let values = Vec::<f32>::try_from(batch.x.flatten(0, -1)).unwrap();
        assert_eq!(values, vec![1.0, 2.0, 3.0, 7.0, 8.0, 9.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0]);
        assert_eq!(batch.lengths, vec![2, 1]);
        assert_eq!(batch.indices, vec![7, 3]);
        assert_eq!(Vec::<f32>::try_from(batch.targets.flatten(0, -1)).unwrap(), vec![0.0, 1.0, 1.0, 0.0]);
    }
}
