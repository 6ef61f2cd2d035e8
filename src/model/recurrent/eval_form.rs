//! The evaluation form of a recurrent-delay network, as plain data (docs/method.md "Recurrent
//! delays", deployment): what `eval` computes with integer delays (`recurrent.eval_delays =
//! integer`, σ = 0), and what `export` writes and `infer` runs.
//!
//! At σ = 0 each presynaptic neuron's kernel is one tap of weight 1 at `1 + d_j`, with
//! `d_j = max(0, round(delay_j))` (half to even), so a block computes at step t
//!
//! `c(t) = fma(W·x(t) + b, scale, shift)` (the folded BatchNorm, `shd`'s blocks), then
//! `I_i(t) = c_i(t) + Σ_j R[i,j]·s_j(t − 1 − d_j)` (recurrent blocks), then the neuron:
//! `h = charge(v, I)`, `s = [h − θ ≥ 0]`, and `v = h − θ·s` (soft reset) or `h·(1 − s)` (hard).
//!
//! The readout is `W·x(t) + b` at every step, or (`shd`) the membrane of a LIF fed with it.

use super::network::{Cell, RecurrentNetwork};
use super::RecurrentDelays;
use crate::model::eval_form::{fold, to_vec_f32, FoldedNorm};
use crate::model::layers::Linear;
use crate::model::loss::Scoring;
use crate::model::neuron::step::{Reset, StepLif};
use crate::model::neuron::{Charge, MultiStepLif};

/// A dense layer `y = W·x + b`: `(out, in)` weights, row-major, and `(out)` biases.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalDense {
    pub in_channels: usize,
    pub out_channels: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A neuron in eval mode: its charge, threshold and reset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalNeuron {
    pub charge: Charge,
    pub threshold: f32,
    pub reset: Reset,
}

impl EvalNeuron {
    /// One step from the post-reset membrane `v` with input `x`: the spike, and `v` updated.
    #[inline(always)]
    pub fn fire(&self, x: f32, v: &mut f32) -> f32 {
        let h = self.charge.apply(*v, x);
        let spike = if h - self.threshold >= 0.0 { 1.0 } else { 0.0 };
        *v = match self.reset {
            Reset::Soft => h - spike * self.threshold,
            Reset::Hard => (1.0 - spike) * h,
        };
        spike
    }
}

/// The recurrent connections of a block: `(N, N)` weights (`R[i, j]` from j to i) and each
/// presynaptic neuron's integer delay, the steps beyond the one every recurrent spike takes.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRecurrence {
    pub weights: Vec<f32>,
    pub delays: Vec<u16>,
}

impl EvalRecurrence {
    /// The longest delay.
    pub fn max_delay(&self) -> usize {
        self.delays.iter().copied().max().unwrap_or(0) as usize
    }
}

/// One hidden block.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalBlock {
    pub dense: EvalDense,
    pub norm: Option<FoldedNorm>,
    pub neuron: EvalNeuron,
    pub recurrence: Option<EvalRecurrence>,
}

/// The readout: a dense layer, then (`shd`) a LIF whose membrane is the output.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReadout {
    pub dense: EvalDense,
    pub neuron: Option<EvalNeuron>,
}

/// A recurrent-delay network in eval form.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentEvalNetwork {
    pub blocks: Vec<EvalBlock>,
    pub readout: EvalReadout,
    pub scoring: Scoring,
    pub time_step_ms: f64,
}

impl RecurrentEvalNetwork {
    /// The eval form of `network` with integer delays (its variables are read, not changed).
    pub fn of(network: &RecurrentNetwork, time_step_ms: f64) -> RecurrentEvalNetwork {
        tch::no_grad(|| {
            let blocks = network
                .blocks
                .iter()
                .map(|block| {
                    let (neuron, recurrence) = match &block.cell {
                        Cell::Recurrent { layer, .. } => (step_neuron(&layer.neuron), Some(recurrence(layer))),
                        Cell::Plain(neuron) => (plain_neuron(neuron), None),
                    };
                    EvalBlock { dense: dense(&block.linear), norm: block.norm.as_ref().map(fold), neuron, recurrence }
                })
                .collect();
            let readout =
                EvalReadout { dense: dense(&network.readout.linear), neuron: network.readout.neuron.as_ref().map(plain_neuron) };
            RecurrentEvalNetwork { blocks, readout, scoring: network.architecture.scoring(), time_step_ms }
        })
    }

