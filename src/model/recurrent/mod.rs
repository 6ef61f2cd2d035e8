//! A recurrent layer of LIF neurons whose recurrent connections carry learned axonal delays
//! (DelRec; docs/method.md "Recurrent delays"). Presynaptic neuron j's spike reaches every
//! postsynaptic neuron through the triangular kernel `K_j` of [`kernel`], so the recurrent current
//! into neuron i at step t is
//!
//! `r_i(t) = Σ_{k=1}^{L−1} Σ_j W[i,j] · K_j[k] · s_j(t − k)`   (no spikes before t = 0),
//!
//! and each step charges `I(t) = x(t) + μ ⊙ r(t)` into a [`StepLif`], where `μ` is the recurrent
//! dropout mask `(B, N)`, fixed over time (1 in eval). Two buffers give the same sums
//! ([`RecurrentBuffer`]): the postsynaptic one holds the future currents `W·(s(t)·K[k])` for
//! every tap (the original's computation, `L` products per step); the presynaptic one holds the
//! future kernel values `Σ_k K_j[k]·s_j(t − k)` and multiplies by `W` once per step. This module
//! computes both with autograd; [`fused`] computes the presynaptic sums with its own backward.

pub mod cuda_step;
pub mod eval_form;
pub mod fused;
pub mod kernel;
pub mod network;

use super::neuron::step::StepLif;
use crate::config::RecurrentBuffer;
use tch::{nn, Kind, Tensor};

/// One layer's recurrent weights `W (N, N)` (`W[i, j]` from j to i), delays `d (N)` and, when
/// each neuron learns its kernel width, the spread logits `p (N)`.
#[derive(Debug)]
pub struct RecurrentDelays {
    pub weight: Tensor,
    pub delays: Tensor,
    pub spread: Option<Tensor>,
    pub neuron: StepLif,
    pub buffer: RecurrentBuffer,
}

/// A pass's spikes and post-reset membrane, `(T, B, N)` each.
#[derive(Debug)]
pub struct RecurrentOutput {
    pub spikes: Tensor,
    pub membrane: Tensor,
}

impl RecurrentDelays {
    /// A layer of `n` neurons with zero parameters under `path` (`recurrent_weights`,
    /// `recurrent_delays`, and `p_spread` when `learns_spread`), to be initialised by its model.
    pub fn new(path: &nn::Path, n: i64, learns_spread: bool, neuron: StepLif, buffer: RecurrentBuffer) -> Self {
        RecurrentDelays {
            weight: path.zeros("recurrent_weights", &[n, n]),
            delays: path.zeros("recurrent_delays", &[n]),
            spread: learns_spread.then(|| path.zeros("p_spread", &[n])),
            neuron,
            buffer,
        }
    }

    /// The kernel `(N, L)` at width σ for the given delays (the parameter, or a rounded copy).
    pub fn kernel(&self, delays: &Tensor, sigma: f64) -> Tensor {
        kernel::triangle_kernel(delays, &kernel::widths(self.spread.as_ref(), sigma, delays))
    }

    /// Runs the layer over the feedforward current `x (T, B, N)` with `kernel`, in training or
    /// eval mode, with the recurrent dropout mask `(B, N)` if any.
    pub fn forward(&self, x: &Tensor, kernel: &Tensor, train: bool, mask: Option<&Tensor>) -> RecurrentOutput {
        let taps = kernel.size()[1];
        let (batch, n) = (x.size()[1], x.size()[2]);
        let mut pending = Tensor::zeros([batch, n, taps - 1], (Kind::Float, x.device()));
        let mut v = Tensor::zeros([batch, n], (Kind::Float, x.device()));
        let (mut spikes, mut membrane) = (Vec::new(), Vec::new());
        for input in x.unbind(0) {
            let arriving = pending.select(2, 0);
            let recurrent = match self.buffer {
                RecurrentBuffer::Postsynaptic => arriving,
                RecurrentBuffer::Presynaptic | RecurrentBuffer::Fused => arriving.matmul(&self.weight.tr()),
            };
            let current = with_recurrent(&input, &recurrent, mask);
            let (s, next) = self.neuron.step(&v, &current, train);
            pending = advance(&pending) + self.sent(&s, kernel);
            spikes.push(s);
            membrane.push(next.shallow_clone());
            v = next;
        }
        RecurrentOutput { spikes: Tensor::stack(&spikes, 0), membrane: Tensor::stack(&membrane, 0) }
    }

    /// What the spikes `s (B, N)` add to the buffer for taps 1..L−1, `(B, N, L−1)`: postsynaptic
    /// currents `W·(s ⊙ K)` formed over all `L` taps as the original does, or the presynaptic
    /// `s ⊙ K`.
    fn sent(&self, spikes: &Tensor, kernel: &Tensor) -> Tensor {
        let taps = kernel.size()[1];
        match self.buffer {
            RecurrentBuffer::Postsynaptic => self.weight.matmul(&(spikes.unsqueeze(-1) * kernel)).narrow(2, 1, taps - 1),
            RecurrentBuffer::Presynaptic | RecurrentBuffer::Fused => spikes.unsqueeze(-1) * kernel.narrow(1, 1, taps - 1),
        }
    }
}

/// A step's input current with the recurrent current added, through the dropout mask if any:
/// `x + μ ⊙ r`.
fn with_recurrent(input: &Tensor, recurrent: &Tensor, mask: Option<&Tensor>) -> Tensor {
    match mask {
        Some(mask) => input + recurrent * mask,
        None => input + recurrent,
    }
}

/// The buffer one step later: slot k holds what slot k+1 held, the last slot is empty.
fn advance(pending: &Tensor) -> Tensor {
    let slots = pending.size()[2];
    pending.narrow(2, 1, slots - 1).constant_pad_nd([0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::neuron::step::{Reset, Surrogate, Triangle};
    use tch::Device;

    fn layer(buffer: RecurrentBuffer) -> RecurrentDelays {
        let neuron = StepLif {
            tau: 2.0,
            threshold: 1.0,
            reset: Reset::Soft,
            detach_reset: false,
            surrogate: Surrogate::Triangle(Triangle { gamma: 1.0 }),
        };
        let vs = nn::VarStore::new(Device::Cpu);
        RecurrentDelays::new(&vs.root(), 2, true, neuron, buffer)
    }

    /// Neuron 0 fires at step 0; with delay 2 its spike reaches neuron 1 three steps later.
    #[test]
    fn a_spike_arrives_one_plus_its_delay_steps_later() {
        for buffer in [RecurrentBuffer::Postsynaptic, RecurrentBuffer::Presynaptic] {
            let layer = layer(buffer);
            tch::no_grad(|| {
                layer.weight.shallow_clone().copy_(&Tensor::from_slice(&[0.0f32, 0.0, 1.5, 0.0]).reshape([2, 2]));
                layer.delays.shallow_clone().copy_(&Tensor::from_slice(&[2.0f32, 0.0]));
            });
            let x = Tensor::zeros([6, 1, 2], (Kind::Float, Device::Cpu));
            let _ = x.get(0).get(0).get(0).fill_(1.0);
            let out = tch::no_grad(|| layer.forward(&x, &layer.kernel(&layer.delays, 0.0), false, None));
            let fired: Vec<f32> = Vec::try_from(out.spikes.select(2, 1).flatten(0, -1)).unwrap();
            assert_eq!(fired, vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0], "{buffer:?}");
        }
    }
}
