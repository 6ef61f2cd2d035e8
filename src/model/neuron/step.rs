//! The single-step LIF that a layer with its own time loop drives one step at a time (the
//! recurrent-delay layer, docs/method.md "Recurrent delays", neurons). Per step, with
//! `decay_input = false` and `v_0 = 0`:
//! - charge: `h = v·fl32(1 − 1/τ) + x`; in eval, a hard-reset neuron charges `h = v − v/τ + x`
//!   (the TorchScript eval path of spikingjelly 0.0.0.0.14, which DelRec pins);
//! - fire:   `s = H(h − θ)`, equality fires; backward through the [`Surrogate`];
//! - reset:  soft `v = h − θ·ŝ`, or hard to 0 `v = (1 − ŝ)·h + ŝ·0`, where `ŝ` is `s`, or `s`
//!   detached when the reset is detached.
//!
//! Every operation is a libtorch op with autograd through it, in the order written above.

use super::formula::{heaviside, ATan};
use tch::Tensor;

/// Triangle surrogate: forward `H(u)`; backward `g · max(0, γ − |u|)/γ²`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Triangle {
    pub gamma: f64,
}

impl Triangle {
    /// The surrogate slope at `u`, with no gradient of its own.
    pub fn slope(&self, u: &Tensor) -> Tensor {
        (u.detach().abs().neg() + self.gamma).clamp_min(0.0) / (self.gamma * self.gamma)
    }
}

/// The surrogate gradient of the spike function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Surrogate {
    ATan(ATan),
    Triangle(Triangle),
}

impl Surrogate {
    /// The slope at `u`, with no gradient of its own.
    pub fn slope(&self, u: &Tensor) -> Tensor {
        match self {
            Surrogate::ATan(atan) => atan.slope(u),
            Surrogate::Triangle(triangle) => triangle.slope(u),
        }
    }

    /// Heaviside spikes whose gradient with respect to `u` is `g · slope(u)`.
    pub fn spike(&self, u: &Tensor) -> Tensor {
        heaviside(u, &self.slope(u))
    }
}

/// What firing does to the membrane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// Subtract the threshold: `v = h − θ·ŝ`.
    Soft,
    /// Set to 0: `v = (1 − ŝ)·h + ŝ·0`.
    Hard,
}

/// The constants of a single-step LIF.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLif {
    /// τ in steps, greater than 1.
    pub tau: f64,
    pub threshold: f64,
    pub reset: Reset,
    /// Whether the spike that resets the membrane carries no gradient.
    pub detach_reset: bool,
    pub surrogate: Surrogate,
}

impl StepLif {
    /// One step from the previous post-reset membrane `v` and the input current `x`, both
    /// `(B, C)`, in training or eval mode: the spikes and the post-reset membrane.
    pub fn step(&self, v: &Tensor, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let charged = self.charge(v, x, train);
        let spikes = self.surrogate.spike(&(&charged - self.threshold));
        let resetting = if self.detach_reset { spikes.detach() } else { spikes.shallow_clone() };
        let membrane = self.reset(&charged, &resetting);
        (spikes, membrane)
    }

    /// The membrane `h` after charging `v` with `x`.
    pub fn charge(&self, v: &Tensor, x: &Tensor, train: bool) -> Tensor {
        match (self.reset, train) {
            (Reset::Hard, false) => v - v / self.tau + x,
            _ => v * (1.0 - 1.0 / self.tau) + x,
        }
    }

    /// The membrane after `h` fired `spikes` (detached or not, as the caller chose).
    pub fn reset(&self, charged: &Tensor, spikes: &Tensor) -> Tensor {
        match self.reset {
            Reset::Soft => charged - spikes * self.threshold,
            Reset::Hard => (spikes.neg() + 1.0) * charged + spikes * 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn lif(reset: Reset, detach_reset: bool) -> StepLif {
        StepLif { tau: 2.0, threshold: 1.0, reset, detach_reset, surrogate: Surrogate::Triangle(Triangle { gamma: 1.0 }) }
    }

    fn run(neuron: &StepLif, inputs: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut v = Tensor::zeros([1, 1], (Kind::Float, Device::Cpu));
        let (mut spikes, mut membrane) = (Vec::new(), Vec::new());
        for &x in inputs {
            let (s, next) = neuron.step(&v, &Tensor::from_slice(&[x]).reshape([1, 1]), true);
            spikes.push(s.double_value(&[0, 0]) as f32);
            membrane.push(next.double_value(&[0, 0]) as f32);
            v = next;
        }
        (spikes, membrane)
    }

    #[test]
    fn soft_reset_keeps_the_excess_and_hard_reset_drops_it() {
        let inputs = [0.5, 1.5, 0.25];
        assert_eq!(run(&lif(Reset::Soft, false), &inputs), (vec![0.0, 1.0, 0.0], vec![0.5, 0.75, 0.625]));
        assert_eq!(run(&lif(Reset::Hard, true), &inputs), (vec![0.0, 1.0, 0.0], vec![0.5, 0.0, 0.25]));
    }

    #[test]
    fn triangle_slope_is_one_minus_the_distance_to_threshold() {
        let u = Tensor::from_slice(&[-1.5f32, -0.25, 0.0, 0.5, 1.0]).set_requires_grad(true);
        let spikes = Surrogate::Triangle(Triangle { gamma: 1.0 }).spike(&u);
        assert_eq!(Vec::<f32>::try_from(spikes.detach()).unwrap(), vec![0.0, 0.0, 1.0, 1.0, 1.0]);
        spikes.sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(u.grad()).unwrap(), vec![0.0, 0.75, 1.0, 0.5, 0.0]);
    }

    /// A detached reset stops the gradient through the spike that resets the membrane: with
    /// `v = h − θ·s` the membrane's gradient reaches `h` once directly and once through `s`.
    #[test]
    fn a_detached_reset_carries_no_gradient_through_the_spike() {
        let gradient = |detach_reset: bool| {
            let x = Tensor::from_slice(&[1.25f32]).reshape([1, 1]).set_requires_grad(true);
            let (_, v) = lif(Reset::Soft, detach_reset).step(&Tensor::zeros([1, 1], (Kind::Float, Device::Cpu)), &x, true);
            v.sum(Kind::Float).backward();
            x.grad().double_value(&[0, 0])
        };
        assert_eq!(gradient(true), 1.0);
        assert_eq!(gradient(false), 1.0 - 0.75);
    }
}
