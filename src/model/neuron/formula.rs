//! The float32 formulas every neuron backend computes (docs/method.md, "Neurons" and "Fused
//! neurons"; §2.4–§2.5): the charge `h = charge(v, x)` in the order libtorch's ops round it, the
//! threshold test `f = [h ≥ θ]`, and the ATan surrogate's slope
//! `slope(u) = (α/2)/(1 + (π/2·α·u)²)`. The op-by-op path, the CPU kernel and the CUDA kernel
//! all take their constants from here; nothing here runs a whole layer.

use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// The charge `h = charge(v, x)` in float32, one variant per formula of §2.4.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Charge {
    /// LIF, SpikingJelly 2.0: `(v − v/τ) + x`.
    Divide(f32),
    /// LIF, paper-era training: `v·fl32(1 − 1/τ) + x`.
    Multiply(f32),
    /// PLIF, SpikingJelly 2.0: `(v − v·r) + x` with `r = sigmoid(w)`.
    SubtractProduct(f32),
    /// PLIF, paper-era training: `v·fl32(1 − r) + x`.
    MultiplyOneMinus(f32),
}

impl Charge {
    #[inline(always)]
    pub fn apply(self, v: f32, x: f32) -> f32 {
        match self {
            Charge::Divide(tau) => (v - v / tau) + x,
            Charge::Multiply(keep) | Charge::MultiplyOneMinus(keep) => v * keep + x,
            Charge::SubtractProduct(rate) => (v - v * rate) + x,
        }
    }

    /// The fraction of the membrane lost per step: `1/τ` (LIF) or `sigmoid(w)` (PLIF), in float64.
    pub fn leak(self) -> f64 {
        match self {
            Charge::Divide(tau) => 1.0 / f64::from(tau),
            Charge::Multiply(keep) | Charge::MultiplyOneMinus(keep) => 1.0 - f64::from(keep),
            Charge::SubtractProduct(rate) => f64::from(rate),
        }
    }

    /// The gradient of `v_t`: the membrane's own `g_m` first, then the next step's charge terms.
    #[inline(always)]
    pub fn carry(self, grad_membrane: f32, grad_next: f32) -> f32 {
        match self {
            Charge::Divide(tau) => (grad_membrane + grad_next) + (-grad_next / tau),
            Charge::Multiply(keep) | Charge::MultiplyOneMinus(keep) => grad_membrane + grad_next * keep,
            Charge::SubtractProduct(rate) => (grad_membrane + grad_next) + (-grad_next * rate),
        }
    }

    /// Whether the formula has a learned rate (PLIF), whose gradient the backward also returns.
    pub fn learns_rate(self) -> bool {
        matches!(self, Charge::SubtractProduct(_) | Charge::MultiplyOneMinus(_))
    }

    /// Whether the summed per-step terms are negated to give the gradient of `sigmoid(w)`:
    /// `1 − r` is differentiated for `MultiplyOneMinus`.
    pub fn negates_rate_terms(self) -> bool {
        matches!(self, Charge::MultiplyOneMinus(_))
    }

    /// The step's term of the gradient of `sigmoid(w)`, before summing over neurons; `None` for LIF.
    #[inline(always)]
    pub fn rate_term(self, grad_charged: f32, previous: f32) -> Option<f32> {
        match self {
            Charge::SubtractProduct(_) => Some(-grad_charged * previous),
            Charge::MultiplyOneMinus(_) => Some(grad_charged * previous),
            Charge::Divide(_) | Charge::Multiply(_) => None,
        }
    }

    /// The CUDA kernel's mode number and parameter for this formula (csrc/fused_lif.cu).
    pub fn kernel_mode(self) -> (i32, f32) {
        match self {
            Charge::Divide(tau) => (0, tau),
            Charge::Multiply(keep) => (1, keep),
            Charge::SubtractProduct(rate) => (2, rate),
            Charge::MultiplyOneMinus(keep) => (3, keep),
        }
    }

    /// PLIF's formula with rate `r`: `SubtractProduct(r)` or `MultiplyOneMinus(fl32(1 − r))`.
    pub fn of_rate(multiply: bool, rate: f32) -> Charge {
        if multiply {
            Charge::MultiplyOneMinus(1.0 - rate)
        } else {
            Charge::SubtractProduct(rate)
        }
    }
}

/// A fused layer's charge: a constant known on the host, or PLIF's learned rate `sigmoid(w)`
/// as a 0-dim float32 tensor on the layer's device, which the CUDA kernel reads itself so that
/// the host never waits for it.
#[derive(Debug)]
pub enum LayerCharge {
    Constant(Charge),
    /// `multiply`: the paper-era `v·(1 − r) + x`; otherwise `(v − v·r) + x`.
    Learned {
        multiply: bool,
        rate: Tensor,
    },
}

