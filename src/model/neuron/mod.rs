//! Multi-step LIF and PLIF neurons with a hard reset and a surrogate gradient (docs/method.md,
//! "Neurons"; docs/method.md §2.4–§2.5), and the choice of the backend that computes them.
//!
//! Per step t, with `decay_input = false`, `v_reset = 0` and `v_0 = 0`:
//! - charge: `h = v − v/τ + x` (SpikingJelly 2.0) or `h = v·(1 − 1/τ) + x` (paper-era training);
//!   PLIF replaces `1/τ` by `sigmoid(w)` with a learned scalar `w`, and its paper-era form
//!   `h = v·(1 − sigmoid(w)) + x` holds in eval too;
//! - fire:   `s = H(h − θ)`, equality fires; backward through the [`ATan`] surrogate;
//! - reset:  `v = (1 − s̄)·h` with `s̄` detached.
//!
//! The membrane trace `v_seq` holds `v` after the reset.
//!
//! The backends compute the same float32 numbers from the same formulas ([`formula`]), chosen
//! once per network ([`backend_on`]):
//! - `ops` ([`ops`]), the oracle: libtorch ops step by step, autograd through them;
//! - `fused`: one kernel over all steps, forward and backward, on the CPU ([`cpu_kernel`]) or on
//!   CUDA ([`cuda_kernel`], used once it has matched the CPU kernel there); its backward is run by
//!   [`Segment::backward`] (segmented backward: tch has no custom autograd). On CUDA, PLIF's rate
//!   stays on the device: no layer reads it back to the host.

pub mod cpu_kernel;
pub mod cuda_kernel;
pub mod formula;
pub mod ops;
pub mod step;

pub use formula::{ATan, Charge, Readout};

use crate::config::{ChargeFormula, NeuronBackend, NeuronType};
use anyhow::Result;
use formula::{Dynamics32, Firing, FusedForward, FusedGrads, LayerCharge, OutputGrads};
use ops::Decay;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use tch::{nn, Device, Kind, Tensor};

/// The neuron backend that runs on `device`, chosen once: the configured one, except that the
/// fused kernel runs on CUDA only once it has been checked there against the CPU kernel. The
/// note says why it does not; it is also printed once per device on stderr.
pub fn backend_on(configured: NeuronBackend, device: Device) -> (NeuronBackend, Option<String>) {
    let why = match (configured, device) {
        (NeuronBackend::Fused, Device::Cuda(index)) => match cuda_kernel::verified(index) {
            Ok(()) => return (NeuronBackend::Fused, None),
            Err(why) => format!("the fused CUDA kernel is not used: {why}"),
        },
        (NeuronBackend::Fused, Device::Cpu) | (NeuronBackend::Ops, _) => return (configured, None),
        (NeuronBackend::Fused, other) => format!("no fused kernel for {other:?}"),
    };
    static TOLD: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut told = TOLD.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if told.insert(format!("{device:?}")) {
        eprintln!("warning: {why}; the neurons run op by op (neuron_backend=ops)");
    }
    (NeuronBackend::Ops, Some(why))
}

/// How fast the membrane leaks: a fixed τ in steps (LIF) or a learned `w` with `1/τ = sigmoid(w)`.
#[derive(Debug)]
pub enum Leak {
    Fixed { tau: f64 },
    Learned { w: Tensor },
}

/// A layer's output sequences, each `(T, B, C)`, as asked for by its [`Readout`]. With the fused
/// backend and a gradient wanted, `segment` holds what its backward needs.
#[derive(Debug)]
pub struct NeuronOutput {
    pub spikes: Option<Tensor>,
    pub membrane: Option<Tensor>,
    pub segment: Option<Segment>,
}

/// A layer of multi-step LIF or PLIF neurons: the dynamics' parameters, and the backend.
#[derive(Debug)]
pub struct MultiStepLif {
    pub leak: Leak,
    pub v_threshold: f64,
    pub surrogate: ATan,
    pub charge_formula: ChargeFormula,
    pub backend: NeuronBackend,
}

