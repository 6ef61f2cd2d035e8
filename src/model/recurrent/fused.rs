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

/// What one forward step gives: `s(t)`, `h(t)` and `z(t+1)`, `(B, N)` each.
pub struct ForwardStep {
    pub spikes: Tensor,
    pub charged: Tensor,
    pub arrived: Tensor,
}

/// A forward pass's inputs and running state, contiguous float32 on one device.
pub struct ForwardState<'a> {
    /// The feedforward current of each step, `(B, N)`.
    pub x: Vec<Tensor>,
    pub mask: Option<Tensor>,
    /// The kernel `(N, L)`, and its taps `1..L`.
    pub kernel: Tensor,
    sent_taps: Tensor,
    pub neuron: &'a StepLif,
    pub train: bool,
    /// `v (B, N)`: replaced by the ops, updated in place by the kernel.
    pub membrane: Tensor,
    /// `(B, N, L)`; slot `t mod L` holds what arrives at step t.
    pub ring: Tensor,
}

impl<'a> ForwardState<'a> {
    /// Empty state for the input `x (T, B, N)`.
    pub fn new(x: &Tensor, kernel: &Tensor, mask: Option<&Tensor>, neuron: &'a StepLif, train: bool) -> ForwardState<'a> {
        let (batch, n, slots) = (x.size()[1], x.size()[2], kernel.size()[1]);
        let options = (Kind::Float, x.device());
        let kernel = kernel.detach().contiguous();
        ForwardState {
            x: x.detach().contiguous().unbind(0),
            mask: mask.map(|m| m.detach().contiguous()),
            sent_taps: kernel.narrow(1, 1, kernel.size()[1] - 1),
            kernel,
            neuron,
            train,
            membrane: Tensor::zeros([batch, n], options),
            ring: Tensor::zeros([batch, n, slots], options),
        }
    }

    /// Step t with libtorch ops, given `recurrent = z(t)·Wᵀ`.
    pub fn ops_step(&mut self, t: i64, recurrent: &Tensor) -> ForwardStep {
        let slots = self.kernel.size()[1];
        let total = with_recurrent(&self.x[t as usize], recurrent, self.mask.as_ref());
        let charged = self.neuron.charge(&self.membrane, &total, self.train);
        let spikes = (&charged - self.neuron.threshold).ge(0.0).to_kind(Kind::Float);
        self.membrane = self.neuron.reset(&charged, &spikes);
        let next = (t + 1) % slots;
        add_around(&self.ring, &(spikes.unsqueeze(-1) * &self.sent_taps), next);
        ForwardStep { spikes, charged, arrived: take_slot(&self.ring, next) }
    }
}

/// What one backward step gives: `g_h(t)` and `μ ⊙ g_h(t)`, `(B, N)` each.
pub struct BackwardStep {
    pub grad_h: Tensor,
    pub grad_masked: Tensor,
}

/// A backward pass's inputs and running state, contiguous float32 on one device.
pub struct BackwardState<'a> {
    pub grad_spikes: Tensor,
    pub charged: Tensor,
    pub spikes: Tensor,
    /// The surrogate's slopes at `h(t) − θ`, `(T, B, N)`.
    pub slopes: Tensor,
    pub mask: Option<Tensor>,
    pub kernel: Tensor,
    flipped_taps: Tensor,
    pub neuron: &'a StepLif,
    /// `g_v (B, N)`: replaced by the ops, updated in place by the kernel.
    pub grad_v: Tensor,
    /// `(B, N, L)`: slot `t mod L` gathers the gradient of `s(t)` from later steps' `g_z`.
    pub ring: Tensor,
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
        let (shape, slots) = (charged.size(), kernel.size()[1]);
        let options = (Kind::Float, charged.device());
        let kernel = kernel.detach().contiguous();
        BackwardState {
            grad_spikes: grad_spikes.contiguous(),
            charged: charged.contiguous(),
            spikes: spikes.detach().contiguous(),
            slopes: neuron.surrogate.slope(&(charged - neuron.threshold)).contiguous(),
            mask: mask.map(|m| m.detach().contiguous()),
            flipped_taps: kernel.narrow(1, 1, kernel.size()[1] - 1).flip([1]),
            kernel,
            neuron,
            grad_v: Tensor::zeros([shape[1], shape[2]], options),
            ring: Tensor::zeros([shape[1], shape[2], slots], options),
        }
    }

    /// Step t with libtorch ops: spreads `g_z(t+1)` (`scatter`, none at the last step), then
    /// takes slot t and forms `g_h(t)`.
    pub fn ops_step(&mut self, t: i64, scatter: Option<&Tensor>) -> BackwardStep {
        let neuron = self.neuron;
        let slots = self.kernel.size()[1];
        if let Some(grad_z) = scatter {
            add_around(&self.ring, &(grad_z.unsqueeze(-1) * &self.flipped_taps), ((t + 1) % slots + 1) % slots);
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
        self.grad_v = &grad_h * (1.0 - 1.0 / neuron.tau);
        BackwardStep { grad_masked: through_mask(&grad_h, self.mask.as_ref()), grad_h }
    }
}

/// Stacks per-step tensors `(B, N)` into `(T, B, N)`.
fn stacked(steps: &[Tensor]) -> Tensor {
    Tensor::stack(steps, 0)
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
        let (batch, n) = (x.size()[1], x.size()[2]);
        let (mut spikes, mut charged) = (Vec::new(), Vec::new());
        let mut arrived = vec![Tensor::zeros([batch, n], (Kind::Float, x.device()))];
        tch::no_grad(|| -> Result<()> {
            for t in 0..x.size()[0] {
                let recurrent = arrived[t as usize].mm(&weight);
                let step = match steps {
                    Steps::Ops => state.ops_step(t, &recurrent),
                    Steps::Kernel(launcher) => super::cuda_step::forward_step(launcher, &mut state, t, &recurrent)?,
                };
                spikes.push(step.spikes);
                charged.push(step.charged);
                arrived.push(step.arrived);
            }
            Ok(())
        })?;
        arrived.pop();
        let (spikes, arrived, charged) = tch::no_grad(|| (stacked(&spikes), stacked(&arrived), stacked(&charged)));
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
        let (mut grad_input, mut grad_arrived): (Vec<Tensor>, Vec<Tensor>) = (Vec::new(), Vec::new());
        for t in (0..self.charged.size()[0]).rev() {
            let scatter = grad_arrived.last();
            let step = match self.steps {
                Steps::Ops => state.ops_step(t, scatter),
                Steps::Kernel(launcher) => super::cuda_step::backward_step(launcher, &mut state, t, scatter)?,
            };
            grad_arrived.push(step.grad_masked.mm(&weight));
            grad_input.push(step.grad_h);
        }
        let in_time = |mut reversed: Vec<Tensor>| {
            reversed.reverse();
            stacked(&reversed)
        };
        let (grad_input, grad_arrived) = (in_time(grad_input), in_time(grad_arrived));
        let (steps, batch, n) = (self.charged.size()[0], self.charged.size()[1], self.charged.size()[2]);
        let slots = self.kernel.size()[1];
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