impl LayerCharge {
    /// The charge with its parameter on the host; reads a learned rate (for CPU tensors only,
    /// where reading is free).
    pub fn on_host(&self) -> Charge {
        match self {
            LayerCharge::Constant(charge) => *charge,
            LayerCharge::Learned { multiply, rate } => Charge::of_rate(*multiply, rate.double_value(&[]) as f32),
        }
    }

    /// Whether the backward computes the rate's gradient (PLIF's formulas, as [`Charge::learns_rate`]).
    pub fn learns_rate(&self) -> bool {
        match self {
            LayerCharge::Constant(charge) => charge.learns_rate(),
            LayerCharge::Learned { .. } => true,
        }
    }
}

/// Firing and its surrogate, in float32.
#[derive(Clone, Copy, Debug)]
pub struct Firing {
    pub threshold: f32,
    /// `fl32(π·α/2)`.
    pub z_scale: f32,
    /// `fl32(α/2)`.
    pub half_alpha: f32,
}

impl Firing {
    /// The threshold `θ` and the surrogate's `α`, rounded to float32 as the kernels use them.
    pub fn new(threshold: f64, surrogate: ATan) -> Firing {
        Firing { threshold: threshold as f32, z_scale: surrogate.z_scale() as f32, half_alpha: (surrogate.alpha / 2.0) as f32 }
    }

    #[inline(always)]
    pub fn fired(&self, charged: f32) -> f32 {
        if charged >= self.threshold {
            1.0
        } else {
            0.0
        }
    }

    #[inline(always)]
    pub fn slope(&self, charged: f32) -> f32 {
        let z = (charged - self.threshold) * self.z_scale;
        (1.0 / (z * z + 1.0)) * self.half_alpha
    }
}

/// Everything the CPU kernel needs, in float32.
#[derive(Clone, Copy, Debug)]
pub struct Dynamics32 {
    pub charge: Charge,
    pub firing: Firing,
}

/// ATan surrogate: forward `H(u) = [u ≥ 0]`; backward `g · (α/2)/(1 + (π/2·α·u)²)`, written as
/// SpikingJelly writes it (`reciprocal(1 + z·z)·(α/2)·g` with `z = fl32(π·α/2)·u`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ATan {
    pub alpha: f64,
}

impl ATan {
    /// The surrogate slope at `u`, with no gradient of its own.
    pub fn slope(&self, u: &Tensor) -> Tensor {
        let half_alpha = self.alpha / 2.0;
        let z = u.detach() * self.z_scale();
        (&z * &z + 1.0).reciprocal() * half_alpha
    }

    /// `π·α/2`, the scale of `z`.
    pub fn z_scale(&self) -> f64 {
        PI * self.alpha / 2.0
    }

    /// Heaviside spikes whose gradient with respect to `u` is `g · slope(u)`.
    pub fn spike(&self, u: &Tensor) -> Tensor {
        heaviside(u, &self.slope(u))
    }
}

/// Heaviside spikes `[u ≥ 0]` whose gradient with respect to `u` is `g · slope`.
pub fn heaviside(u: &Tensor, slope: &Tensor) -> Tensor {
    let fired = u.ge(0.0).to_kind(u.kind());
    let linear = u * slope;
    fired + (&linear - linear.detach())
}

/// Which sequences a caller reads from a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readout {
    pub spikes: bool,
    pub membrane: bool,
}

impl Readout {
    pub const SPIKES: Readout = Readout { spikes: true, membrane: false };
    pub const MEMBRANE: Readout = Readout { spikes: false, membrane: true };
    pub const BOTH: Readout = Readout { spikes: true, membrane: true };
}

/// A fused forward's outputs, `(T, B, C)` each; `charged` (the pre-reset `h`) only when saved.
pub struct FusedForward {
    pub spikes: Option<Tensor>,
    pub membrane: Option<Tensor>,
    pub charged: Option<Tensor>,
}

/// The gradients that reached a fused layer's outputs, `(T, B, C)` each, either absent when nothing
/// read that output.
#[derive(Clone, Copy, Debug)]
pub struct OutputGrads<'a> {
    pub spikes: Option<&'a Tensor>,
    pub membrane: Option<&'a Tensor>,
}

impl OutputGrads<'_> {
    /// Both as contiguous float32 tensors, as the kernels read them.
    pub fn contiguous(&self) -> (Option<Tensor>, Option<Tensor>) {
        let contiguous = |g: Option<&Tensor>| g.map(|g| g.to_kind(Kind::Float).contiguous());
        (contiguous(self.spikes), contiguous(self.membrane))
    }
}

/// A fused backward's outputs: the gradient of the input current and, for PLIF, the per-step
/// terms of the gradient of `sigmoid(w)` (`(T, B·C)`) and their reduction (0-dim).
pub struct FusedGrads {
    pub input: Tensor,
    pub rate_terms: Option<Tensor>,
    pub rate: Option<Tensor>,
}