impl MultiStepLif {
    /// A PLIF layer stores its `w` under `path` as the reference does (`model.k.w`), initialised
    /// to `−ln(τ − 1)`.
    pub fn new(path: &nn::Path, neuron: NeuronType, tau: f64, v_threshold: f64, surrogate: ATan, formula: ChargeFormula) -> Self {
        let leak = match neuron {
            NeuronType::Lif => Leak::Fixed { tau },
            NeuronType::Plif => Leak::Learned { w: path.var("w", &[], nn::Init::Const(-(tau - 1.0).ln())) },
        };
        MultiStepLif { leak, v_threshold, surrogate, charge_formula: formula, backend: NeuronBackend::Ops }
    }

    /// The same layer computed by `backend`.
    pub fn with_backend(self, backend: NeuronBackend) -> Self {
        MultiStepLif { backend, ..self }
    }

    /// The membrane time constant in steps (for PLIF, `1/sigmoid(w)`, read from the device).
    pub fn tau_steps(&self) -> f64 {
        match &self.leak {
            Leak::Fixed { tau } => *tau,
            Leak::Learned { w } => 1.0 / w.sigmoid().double_value(&[]),
        }
    }

    /// Runs the layer over a `(T, B, C)` input current. `train` selects the training charge
    /// formula (they differ only for a `paper2023` LIF). A gradient flows when the current or PLIF `w`
    /// requires one and grad mode is on; otherwise no surrogate is computed.
    pub fn forward(&self, current: &Tensor, train: bool, readout: Readout) -> Result<NeuronOutput> {
        let multiply = self.multiplies(train);
        let decay = self.decay();
        let wants_grad = current.requires_grad() || matches!(&decay, Decay::Learned(rate) if rate.requires_grad());
        match self.backend {
            NeuronBackend::Ops => {
                let out = ops::forward(current, &decay, multiply, self.v_threshold, self.surrogate, wants_grad, readout);
                Ok(NeuronOutput { spikes: out.spikes, membrane: out.membrane, segment: None })
            }
            NeuronBackend::Fused => self.forward_fused(current, decay, multiply, wants_grad, readout),
        }
    }

    /// One fused kernel over all steps; with a gradient wanted, the outputs are leaves and the
    /// returned [`Segment`] carries the backward.
    fn forward_fused(
        &self,
        current: &Tensor,
        decay: Decay,
        multiply: bool,
        wants_grad: bool,
        readout: Readout,
    ) -> Result<NeuronOutput> {
        let charge = layer_charge(decay, multiply);
        let firing = Firing::new(self.v_threshold, self.surrogate);
        let input = current.detach().to_kind(Kind::Float).contiguous();
        let pass = fused_forward(&input, &charge, firing, readout, wants_grad)?;
        if !wants_grad {
            return Ok(NeuronOutput { spikes: pass.spikes, membrane: pass.membrane, segment: None });
        }
        let leaf = |t: Option<Tensor>| t.map(|t| t.set_requires_grad(true));
        let (spikes, membrane) = (leaf(pass.spikes), leaf(pass.membrane));
        let segment = Segment {
            current: current.shallow_clone(),
            spikes: spikes.as_ref().map(Tensor::shallow_clone),
            membrane: membrane.as_ref().map(Tensor::shallow_clone),
            charged: pass.charged.expect("saved for the backward"),
            charge,
            firing,
        };
        Ok(NeuronOutput { spikes, membrane, segment: Some(segment) })
    }

    /// The float32 charge that eval mode computes, for engines outside libtorch.
    pub fn eval_charge(&self) -> Charge {
        tch::no_grad(|| layer_charge(self.decay(), self.multiplies(false)).on_host())
    }

    fn multiplies(&self, train: bool) -> bool {
        self.charge_formula.multiplies(matches!(self.leak, Leak::Learned { .. }), train)
    }

    fn decay(&self) -> Decay {
        match &self.leak {
            Leak::Fixed { tau } => Decay::Fixed(*tau),
            Leak::Learned { w } => Decay::Learned(w.sigmoid()),
        }
    }
}

