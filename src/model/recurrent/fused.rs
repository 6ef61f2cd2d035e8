//! The recurrent-delay layer with a hand-written backward (`recurrent.buffer = fused`;
//! docs/method.md "Recurrent delays"): the presynaptic buffer's sums, computed without autograd
//! in a ring of `L` slots (slot `t mod L` holds what arrives at step t), so a step dispatches a
//! few ops instead of autograd's graph. Its backward runs after autograd has reached the output
//! spikes ([`RecurrentCut::backward`]), from t = T−1 down to 0:
//!
//! - `g_s(t) = ∂/∂s(t) + Σ_{k≥1} K[:,k] ⊙ g_z(t+k)` (a second ring, filled with the flipped taps),
//!   plus `−θ·g_v(t)` (soft) or `−h(t)·g_v(t)` (hard) when the reset is not detached;
//! - `g_h(t) = g_v(t)·∂v/∂h + g_s(t)·φ(h(t) − θ)`, with `∂v/∂h` 1 (soft) or `1 − s(t)` (hard)
//!   and φ the surrogate's slope; `g_x(t) = g_h(t)`, `g_r = μ ⊙ g_h`, `g_z = g_r·W`;
//!   `g_v(t−1) = (1 − 1/τ)·g_h(t)`;
//! - `∂W = Σ_t g_r(t)ᵀ z(t)` and `∂K[:,k] = Σ_{t,b} g_z(t) ⊙ s(t−k)`, each once for the pass.
//!
//! The input, weight and kernel gradients enter the graph below as `Σ x·g_x + Σ W·∂W + Σ K·∂K`.

use super::{with_recurrent, RecurrentDelays};
use crate::model::neuron::step::{Reset, StepLif};
use anyhow::Result;
use tch::{Kind, Tensor};

/// What the backward of one fused pass needs.
#[derive(Debug)]
pub struct RecurrentCut {
    input: Tensor,
    weight: Tensor,
    kernel: Tensor,
    mask: Option<Tensor>,
    /// The output leaf whose gradient the backward starts from.
    spikes: Tensor,
    /// `z(t)`, the presynaptic values that arrived, `(T, B, N)`.
    arrived: Tensor,
    /// `h(t)`, the membrane before the reset, `(T, B, N)`.
    charged: Tensor,
    neuron: StepLif,
}

/// Adds `values (B, N, L−1)` into the ring `(B, N, L)` at slots `start, start+1, …` mod L.
fn add_around(ring: &Tensor, values: &Tensor, start: i64) {
    let (slots, count) = (ring.size()[2], values.size()[2]);
    let first = count.min(slots - start);
    let _ = ring.narrow(2, start, first).g_add_(&values.narrow(2, 0, first));
    if first < count {
        let _ = ring.narrow(2, 0, count - first).g_add_(&values.narrow(2, first, count - first));
    }
}

/// `g_r = μ ⊙ g_h` (the mask broadcast over leading steps), or `g_h` without a mask.
fn through_mask(grad_h: &Tensor, mask: Option<&Tensor>) -> Tensor {
    match mask {
        Some(mask) => grad_h * mask,
        None => grad_h.shallow_clone(),
    }
}

/// Reads slot `slot` of the ring, then empties it.
fn take_slot(ring: &Tensor, slot: i64) -> Tensor {
    let mut column = ring.select(2, slot);
    let value = column.copy();
    let _ = column.zero_();
    value
}

impl RecurrentDelays {
    /// The layer's spikes `(T, B, N)` for the current `x`, computed without autograd; in
    /// training, a leaf that needs a gradient and the cut that carries it down.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        train: bool,
        mask: Option<&Tensor>,
    ) -> (Tensor, Option<RecurrentCut>) {
        let (batch, n, slots) = (x.size()[1], x.size()[2], kernel.size()[1]);
        let (spikes, arrived, charged) = tch::no_grad(|| {
            let options = (Kind::Float, x.device());
            let (input, weight) = (x.detach(), self.weight.detach().tr());
            let sent_taps = kernel.detach().narrow(1, 1, slots - 1);
            let ring = Tensor::zeros([batch, n, slots], options);
            let mut v = Tensor::zeros([batch, n], options);
            let (mut spikes, mut arrived, mut charged) = (Vec::new(), Vec::new(), Vec::new());
            for (t, current) in input.unbind(0).iter().enumerate() {
                let slot = t as i64 % slots;
                let z = take_slot(&ring, slot);
                let recurrent = z.mm(&weight);
                let total = with_recurrent(current, &recurrent, mask);
                let h = self.neuron.charge(&v, &total, train);
                let s = (&h - self.neuron.threshold).ge(0.0).to_kind(Kind::Float);
                v = self.neuron.reset(&h, &s);
                add_around(&ring, &(s.unsqueeze(-1) * &sent_taps), (slot + 1) % slots);
                spikes.push(s);
                arrived.push(z);
                charged.push(h);
            }
            (Tensor::stack(&spikes, 0), Tensor::stack(&arrived, 0), Tensor::stack(&charged, 0))
        });
        if !train {
            return (spikes, None);
        }
        let spikes = spikes.set_requires_grad(true);
        let cut = RecurrentCut {
            input: x.shallow_clone(),
            weight: self.weight.shallow_clone(),
            kernel: kernel.shallow_clone(),
            mask: mask.map(Tensor::shallow_clone),
            spikes: spikes.shallow_clone(),
            arrived,
            charged,
            neuron: self.neuron,
        };
        (spikes, Some(cut))
    }
}

