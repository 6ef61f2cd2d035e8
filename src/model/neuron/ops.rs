//! The op-by-op neuron, the oracle of the fused kernels (docs/method.md, "Neurons"; §2.4): libtorch
//! ops step by step, autograd through them, exactly as SpikingJelly's multi-step loop computes
//! them. The loop does only the charge `h = charge(v, x)`, the detached threshold test and the
//! reset `v = h·(1 − s̄)`; the surrogate runs once over the stacked pre-reset membrane, and only
//! when a gradient is wanted.

use super::formula::{ATan, Readout};
use tch::Tensor;

/// `1/τ`: a fixed f64 (LIF) or the tensor `sigmoid(w)` (PLIF), computed once per sequence.
pub enum Decay {
    Fixed(f64),
    Learned(Tensor),
}

/// The sequences a layer produced, as asked for by its [`Readout`].
pub struct OpsOutput {
    pub spikes: Option<Tensor>,
    pub membrane: Option<Tensor>,
}

/// Per step the charge, the detached threshold test and the reset, over a `(T, B, C)` current.
pub fn forward(
    current: &Tensor,
    decay: &Decay,
    multiply: bool,
    threshold: f64,
    surrogate: ATan,
    wants_grad: bool,
    readout: Readout,
) -> OpsOutput {
    let inputs = current.unbind(0);
    let mut v = inputs[0].zeros_like();
    let mut charged = Vec::with_capacity(inputs.len());
    let mut membrane = Vec::with_capacity(inputs.len());
    for x in &inputs {
        let h = charge(&v, x, decay, multiply);
        let fired = h.ge(threshold).to_kind(h.kind());
        v = &h * (fired.neg() + 1.0);
        if readout.spikes {
            charged.push(if wants_grad { h } else { fired });
        }
        if readout.membrane {
            membrane.push(v.shallow_clone());
        }
    }
    let spikes = readout.spikes.then(|| {
        let stacked = Tensor::stack(&charged, 0);
        if wants_grad {
            surrogate.spike(&(stacked - threshold))
        } else {
            stacked
        }
    });
    OpsOutput { spikes, membrane: readout.membrane.then(|| Tensor::stack(&membrane, 0)) }
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
