//! Multi-step LIF and PLIF neurons with a hard reset and a surrogate gradient (semantics.md
//! §2.4–§2.5).
//!
//! Per step t, with `decay_input = false`, `v_reset = 0` and `v_0 = 0`:
//! - charge: `h = v − v/τ + x` (SpikingJelly 2.0) or `h = v·(1 − 1/τ) + x` (paper-era training);
//!   PLIF replaces `1/τ` by `sigmoid(w)` with a learned scalar `w`;
//! - fire:   `s = H(h − θ)`, equality fires; backward through the [`ATan`] surrogate;
//! - reset:  `v = (1 − s̄)·h` with `s̄` detached.
//!
//! The membrane trace `v_seq` holds `v` after the reset.

use crate::config::{ChargeFormula, NeuronType};
use std::f64::consts::PI;
use tch::{nn, Tensor};

/// ATan surrogate: forward `H(u) = [u ≥ 0]`; backward `g · (α/2)/(1 + (π/2·α·u)²)`, written as
/// SpikingJelly writes it (`reciprocal(1 + z·z)·(α/2)·g` with `z = fl32(π·α/2)·u`).
#[derive(Clone, Copy, Debug)]
pub struct ATan {
    pub alpha: f64,
}

impl ATan {
    /// The surrogate slope at `u`, with no gradient of its own.
    pub fn slope(&self, u: &Tensor) -> Tensor {
        let half_alpha = self.alpha / 2.0;
        let z = u.detach() * (PI * half_alpha);
        (&z * &z + 1.0).reciprocal() * half_alpha
    }

    /// Heaviside spikes whose gradient with respect to `u` is `g · slope(u)`.
    pub fn spike(&self, u: &Tensor) -> Tensor {
        let fired = u.ge(0.0).to_kind(u.kind());
        let linear = u * self.slope(u);
        fired + (&linear - linear.detach())
    }
}

/// How fast the membrane leaks: a fixed τ in steps (LIF) or a learned `w` with `1/τ = sigmoid(w)`.
#[derive(Debug)]
pub enum Leak {
    Fixed { tau: f64 },
    Learned { w: Tensor },
}

/// Spikes and post-reset membrane of a layer, each `(T, B, C)`.
#[derive(Debug)]
pub struct NeuronOutput {
    pub spikes: Tensor,
    pub membrane: Tensor,
}

/// A layer of multi-step LIF or PLIF neurons.
#[derive(Debug)]
pub struct MultiStepLif {
    pub leak: Leak,
    pub v_threshold: f64,
    pub surrogate: ATan,
    pub charge_formula: ChargeFormula,
}

impl MultiStepLif {
    /// A PLIF layer stores its `w` under `path` as the reference does (`model.k.w`), initialised
    /// to `−ln(τ − 1)`.
    pub fn new(
        path: &nn::Path,
        neuron: NeuronType,
        tau: f64,
        v_threshold: f64,
        surrogate: ATan,
        charge_formula: ChargeFormula,
    ) -> Self {
        let leak = match neuron {
            NeuronType::Lif => Leak::Fixed { tau },
            NeuronType::Plif => Leak::Learned { w: path.var("w", &[], nn::Init::Const(-(tau - 1.0).ln())) },
        };
        MultiStepLif { leak, v_threshold, surrogate, charge_formula }
    }

    /// The membrane time constant in steps (for PLIF, `1/sigmoid(w)`).
    pub fn tau_steps(&self) -> f64 {
        match &self.leak {
            Leak::Fixed { tau } => *tau,
            Leak::Learned { w } => 1.0 / w.sigmoid().double_value(&[]),
        }
    }

    /// Runs the layer over a `(T, B, C)` input current.
    pub fn forward(&self, current: &Tensor, train: bool) -> NeuronOutput {
        let multiply = train && self.charge_formula == ChargeFormula::Paper2023;
        let steps = current.size()[0];
        let decay = self.decay();
        let mut v = current.get(0).zeros_like();
        let mut spikes = Vec::with_capacity(steps as usize);
        let mut membrane = Vec::with_capacity(steps as usize);
        for t in 0..steps {
            let h = charge(&v, &current.get(t), &decay, multiply);
            let s = self.surrogate.spike(&(&h - self.v_threshold));
            v = &h * (s.detach().neg() + 1.0);
            spikes.push(s);
            membrane.push(v.shallow_clone());
        }
        NeuronOutput { spikes: Tensor::stack(&spikes, 0), membrane: Tensor::stack(&membrane, 0) }
    }

    /// `1/τ` as an f64 (LIF) or as the tensor `sigmoid(w)` (PLIF), computed once per sequence.
    fn decay(&self) -> Decay {
        match &self.leak {
            Leak::Fixed { tau } => Decay::Fixed(*tau),
            Leak::Learned { w } => Decay::Learned(w.sigmoid()),
        }
    }
}

enum Decay {
    Fixed(f64),
    Learned(Tensor),
}

/// The membrane charge `h` from the previous membrane `v` and the input `x` (§2.4).
fn charge(v: &Tensor, x: &Tensor, decay: &Decay, multiply: bool) -> Tensor {
    match (decay, multiply) {
        (Decay::Fixed(tau), false) => v - v / *tau + x,
        (Decay::Fixed(tau), true) => v * (1.0 - 1.0 / *tau) + x,
        (Decay::Learned(rate), false) => v - v * rate + x,
        (Decay::Learned(rate), true) => v * (rate.neg() + 1.0) + x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn lif(threshold: f64) -> MultiStepLif {
        let surrogate = ATan { alpha: 5.0 };
        MultiStepLif {
            leak: Leak::Fixed { tau: 2.0 },
            v_threshold: threshold,
            surrogate,
            charge_formula: ChargeFormula::Spikingjelly2,
        }
    }

    #[test]
    fn equality_fires_and_resets_to_zero() {
        let input = Tensor::from_slice(&[0.5f32, 0.75, 0.5]).reshape([3, 1, 1]);
        let out = lif(1.0).forward(&input, true);
        assert_eq!(Vec::<f32>::try_from(out.spikes.flatten(0, -1)).unwrap(), vec![0.0, 1.0, 0.0]);
        assert_eq!(Vec::<f32>::try_from(out.membrane.flatten(0, -1)).unwrap(), vec![0.5, 0.0, 0.5]);
    }

    #[test]
    fn surrogate_gradient_is_the_atan_slope() {
        let u = Tensor::from_slice(&[-0.3f32, 0.0, 0.2]).set_requires_grad(true);
        ATan { alpha: 5.0 }.spike(&u).sum(Kind::Float).backward();
        let expected: Vec<f32> = [-0.3f64, 0.0, 0.2].iter().map(|u| (2.5 / (1.0 + (PI * 2.5 * u).powi(2))) as f32).collect();
        let got = Vec::<f32>::try_from(u.grad()).unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn output_layer_never_spikes_and_integrates() {
        let input = Tensor::ones([4, 2, 3], (Kind::Float, Device::Cpu));
        let out = lif(1e9).forward(&input, false);
        assert_eq!(out.spikes.sum(Kind::Float).double_value(&[]), 0.0);
        assert_eq!(out.membrane.double_value(&[3, 0, 0]), 1.875);
    }
}