impl RecurrentCut {
    /// Carries the gradient of the output spikes down to the input, W and the kernel.
    pub fn backward(&self) -> Result<()> {
        let grad_spikes = self.spikes.grad();
        if !grad_spikes.defined() {
            return Ok(());
        }
        let (grad_input, grad_weight, grad_kernel) = tch::no_grad(|| self.gradients(&grad_spikes));
        let mut objective = (&self.weight * grad_weight).sum(Kind::Float) + (&self.kernel * grad_kernel).sum(Kind::Float);
        if self.input.requires_grad() {
            objective += (&self.input * grad_input).sum(Kind::Float);
        }
        objective.backward();
        Ok(())
    }

    /// The gradients of the input `(T, B, N)`, W `(N, N)` and the kernel `(N, L)`.
    fn gradients(&self, grad_spikes: &Tensor) -> (Tensor, Tensor, Tensor) {
        let neuron = &self.neuron;
        let (steps, batch, n) = (self.charged.size()[0], self.charged.size()[1], self.charged.size()[2]);
        let slots = self.kernel.size()[1];
        let options = (Kind::Float, self.charged.device());
        let spikes = self.spikes.detach();
        let slopes = neuron.surrogate.slope(&(&self.charged - neuron.threshold));
        let flipped_taps = self.kernel.detach().narrow(1, 1, slots - 1).flip([1]);
        let weight = self.weight.detach();
        let ring = Tensor::zeros([batch, n, slots], options);
        let mut grad_v = Tensor::zeros([batch, n], options);
        let decay = 1.0 - 1.0 / neuron.tau;
        let (mut grad_input, mut grad_arrived) = (Vec::new(), Vec::new());
        for t in (0..steps).rev() {
            let slot = t % slots;
            let mut grad_s = grad_spikes.get(t) + take_slot(&ring, slot);
            let s = spikes.get(t);
            if !neuron.detach_reset {
                grad_s -= match neuron.reset {
                    Reset::Soft => &grad_v * neuron.threshold,
                    Reset::Hard => &grad_v * self.charged.get(t),
                };
            }
            let through_reset = match neuron.reset {
                Reset::Soft => grad_v.shallow_clone(),
                Reset::Hard => &grad_v * (s.neg() + 1.0),
            };
            let grad_h = through_reset + grad_s * slopes.get(t);
            let grad_z = through_mask(&grad_h, self.mask.as_ref()).mm(&weight);
            add_around(&ring, &(grad_z.unsqueeze(-1) * &flipped_taps), (slot + 1) % slots);
            grad_v = &grad_h * decay;
            grad_input.push(grad_h);
            grad_arrived.push(grad_z);
        }
        let in_time = |mut reversed: Vec<Tensor>| {
            reversed.reverse();
            Tensor::stack(&reversed, 0)
        };
        let (grad_input, grad_arrived) = (in_time(grad_input), in_time(grad_arrived));
        let grad_recurrent = through_mask(&grad_input, self.mask.as_ref());
        let grad_weight = grad_recurrent.reshape([steps * batch, n]).tr().mm(&self.arrived.reshape([steps * batch, n]));
        let grad_kernel = Tensor::zeros([n, slots], options);
        for tap in 1..slots.min(steps) {
            let products = grad_arrived.narrow(0, tap, steps - tap) * spikes.narrow(0, 0, steps - tap);
            grad_kernel.select(1, tap).copy_(&products.sum_dim_intlist([0, 1].as_slice(), false, Kind::Float));
        }
        (grad_input, grad_weight, grad_kernel)
    }
}
