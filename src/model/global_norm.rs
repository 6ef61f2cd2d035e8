//! BatchNorm over the global batch of a data-parallel run (docs/method.md, "Data-parallel
//! training"): N processes, each holding a shard of the batch, normalise with the statistics of
//! all `T·B` values, as one process with the whole batch does (§2.3).
//!
//! Forward, per channel, summed over every process: `n = Σ T·b_r`, `μ = Σz/n`, then
//! `σ² = Σ(z − μ)²/n` (two passes, in float64); `y = (z − μ)·(σ² + ε)^−½·γ + β`. Running
//! statistics take `μ` and the unbiased `σ²·n/(n−1)` with momentum 0.1, identically everywhere.
//! The count `n` is summed with the statistics and stays on the device: nothing is read back.
//!
//! Backward: `μ` and `σ²` are leaves, so autograd gives each process the part of the loss's
//! gradient that flows through its own outputs. [`GlobalNormCut::backward`] sums those parts
//! over the processes, `G_μ` and `G_σ²`, and adds their path through the statistics to the
//! input's gradient, `∂z_i += (G_μ + 2(z_i − μ)·G_σ²)/n`, before carrying it on into the graph
//! below (the term through `μ` inside `σ²` vanishes since `Σ(z − μ) = 0`).

use super::layers::{TimeBatchNorm, BN_EPS, BN_MOMENTUM};
use anyhow::Result;
use std::rc::Rc;
use tch::{Kind, Tensor};

/// Sums tensors in place over the processes of a data-parallel run.
pub trait GlobalSum {
    fn sum(&self, tensor: &Tensor) -> Result<()>;
}

/// A normalisation whose backward waits for the other processes.
pub struct GlobalNormCut {
    /// The layer's input, in the graph below.
    input: Tensor,
    /// The detached input the normalisation was computed from.
    leaf: Tensor,
    mean: Tensor,
    var: Tensor,
    /// `n`, a 0-dim float64 tensor on the device.
    count: Tensor,
    sum: Rc<dyn GlobalSum>,
}

impl TimeBatchNorm {
    /// Normalises this process's `(T, b, C)` shard with the global batch's statistics, updating
    /// the running ones; the output's gradient reaches the input through the returned cut.
    pub fn forward_global(&self, x: &Tensor, sum: Rc<dyn GlobalSum>) -> Result<(Tensor, GlobalNormCut)> {
        let shape = x.size();
        let leaf = x.detach().set_requires_grad(true);
        let flat = leaf.reshape([shape[0] * shape[1], shape[2]]);
        let values = flat.detach().to_kind(Kind::Double);
        let totals = Tensor::cat(
            &[
                values.sum_dim_intlist(0, false, Kind::Double),
                values.new_full([1], values.size()[0] as f64, (Kind::Double, values.device())),
            ],
            0,
        );
        sum.sum(&totals)?;
        let channels = shape[2];
        let count = totals.get(channels);
        let mean = totals.narrow(0, 0, channels) / &count;
        let squares = (&values - &mean).square().sum_dim_intlist(0, false, Kind::Double);
        sum.sum(&squares)?;
        let var = squares / &count;
        self.update_running(&mean, &var, &count);
        let mean = mean.to_kind(Kind::Float).set_requires_grad(true);
        let var = var.to_kind(Kind::Float).set_requires_grad(true);
        let y = (&flat - &mean) * (&var + BN_EPS).rsqrt() * &self.weight + &self.bias;
        let cut = GlobalNormCut { input: x.shallow_clone(), leaf, mean, var, count, sum };
        Ok((y.reshape(shape.as_slice()), cut))
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: &Tensor) {
        tch::no_grad(|| {
            let unbiased = var * (count / (count - 1.0).clamp_min(1.0));
            let blend = |running: &Tensor, batch: &Tensor| {
                let updated = running.to_kind(Kind::Double) * (1.0 - BN_MOMENTUM) + batch * BN_MOMENTUM;
                running.shallow_clone().copy_(&updated);
            };
            blend(&self.running_mean, mean);
            blend(&self.running_var, &unbiased);
            let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
        });
    }
}

impl GlobalNormCut {
    /// Sums the statistics' gradients over the processes and carries the input's whole gradient
    /// into the graph below. Every process calls it, in the same order.
    pub fn backward(&self) -> Result<()> {
        let grad_of = |t: &Tensor| {
            let grad = t.grad();
            if grad.defined() {
                grad
            } else {
                t.zeros_like()
            }
        };
        let stats = Tensor::cat(&[grad_of(&self.mean), grad_of(&self.var)], 0).to_kind(Kind::Double);
        self.sum.sum(&stats)?;
        let channels = self.mean.size()[0];
        let (g_mean, g_var) = (stats.narrow(0, 0, channels), stats.narrow(0, channels, channels));
        let centred = self.leaf.detach().to_kind(Kind::Double) - self.mean.detach().to_kind(Kind::Double);
        let through_stats = (centred * g_var * 2.0 + g_mean) / &self.count;
        let grad = grad_of(&self.leaf) + through_stats.to_kind(Kind::Float);
        if self.input.requires_grad() && self.input.numel() > 0 {
            (&self.input * grad).sum(Kind::Float).backward();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    /// The sum over a world of one process.
    struct OneProcess;

    impl GlobalSum for OneProcess {
        fn sum(&self, _: &Tensor) -> Result<()> {
            Ok(())
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn in_one_process_it_is_batch_norm_forward_and_backward() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let (native, global) = (TimeBatchNorm::new(&(vs.root() / "a"), 3), TimeBatchNorm::new(&(vs.root() / "b"), 3));
        tch::no_grad(|| {
            for norm in [&native, &global] {
                norm.weight.shallow_clone().copy_(&Tensor::from_slice(&[0.5f32, 2.0, -1.0]));
                norm.bias.shallow_clone().copy_(&Tensor::from_slice(&[0.1f32, 0.0, 3.0]));
            }
        });
        let x = (Tensor::randn([5, 4, 3], (Kind::Float, Device::Cpu)) * 2.0 + 1.0).set_requires_grad(true);
        let upstream = Tensor::randn([5, 4, 3], (Kind::Float, Device::Cpu));
        let (x1, x2) = (&x * 1.0, &x * 1.0);
        let y1 = native.forward(&x1, true);
        (&y1 * &upstream).sum(Kind::Float).backward();
        let grad_native = x.grad().copy();
        let _ = x.grad().zero_();
        let (y2, cut) = global.forward_global(&x2, Rc::new(OneProcess)).unwrap();
        (&y2 * &upstream).sum(Kind::Float).backward();
        cut.backward().unwrap();
        assert!(max_diff(&y1, &y2) < 1e-5);
        assert!(max_diff(&grad_native, &x.grad()) < 1e-5, "input gradient differs by {}", max_diff(&grad_native, &x.grad()));
        for (a, b) in [
            (&native.weight.grad(), &global.weight.grad()),
            (&native.bias.grad(), &global.bias.grad()),
            (&native.running_mean, &global.running_mean),
            (&native.running_var, &global.running_var),
        ] {
            assert!(max_diff(a, b) < 1e-5, "{a:?} vs {b:?}");
        }
        assert_eq!(global.num_batches_tracked.int64_value(&[]), 1);
    }
}