    pub fn n_inputs(&self) -> usize {
        self.blocks[0].dense.in_channels
    }

    pub fn n_outputs(&self) -> usize {
        self.readout.dense.out_channels
    }
}

fn dense(linear: &Linear) -> EvalDense {
    let size = linear.weight.size();
    let out_channels = size[0] as usize;
    EvalDense {
        in_channels: size[1] as usize,
        out_channels,
        weights: to_vec_f32(&linear.weight),
        bias: linear.bias.as_ref().map_or(vec![0.0; out_channels], to_vec_f32),
    }
}

fn recurrence(layer: &RecurrentDelays) -> EvalRecurrence {
    let delays = to_vec_f32(&layer.delays).iter().map(|d| d.round_ties_even().clamp(0.0, f32::from(u16::MAX)) as u16).collect();
    EvalRecurrence { weights: to_vec_f32(&layer.weight), delays }
}

/// A recurrent layer's neuron in eval mode: a hard reset charges `v − v/τ + x`, a soft one
/// `v·fl32(1 − 1/τ) + x` ([`StepLif::charge`]).
fn step_neuron(neuron: &StepLif) -> EvalNeuron {
    let charge = match neuron.reset {
        Reset::Hard => Charge::Divide(neuron.tau as f32),
        Reset::Soft => Charge::Multiply((1.0 - 1.0 / neuron.tau) as f32),
    };
    EvalNeuron { charge, threshold: neuron.threshold as f32, reset: neuron.reset }
}

/// A multi-step LIF in eval mode (hard reset).
fn plain_neuron(neuron: &MultiStepLif) -> EvalNeuron {
    EvalNeuron { charge: neuron.eval_charge(), threshold: neuron.v_threshold as f32, reset: Reset::Hard }
}

#[cfg(test)]
pub(crate) mod example {
    use super::*;

    /// Two inputs into two soft-reset neurons (τ = 2, θ = 1) through the identity; neuron 0
    /// reaches neuron 1 with weight 1.5 and delay 2; the readout is the spikes, scored `Σ_t`.
    pub fn tiny(reset: Reset) -> RecurrentEvalNetwork {
        let identity = EvalDense { in_channels: 2, out_channels: 2, weights: vec![1.0, 0.0, 0.0, 1.0], bias: vec![0.0; 2] };
        let charge = match reset {
            Reset::Soft => Charge::Multiply(0.5),
            Reset::Hard => Charge::Divide(2.0),
        };
        let block = EvalBlock {
            dense: identity.clone(),
            norm: None,
            neuron: EvalNeuron { charge, threshold: 1.0, reset },
            recurrence: Some(EvalRecurrence { weights: vec![0.0, 0.0, 1.5, 0.0], delays: vec![2, 0] }),
        };
        RecurrentEvalNetwork {
            blocks: vec![block],
            readout: EvalReadout { dense: identity, neuron: None },
            scoring: Scoring::Sum,
            time_step_ms: 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_and_hard_resets_leave_what_their_formulas_say() {
        let soft = EvalNeuron { charge: Charge::Multiply(0.5), threshold: 1.0, reset: Reset::Soft };
        let mut v = 0.0;
        assert_eq!((soft.fire(1.5, &mut v), v), (1.0, 0.5));
        assert_eq!((soft.fire(0.25, &mut v), v), (0.0, 0.5));
        let hard = EvalNeuron { reset: Reset::Hard, ..soft };
        let mut v = 0.0;
        assert_eq!((hard.fire(1.5, &mut v), v), (1.0, 0.0));
    }
}
