//! The per-block layers around the neurons, in multi-step form (inputs are `(T, B, C)`):
//! - [`TimeBatchNorm`]: BatchNorm1d with statistics per channel over all `T·B` values (§2.3):
//!   `y = γ·(x − μ)/sqrt(σ² + 1e-5) + β`, running stats updated with momentum 0.1 (unbiased var);
//! - [`MultiStepDropout`]: one `(B, C)` mask per batch shared by every time step (§2.6);
//! - [`Linear`]: the synapse of the delay-free `snn` model (§2.2), and with a bias the feedforward
//!   synapse of the recurrent-delay networks.

use tch::{nn, Device, Kind, Tensor};

pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// BatchNorm over `T·B` per channel, with the reference's parameter and buffer names.
#[derive(Debug)]
pub struct TimeBatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

impl TimeBatchNorm {
    pub fn new(path: &nn::Path, channels: i64) -> TimeBatchNorm {
        TimeBatchNorm {
            weight: path.ones("weight", &[channels]),
            bias: path.zeros("bias", &[channels]),
            running_mean: path.zeros_no_train("running_mean", &[channels]),
            running_var: path.ones_no_train("running_var", &[channels]),
            num_batches_tracked: path.add("num_batches_tracked", Tensor::zeros([], (Kind::Int64, path.device())), false),
        }
    }

    /// Normalises `(T, B, C)`; in training uses batch statistics and updates the running ones.
    /// cuDNN is never used, as in the reference.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let shape = x.size();
        if train {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
        }
        let flat = x.reshape([shape[0] * shape[1], shape[2]]);
        Tensor::batch_norm(
            &flat,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            false,
        )
        .reshape(shape.as_slice())
    }
}

/// Dropout whose mask is drawn once per batch and reused at every time step.
#[derive(Clone, Copy, Debug)]
pub struct MultiStepDropout {
    pub p: f64,
}

impl MultiStepDropout {
    /// A `(B, C)` mask of 0 and `1/(1−p)`, drawn as `F.dropout(ones(B, C), p)` is.
    pub fn draw_mask(&self, batch: i64, channels: i64, device: Device) -> Tensor {
        Tensor::ones([batch, channels], (Kind::Float, device)).dropout(self.p, true)
    }

    /// Applies a `(B, C)` mask to every step of `(T, B, C)`.
    pub fn apply(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        x * mask
    }
}

/// A linear synapse applied to every time step: bias-free (the `snn` model), or with a bias (the
/// recurrent-delay networks).
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(path: &nn::Path, in_channels: i64, out_channels: i64) -> Linear {
        Linear { weight: path.zeros("weight", &[out_channels, in_channels]), bias: None }
    }

    pub fn with_bias(path: &nn::Path, in_channels: i64, out_channels: i64) -> Linear {
        Linear { bias: Some(path.zeros("bias", &[out_channels])), ..Linear::new(path, in_channels, out_channels) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let shape = x.size();
        x.flatten(0, 1).linear(&self.weight, self.bias.as_ref()).reshape([shape[0], shape[1], -1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_norm_uses_statistics_over_time_and_batch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let bn = TimeBatchNorm::new(&vs.root(), 2);
        let x = Tensor::from_slice(&[1.0f32, 10.0, 3.0, 10.0, 5.0, 10.0, 7.0, 10.0]).reshape([2, 2, 2]);
        let y = bn.forward(&x, true);
        assert!(y.select(2, 1).abs().max().double_value(&[]) < 1e-3, "a constant channel normalises to 0");
        assert!((bn.running_mean.double_value(&[0]) - 0.4).abs() < 1e-6);
        assert_eq!(bn.num_batches_tracked.int64_value(&[]), 1);
    }

    #[test]
    fn dropout_mask_is_shared_over_time() {
        let dropout = MultiStepDropout { p: 0.4 };
        let mask = dropout.draw_mask(3, 5, Device::Cpu);
        let values: Vec<f32> = Vec::try_from(mask.flatten(0, -1)).unwrap();
        assert!(values.iter().all(|&v| v == 0.0 || v == (1.0 / 0.6f64) as f32));
        let y = dropout.apply(&Tensor::ones([4, 3, 5], (Kind::Float, Device::Cpu)), &mask);
        assert!(y.get(0).equal(&y.get(3)));
    }
}
