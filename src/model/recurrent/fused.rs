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
//!
//! Each step is an `N×N` product (libtorch) and the elementwise rest, which runs as libtorch ops
//! ([`Steps::Ops`]) or, on a CUDA device whose step kernels passed their check, as one kernel
//! per step ([`super::cuda_step`], [`Steps::Kernel`]) that computes the ops' float32 values.
//! The forward takes z(t+1) out of the ring at the end of step t, the backward spreads g_z(t+1)
//! at the start of step t: the same operations on the ring, in the same order, in both.

use super::cuda_step::StepLauncher;
use super::{with_recurrent, RecurrentDelays};
use crate::model::neuron::step::{Reset, StepLif};
use anyhow::Result;
use tch::{Kind, Tensor};

/// Where a step's elementwise work runs.
#[derive(Clone, Copy)]
pub enum Steps {
    Ops,
    Kernel(&'static dyn StepLauncher),
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Steps::Ops => "Ops",
            Steps::Kernel(_) => "Kernel",
        })
    }
}

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
    steps: Steps,
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

/// A forward pass's state and outputs, all contiguous float32 on one device.
pub struct ForwardState<'a> {
    /// The feedforward current `(T, B, N)`.
    pub x: Tensor,
    pub mask: Option<Tensor>,
    /// The kernel `(N, L)`.
    pub kernel: Tensor,
    pub neuron: &'a StepLif,
    pub train: bool,
    /// `v (B, N)`, updated in place.
    pub membrane: Tensor,
    /// `(B, N, L)`; slot `t mod L` holds what arrives at step t.
    pub ring: Tensor,
    pub spikes: Tensor,
    pub charged: Tensor,
    /// `(T + 1, B, N)`: z(0) = 0, and each step writes the next.
    pub arrived: Tensor,
}

impl<'a> ForwardState<'a> {
    /// Empty state for the input `x (T, B, N)`.
    pub fn new(x: &Tensor, kernel: &Tensor, mask: Option<&Tensor>, neuron: &'a StepLif, train: bool) -> ForwardState<'a> {
        let (steps, batch, n) = (x.size()[0], x.size()[1], x.size()[2]);
        let options = (Kind::Float, x.device());
        ForwardState {
            x: x.detach().contiguous(),
            mask: mask.map(|m| m.detach().contiguous()),
            kernel: kernel.detach().contiguous(),
            neuron,
            train,
            membrane: Tensor::zeros([batch, n], options),
            ring: Tensor::zeros([batch, n, kernel.size()[1]], options),
            spikes: Tensor::empty([steps, batch, n], options),
            charged: Tensor::empty([steps, batch, n], options),
            arrived: Tensor::zeros([steps + 1, batch, n], options),
        }
    }

    /// Step t with libtorch ops, given `recurrent = z(t)·Wᵀ`.
    pub fn ops_step(&mut self, t: i64, recurrent: &Tensor) {
        let slots = self.kernel.size()[1];
        let slot = t % slots;
        let total = with_recurrent(&self.x.get(t), recurrent, self.mask.as_ref());
        let h = self.neuron.charge(&self.membrane, &total, self.train);
        let s = (&h - self.neuron.threshold).ge(0.0).to_kind(Kind::Float);
        self.membrane.copy_(&self.neuron.reset(&h, &s));
        add_around(&self.ring, &(s.unsqueeze(-1) * self.kernel.narrow(1, 1, slots - 1)), (slot + 1) % slots);
        self.arrived.get(t + 1).copy_(&take_slot(&self.ring, (slot + 1) % slots));
        self.spikes.get(t).copy_(&s);
        self.charged.get(t).copy_(&h);
    }
}

/// A backward pass's state and outputs, all contiguous float32 on one device.
pub struct BackwardState<'a> {
    pub grad_spikes: Tensor,
    pub charged: Tensor,
    pub spikes: Tensor,
    /// The surrogate's slopes at `h(t) − θ`, `(T, B, N)`.
    pub slopes: Tensor,
    pub mask: Option<Tensor>,
    pub kernel: Tensor,
    pub neuron: &'a StepLif,
    /// `g_v (B, N)`, updated in place.
    pub grad_v: Tensor,
    /// `(B, N, L)`: slot `t mod L` gathers the gradient of `s(t)` from later steps' `g_z`.
    pub ring: Tensor,
    pub grad_input: Tensor,
    /// `g_z(t) = (μ ⊙ g_h(t))·W`, `(T, B, N)`.
    pub grad_arrived: Tensor,
    /// `μ ⊙ g_h` of the current step, `(B, N)`.
    pub grad_masked: Tensor,
}

