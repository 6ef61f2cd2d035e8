//! The fused multi-step LIF/PLIF kernel on the CPU (docs/method.md, "Fused neurons"): one pass
//! over all T steps of a `(T, B, C)` current, parallel over chunks of neurons, each chunk's
//! recurrence running over time on contiguous rows.
//!
//! Forward per neuron, in float32 and in the order libtorch's ops round (see [`super::formula::Charge`]):
//! `h_t = charge(v_{t−1}, x_t)`, `f_t = [h_t ≥ θ]`, `v_t = h_t·(1 − f_t)`; it keeps `h` for the
//! backward. Backward, from the gradients of the spikes `g_s` and of the membrane `g_m`:
//! - `g_v,t = g_m,t ⊕ carry(g_h,t+1)` (the charge's derivative in `v`, accumulated as autograd does);
//! - `g_h,t = g_v,t·(1 − f_t) + g_s,t·slope(h_t − θ)`, with `slope(u) = (α/2)/(1 + (π/2·α·u)²)`;
//! - `g_x,t = g_h,t`; for PLIF the per-step products with `v_{t−1}` give the gradient of
//!   `sigmoid(w)`, summed per step by libtorch and over steps from the last, as autograd sums it.
//!
//! The result equals the op-by-op oracle ([`super::ops`]) bitwise on the CPU (tested); the CUDA
//! kernel ([`super::cuda_kernel`]) computes the same float32 values.

use super::formula::{Dynamics32, FusedForward, FusedGrads, OutputGrads, Readout};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// Neurons per parallel task: large enough for vector loops, small enough to balance two cores.
const CHUNK: usize = 2048;

/// Runs the layer over a contiguous float32 `(T, B, C)` CPU input.
pub fn forward(input: &Tensor, dynamics: &Dynamics32, readout: Readout, save: bool) -> FusedForward {
    crate::op_count::kernel_launched();
    let shape = input.size();
    let x = Rows::of(input);
    let new = |wanted: bool| wanted.then(|| Tensor::empty(shape.as_slice(), (Kind::Float, Device::Cpu)));
    let (spikes, membrane, charged) = (new(readout.spikes), new(readout.membrane), new(save));
    let (s, m, h) = (spikes.as_ref().map(Rows::of), membrane.as_ref().map(Rows::of), charged.as_ref().map(Rows::of));
    for_chunks(x.neurons, |range| {
        let mut v = vec![0.0f32; range.len()];
        for t in 0..x.steps {
            let inputs = x.row(t, &range);
            let (mut spike_row, mut membrane_row, mut charged_row) = (
                s.as_ref().map(|r| r.row_mut(t, &range)),
                m.as_ref().map(|r| r.row_mut(t, &range)),
                h.as_ref().map(|r| r.row_mut(t, &range)),
            );
            for j in 0..range.len() {
                let charged = dynamics.charge.apply(v[j], inputs[j]);
                let fired = dynamics.firing.fired(charged);
                v[j] = charged * (1.0 - fired);
                if let Some(row) = spike_row.as_deref_mut() {
                    row[j] = fired;
                }
                if let Some(row) = membrane_row.as_deref_mut() {
                    row[j] = v[j];
                }
                if let Some(row) = charged_row.as_deref_mut() {
                    row[j] = charged;
                }
            }
        }
    });
    FusedForward { spikes, membrane, charged }
}