/// The fused kernels' charge for a decay: a float32 constant for LIF, the rate tensor for PLIF.
fn layer_charge(decay: Decay, multiply: bool) -> LayerCharge {
    match decay {
        Decay::Fixed(tau) if multiply => LayerCharge::Constant(Charge::Multiply((1.0 - 1.0 / tau) as f32)),
        Decay::Fixed(tau) => LayerCharge::Constant(Charge::Divide(tau as f32)),
        Decay::Learned(rate) => LayerCharge::Learned { multiply, rate },
    }
}

/// The fused forward over a contiguous float32 `(T, B, C)` input, on its device.
fn fused_forward(input: &Tensor, charge: &LayerCharge, firing: Firing, readout: Readout, save: bool) -> Result<FusedForward> {
    if input.device().is_cuda() {
        return cuda_kernel::forward(input, charge, firing, readout, save);
    }
    Ok(cpu_kernel::forward(input, &Dynamics32 { charge: charge.on_host(), firing }, readout, save))
}

/// The fused backward from the saved `charged` and the outputs' gradients, on their device.
fn fused_backward(charged: &Tensor, charge: &LayerCharge, firing: Firing, grads: OutputGrads) -> Result<FusedGrads> {
    if charged.device().is_cuda() {
        return cuda_kernel::backward(charged, charge, firing, grads);
    }
    Ok(cpu_kernel::backward(charged, &Dynamics32 { charge: charge.on_host(), firing }, grads))
}

/// The backward of one fused layer, run after the gradient has reached its output leaves: it
/// computes the gradient of the input current (and of PLIF's `sigmoid(w)`) with the fused kernel,
/// then carries them into the graph below with `Σ current·g` (whose gradient is exactly `g`).
#[derive(Debug)]
pub struct Segment {
    current: Tensor,
    spikes: Option<Tensor>,
    membrane: Option<Tensor>,
    charged: Tensor,
    charge: LayerCharge,
    firing: Firing,
}