impl<'a> BackwardState<'a> {
    /// Empty state for a pass that charged `charged` and fired `spikes` (`(T, B, N)` each) with
    /// `kernel`, from the output gradient `grad_spikes`.
    pub fn new(
        charged: &Tensor,
        spikes: &Tensor,
        grad_spikes: &Tensor,
        mask: Option<&Tensor>,
        kernel: &Tensor,
        neuron: &'a StepLif,
    ) -> BackwardState<'a> {
        let shape = charged.size();
        let options = (Kind::Float, charged.device());
        BackwardState {
            grad_spikes: grad_spikes.contiguous(),
            charged: charged.contiguous(),
            spikes: spikes.detach().contiguous(),
            slopes: neuron.surrogate.slope(&(charged - neuron.threshold)).contiguous(),
            mask: mask.map(|m| m.detach().contiguous()),
            kernel: kernel.detach().contiguous(),
            neuron,
            grad_v: Tensor::zeros([shape[1], shape[2]], options),
            ring: Tensor::zeros([shape[1], shape[2], kernel.size()[1]], options),
            grad_input: Tensor::empty(shape.as_slice(), options),
            grad_arrived: Tensor::empty(shape.as_slice(), options),
            grad_masked: Tensor::empty([shape[1], shape[2]], options),
        }
    }

    /// Step t with libtorch ops: spreads g_z(t+1), then takes slot t and forms `g_h(t)`.
    pub fn ops_step(&mut self, t: i64) {
        let neuron = self.neuron;
        let (steps, slots) = (self.charged.size()[0], self.kernel.size()[1]);
        if t + 1 < steps {
            let flipped = self.kernel.narrow(1, 1, slots - 1).flip([1]);
            add_around(&self.ring, &(self.grad_arrived.get(t + 1).unsqueeze(-1) * flipped), ((t + 1) % slots + 1) % slots);
        }
        let mut grad_s = self.grad_spikes.get(t) + take_slot(&self.ring, t % slots);
        let s = self.spikes.get(t);
        if !neuron.detach_reset {
            grad_s -= match neuron.reset {
                Reset::Soft => &self.grad_v * neuron.threshold,
                Reset::Hard => &self.grad_v * self.charged.get(t),
            };
        }
        let through_reset = match neuron.reset {
            Reset::Soft => self.grad_v.shallow_clone(),
            Reset::Hard => &self.grad_v * (s.neg() + 1.0),
        };
        let grad_h = through_reset + grad_s * self.slopes.get(t);
        self.grad_masked.copy_(&through_mask(&grad_h, self.mask.as_ref()));
        self.grad_v.copy_(&(&grad_h * (1.0 - 1.0 / neuron.tau)));
        self.grad_input.get(t).copy_(&grad_h);
    }
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
    ) -> Result<(Tensor, Option<RecurrentCut>)> {
        self.forward_fused_with(x, kernel, train, mask, super::cuda_step::steps_for(x.device()))
    }

    /// [`Self::forward_fused`] with the steps run by `steps`.
    pub fn forward_fused_with(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        train: bool,
        mask: Option<&Tensor>,
        steps: Steps,
    ) -> Result<(Tensor, Option<RecurrentCut>)> {
        let weight = self.weight.detach().tr();
        let mut state = ForwardState::new(x, kernel, mask, &self.neuron, train);
        tch::no_grad(|| -> Result<()> {
            for t in 0..x.size()[0] {
                let recurrent = state.arrived.get(t).mm(&weight);
                match steps {
                    Steps::Ops => state.ops_step(t, &recurrent),
                    Steps::Kernel(launcher) => super::cuda_step::forward_step(launcher, &mut state, t, &recurrent)?,
                }
            }
            Ok(())
        })?;
        let steps_done = x.size()[0];
        let (spikes, arrived, charged) = (state.spikes, state.arrived.narrow(0, 0, steps_done), state.charged);
        if !train {
            return Ok((spikes, None));
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
            steps,
        };
        Ok((spikes, Some(cut)))
    }
}

impl RecurrentCut {
    /// Carries the gradient of the output spikes down to the input, W and the kernel.
    pub fn backward(&self) -> Result<()> {
        let grad_spikes = self.spikes.grad();
        if !grad_spikes.defined() {
            return Ok(());
        }
        let (grad_input, grad_weight, grad_kernel) = tch::no_grad(|| self.gradients(&grad_spikes))?;
        let mut objective = (&self.weight * grad_weight).sum(Kind::Float) + (&self.kernel * grad_kernel).sum(Kind::Float);
        if self.input.requires_grad() {
            objective += (&self.input * grad_input).sum(Kind::Float);
        }
        objective.backward();
        Ok(())
    }

    /// The gradients of the input `(T, B, N)`, W `(N, N)` and the kernel `(N, L)`.
    pub fn gradients(&self, grad_spikes: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let weight = self.weight.detach();
        let mut state =
            BackwardState::new(&self.charged, &self.spikes, grad_spikes, self.mask.as_ref(), &self.kernel, &self.neuron);
        for t in (0..self.charged.size()[0]).rev() {
            match self.steps {
                Steps::Ops => state.ops_step(t),
                Steps::Kernel(launcher) => super::cuda_step::backward_step(launcher, &mut state, t)?,
            }
            let _ = state.grad_masked.mm_out(&state.grad_arrived.get(t), &weight);
        }
        let (steps, batch, n) = (self.charged.size()[0], self.charged.size()[1], self.charged.size()[2]);
        let slots = self.kernel.size()[1];
        let (grad_input, grad_arrived) = (state.grad_input, state.grad_arrived);
        let grad_recurrent = through_mask(&grad_input, self.mask.as_ref());
        let grad_weight = grad_recurrent.reshape([steps * batch, n]).tr().mm(&self.arrived.reshape([steps * batch, n]));
        let grad_kernel = Tensor::zeros([n, slots], (Kind::Float, self.charged.device()));
        let spikes = self.spikes.detach();
        for tap in 1..slots.min(steps) {
            let products = grad_arrived.narrow(0, tap, steps - tap) * spikes.narrow(0, 0, steps - tap);
            grad_kernel.select(1, tap).copy_(&products.sum_dim_intlist([0, 1].as_slice(), false, Kind::Float));
        }
        Ok((grad_input, grad_weight, grad_kernel))
    }
}