/// The backward from the saved `charged` and the gradients reaching the outputs.
pub fn backward(charged: &Tensor, dynamics: &Dynamics32, grads: OutputGrads) -> FusedGrads {
    crate::op_count::kernel_launched();
    let shape = charged.size();
    let (grad_spikes, grad_membrane) = grads.contiguous();
    let input = Tensor::empty(shape.as_slice(), (Kind::Float, Device::Cpu));
    let terms = dynamics
        .charge
        .learns_rate()
        .then(|| Tensor::empty([shape[0], shape.iter().skip(1).product::<i64>()], (Kind::Float, Device::Cpu)));
    let (h, gx) = (Rows::of(charged), Rows::of(&input));
    let (gs, gm, rt) = (grad_spikes.as_ref().map(Rows::of), grad_membrane.as_ref().map(Rows::of), terms.as_ref().map(Rows::of));
    for_chunks(h.neurons, |range| {
        let mut grad_next = vec![0.0f32; range.len()];
        for t in (0..h.steps).rev() {
            let charged_row = h.row(t, &range);
            let previous_row = (t > 0).then(|| h.row(t - 1, &range));
            let (spike_grads, membrane_grads) = (gs.as_ref().map(|r| r.row(t, &range)), gm.as_ref().map(|r| r.row(t, &range)));
            let (input_row, mut term_row) = (gx.row_mut(t, &range), rt.as_ref().map(|r| r.row_mut(t, &range)));
            for j in 0..range.len() {
                let charged = charged_row[j];
                let grad_m = membrane_grads.map_or(0.0, |g| g[j]);
                let grad_v = if t + 1 == h.steps { grad_m } else { dynamics.charge.carry(grad_m, grad_next[j]) };
                let mut grad_h = grad_v * (1.0 - dynamics.firing.fired(charged));
                if let Some(g) = spike_grads {
                    grad_h += g[j] * dynamics.firing.slope(charged);
                }
                input_row[j] = grad_h;
                if let Some(row) = term_row.as_deref_mut() {
                    let previous = previous_row.map_or(0.0, |p| p[j] * (1.0 - dynamics.firing.fired(p[j])));
                    row[j] = dynamics.charge.rate_term(grad_h, previous).unwrap_or(0.0);
                }
                grad_next[j] = grad_h;
            }
        }
    });
    let rate = terms.as_ref().map(|terms| rate_gradient(terms, dynamics.charge.negates_rate_terms()));
    FusedGrads { input, rate_terms: terms, rate }
}

/// Sums each step's terms with libtorch (as autograd reduces a broadcast scalar's gradient), then
/// the steps from the last to the first, as autograd's buffer accumulates them.
pub fn rate_gradient(terms: &Tensor, negate: bool) -> Tensor {
    let per_step: Vec<Tensor> = (0..terms.size()[0]).map(|t| terms.get(t).sum(Kind::Float)).collect();
    let signed = |t: &Tensor| if negate { t.neg() } else { t.shallow_clone() };
    let mut steps = per_step.iter().rev();
    match steps.next() {
        Some(last) => steps.fold(signed(last), |sum, term| sum + signed(term)),
        None => Tensor::zeros([], (Kind::Float, Device::Cpu)),
    }
}

/// A contiguous float32 `(T, …)` tensor seen as T rows of `neurons` values.
#[derive(Clone, Copy)]
struct Rows {
    data: *mut f32,
    steps: usize,
    neurons: usize,
}

// SAFETY: the kernels write disjoint neuron ranges of each row from different tasks, and the
// tensors outlive the parallel loop that uses them.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

impl Rows {
    fn of(tensor: &Tensor) -> Rows {
        assert!(
            tensor.device() == Device::Cpu && tensor.kind() == Kind::Float && tensor.is_contiguous(),
            "the fused neuron kernel takes contiguous float32 CPU tensors"
        );
        let steps = tensor.size().first().copied().unwrap_or(0) as usize;
        let neurons = tensor.numel().checked_div(steps).unwrap_or(0);
        Rows { data: tensor.data_ptr() as *mut f32, steps, neurons }
    }

    fn row(&self, t: usize, range: &std::ops::Range<usize>) -> &[f32] {
        // SAFETY: t < steps and range ⊂ 0..neurons, inside the tensor's storage.
        unsafe { std::slice::from_raw_parts(self.data.add(t * self.neurons + range.start), range.len()) }
    }

    #[allow(clippy::mut_from_ref)]
    fn row_mut(&self, t: usize, range: &std::ops::Range<usize>) -> &mut [f32] {
        // SAFETY: as `row`; each task owns its range of every row it writes.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(t * self.neurons + range.start), range.len()) }
    }
}

fn for_chunks(neurons: usize, task: impl Fn(std::ops::Range<usize>) + Sync) {
    (0..neurons.div_ceil(CHUNK)).into_par_iter().for_each(|c| task(c * CHUNK..((c + 1) * CHUNK).min(neurons)));
}