impl Segment {
    pub fn backward(&self) -> Result<()> {
        let grad_of = |leaf: &Option<Tensor>| leaf.as_ref().map(Tensor::grad).filter(Tensor::defined);
        let (grad_spikes, grad_membrane) = (grad_of(&self.spikes), grad_of(&self.membrane));
        if grad_spikes.is_none() && grad_membrane.is_none() {
            return Ok(());
        }
        let outputs = OutputGrads { spikes: grad_spikes.as_ref(), membrane: grad_membrane.as_ref() };
        let grads = fused_backward(&self.charged, &self.charge, self.firing, outputs)?;
        let mut objective = Vec::new();
        if self.current.requires_grad() {
            objective.push((&self.current * grads.input).sum(Kind::Float));
        }
        if let (LayerCharge::Learned { rate, .. }, Some(grad_rate)) = (&self.charge, grads.rate) {
            if rate.requires_grad() {
                objective.push((rate * grad_rate).sum(Kind::Float));
            }
        }
        if let Some(first) = objective.first() {
            objective[1..].iter().fold(first.shallow_clone(), |sum, term| sum + term).backward();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;
    use tch::Device;

    fn lif(threshold: f64, backend: NeuronBackend) -> MultiStepLif {
        let surrogate = ATan { alpha: 5.0 };
        MultiStepLif {
            leak: Leak::Fixed { tau: 2.0 },
            v_threshold: threshold,
            surrogate,
            charge_formula: ChargeFormula::Spikingjelly2,
            backend,
        }
    }

    fn values(t: &Option<Tensor>) -> Vec<f32> {
        Vec::<f32>::try_from(t.as_ref().unwrap().flatten(0, -1)).unwrap()
    }

    #[test]
    fn equality_fires_and_resets_to_zero() {
        let input = Tensor::from_slice(&[0.5f32, 0.75, 0.5]).reshape([3, 1, 1]);
        for backend in [NeuronBackend::Ops, NeuronBackend::Fused] {
            let out = lif(1.0, backend).forward(&input, true, Readout::BOTH).unwrap();
            assert_eq!(values(&out.spikes), vec![0.0, 1.0, 0.0], "{backend:?}");
            assert_eq!(values(&out.membrane), vec![0.5, 0.0, 0.5], "{backend:?}");
        }
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
        for backend in [NeuronBackend::Ops, NeuronBackend::Fused] {
            let out = lif(1e9, backend).forward(&input, false, Readout::BOTH).unwrap();
            assert_eq!(out.spikes.unwrap().sum(Kind::Float).double_value(&[]), 0.0);
            assert_eq!(out.membrane.unwrap().double_value(&[3, 0, 0]), 1.875);
        }
    }

    /// Spikes, membrane and the gradients of the input and of PLIF `w` for one backend, on the
    /// given input and output gradients.
    fn run_backend(
        inputs: &[Tensor; 3],
        leak_w: Option<f32>,
        formula: ChargeFormula,
        train: bool,
        backend: NeuronBackend,
    ) -> Vec<Tensor> {
        let [x, g_s, g_m] = inputs;
        let x = x.copy().set_requires_grad(true);
        let w = leak_w.map(|w| Tensor::from(w).set_requires_grad(true));
        let leak = w.as_ref().map_or(Leak::Fixed { tau: 1.5000000001 }, |w| Leak::Learned { w: w.shallow_clone() });
        let layer = MultiStepLif { leak, v_threshold: 1.0, surrogate: ATan { alpha: 5.0 }, charge_formula: formula, backend };
        let out = layer.forward(&x, train, Readout::BOTH).unwrap();
        let (spikes, membrane) = (out.spikes.unwrap(), out.membrane.unwrap());
        ((&spikes * g_s).sum(Kind::Float) + (&membrane * g_m).sum(Kind::Float)).backward();
        if let Some(segment) = &out.segment {
            segment.backward().unwrap();
        }
        let mut results = vec![spikes.detach(), membrane.detach(), x.grad()];
        results.extend(w.map(|w| w.grad()));
        results
    }

    #[test]
    fn fused_equals_ops_bitwise_for_every_charge_formula() {
        let shape = [30, 4, 33];
        let inputs = [
            Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.8 + 0.4,
            Tensor::randn(shape, (Kind::Float, Device::Cpu)),
            Tensor::randn(shape, (Kind::Float, Device::Cpu)),
        ];
        for formula in [ChargeFormula::Spikingjelly2, ChargeFormula::Paper2023] {
            for train in [true, false] {
                for w in [None, Some(-0.4f32)] {
                    let ops = run_backend(&inputs, w, formula, train, NeuronBackend::Ops);
                    let fused = run_backend(&inputs, w, formula, train, NeuronBackend::Fused);
                    for (i, (a, b)) in ops.iter().zip(&fused).enumerate() {
                        assert!(a.equal(b), "{formula:?} train={train} w={w:?}: output {i} differs");
                    }
                }
            }
        }
    }

    /// Where the fused kernel cannot run on CUDA (here: no GPU), the op-by-op path is chosen and
    /// the note says why; on the CPU the configured backend stands.
    #[test]
    fn the_backend_falls_back_on_cuda_with_a_reason() {
        if tch::Cuda::device_count() == 0 {
            let (backend, note) = backend_on(NeuronBackend::Fused, Device::Cuda(0));
            assert_eq!(backend, NeuronBackend::Ops);
            assert!(note.unwrap().contains("the fused CUDA kernel is not used: no CUDA device 0"));
        }
        assert_eq!(backend_on(NeuronBackend::Fused, Device::Cpu), (NeuronBackend::Fused, None));
        assert_eq!(backend_on(NeuronBackend::Ops, Device::Cuda(0)), (NeuronBackend::Ops, None));
    }

    #[test]
    fn no_surrogate_and_no_segment_without_a_gradient() {
        let input = Tensor::ones([4, 2, 3], (Kind::Float, Device::Cpu));
        for backend in [NeuronBackend::Ops, NeuronBackend::Fused] {
            let out = lif(1.0, backend).forward(&input, true, Readout::SPIKES).unwrap();
            assert!(!out.spikes.unwrap().requires_grad() && out.segment.is_none() && out.membrane.is_none());
        }
    }
}
