//! Class scores, loss and accuracy (docs/method.md §3).
//!
//! From the output `(T_out, B, n_out)`: `sum` → `m = Σ_t softmax(out[t])`, `mean` → `mean_t out[t]`,
//! `max` → `max_t out[t]`, `spike_count` → `Σ_t spikes`. The loss is cross-entropy on probability
//! targets, `−Σ_{b,c} y[b,c]·log_softmax(m)[b,c] / B`, and accuracy compares `argmax m` with
//! `argmax y` (first index on ties).

use crate::config::Loss;
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// The per-class score `m` of shape `(B, n_out)`.
pub fn class_scores(output: &Tensor, loss: Loss) -> Tensor {
    match loss {
        Loss::Sum => output.softmax(2, None::<Kind>).sum_dim_intlist(0, false, None::<Kind>),
        Loss::Mean => output.mean_dim(0, false, None::<Kind>),
        Loss::Max => output.max_dim(0, false).0,
        Loss::SpikeCount => output.sum_dim_intlist(0, false, None::<Kind>),
    }
}

/// How a readout `(T, n_out)` becomes class scores: `softmax_sum` `Σ_t softmax(out[t])`, `sum`
/// `Σ_t out[t]`, `mean` `mean_t out[t]`, `max` `max_t out[t]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    SoftmaxSum,
    Sum,
    Mean,
    Max,
}

impl From<Loss> for Scoring {
    fn from(loss: Loss) -> Scoring {
        match loss {
            Loss::Sum => Scoring::SoftmaxSum,
            Loss::Mean => Scoring::Mean,
            Loss::Max => Scoring::Max,
            Loss::SpikeCount => Scoring::Sum,
        }
    }
}

/// One-hot float targets from integer labels.
pub fn one_hot(labels: &Tensor, classes: i64) -> Tensor {
    labels.one_hot(classes).to_kind(Kind::Float)
}

/// Cross-entropy of scores against probability targets, averaged over the batch.
pub fn cross_entropy(scores: &Tensor, targets: &Tensor) -> Tensor {
    scores.cross_entropy_loss::<Tensor>(targets, None, Reduction::Mean, -100, 0.0)
}

/// Each sample's cross-entropy, `(B,)`.
pub fn sample_cross_entropy(scores: &Tensor, targets: &Tensor) -> Tensor {
    scores.cross_entropy_loss::<Tensor>(targets, None, Reduction::None, -100, 0.0)
}

/// Fraction of samples whose top score is the top target class.
pub fn accuracy(scores: &Tensor, targets: &Tensor) -> f64 {
    hit_rate(scores, targets).double_value(&[])
}

/// [`accuracy`] as a 0-dim float64 tensor on the scores' device, read by nobody yet.
pub fn hit_rate(scores: &Tensor, targets: &Tensor) -> Tensor {
    hits(scores, targets).to_kind(Kind::Double).mean(Kind::Double)
}

/// Whether each sample's top score is its top target class, `(B,)` booleans.
pub fn hits(scores: &Tensor, targets: &Tensor) -> Tensor {
    scores.argmax(1, false).eq_tensor(&targets.argmax(1, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn sum_scores_add_to_the_number_of_steps() {
        let output = Tensor::randn([7, 4, 5], (Kind::Float, Device::Cpu));
        let rows = class_scores(&output, Loss::Sum).sum_dim_intlist(1, false, None::<Kind>);
        assert!((rows - 7.0).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn cross_entropy_matches_its_formula() {
        let scores = Tensor::randn([6, 5], (Kind::Float, Device::Cpu));
        let targets = one_hot(&Tensor::from_slice(&[0i64, 1, 2, 3, 4, 0]), 5);
        let by_hand = -(scores.log_softmax(1, None::<Kind>) * &targets).sum(Kind::Float) / 6.0;
        assert!((cross_entropy(&scores, &targets) - by_hand).abs().double_value(&[]) < 1e-6);
        assert_eq!(accuracy(&targets, &targets), 1.0);
    }
}
