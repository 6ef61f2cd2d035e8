//! The fused recurrent layer's step kernels on CUDA (docs/method.md "Recurrent delays"): the
//! elementwise part of a forward and of a backward step ([`super::fused`]) as one CUDA kernel
//! each (`csrc/recurrent_step.cu`), one thread per (sample, neuron), compiled at run time by the
//! NVRTC of libtorch's CUDA version ([`crate::device::nvrtc`]) and launched on the legacy default
//! stream, where libtorch runs its ops. A step is then one `N×N` product and one kernel, instead
//! of about twenty libtorch ops.
//!
//! Before a CUDA network uses them, [`verified`] runs both kernels on random states (several
//! blocks, a ragged last one; soft and hard resets, detached or not; training and evaluation
//! charges; with and without the dropout mask; a spread gradient or none) and compares every
//! value they write, and the state they leave, with the libtorch ops' on the CPU, bit for bit.
//! Kernels that fail to load or to agree are not used: the layer runs its ops and the run header
//! says why. The tests run the same source compiled for the host (`csrc/recurrent_step_host.cpp`)
//! through the same launch code.

use super::fused::{BackwardState, BackwardStep, ForwardState, ForwardStep, Steps};
use crate::device::kernels::{self_check, PerDevice};
use crate::model::neuron::cuda_kernel::{launch_config, pointer as optional, same_bits, Grid};
use crate::model::neuron::step::{Reset, StepLif, Surrogate, Triangle};
use crate::model::neuron::ATan;
use anyhow::{bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, PushKernelArg};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// The kernels' source, shared with the host build of the tests.
pub const SOURCE: &str = include_str!("../../../csrc/recurrent_step.cu");

/// `recurrent_forward_step`'s arguments, in its order; `mask` is 0 without one. The host build
/// of the tests reads it as a C struct.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForwardArgs {
    pub x: u64,
    pub recurrent: u64,
    pub mask: u64,
    pub membrane: u64,
    pub ring: u64,
    pub taps: u64,
    pub spikes: u64,
    pub charged: u64,
    pub arrived: u64,
    pub divide: i32,
    pub a: f32,
    pub threshold: f32,
    pub hard: i32,
    pub slot: i64,
    pub slots: i64,
    pub count: i64,
    pub neurons: i64,
}

/// `recurrent_backward_step`'s arguments, in its order; `scatter` and `mask` are 0 when absent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BackwardArgs {
    pub scatter: u64,
    pub scatter_slot: i64,
    pub ring: u64,
    pub taps: u64,
    pub grad_spikes: u64,
    pub charged: u64,
    pub spikes: u64,
    pub slopes: u64,
    pub mask: u64,
    pub grad_v: u64,
    pub grad_input: u64,
    pub grad_masked: u64,
    pub hard: i32,
    pub detach: i32,
    pub threshold: f32,
    pub decay: f32,
    pub slot: i64,
    pub slots: i64,
    pub count: i64,
    pub neurons: i64,
}

/// Runs the two step kernels: on a GPU, or compiled for the host in the tests.
pub trait StepLauncher: Sync {
    fn forward(&self, grid: Grid, args: &ForwardArgs) -> Result<()>;
    fn backward(&self, grid: Grid, args: &BackwardArgs) -> Result<()>;
}

fn pointer(tensor: &Tensor) -> u64 {
    optional(Some(tensor))
}

/// The charge's kernel form: `(v − v/τ) + x` for a hard-reset neuron in evaluation, else
/// `v·fl32(1 − 1/τ) + x`, as [`StepLif::charge`].
fn charge_form(neuron: &StepLif, train: bool) -> (i32, f32) {
    match (neuron.reset, train) {
        (Reset::Hard, false) => (1, neuron.tau as f32),
        _ => (0, (1.0 - 1.0 / neuron.tau) as f32),
    }
}

/// Forward step t with the kernel, given `recurrent = z(t)·Wᵀ` (on the device).
pub fn forward_step(launcher: &dyn StepLauncher, state: &mut ForwardState, t: i64, recurrent: &Tensor) -> Result<ForwardStep> {
    let recurrent = recurrent.contiguous();
    let new = || Tensor::empty(recurrent.size().as_slice(), (Kind::Float, recurrent.device()));
    let step = ForwardStep { spikes: new(), charged: new(), arrived: new() };
    let (divide, a) = charge_form(state.neuron, state.train);
    let (count, neurons, slots) = (recurrent.numel() as i64, recurrent.size()[1], state.kernel.size()[1]);
    let args = ForwardArgs {
        x: pointer(&state.x[t as usize]),
        recurrent: pointer(&recurrent),
        mask: optional(state.mask.as_ref()),
        membrane: pointer(&state.membrane),
        ring: pointer(&state.ring),
        taps: pointer(&state.kernel),
        spikes: pointer(&step.spikes),
        charged: pointer(&step.charged),
        arrived: pointer(&step.arrived),
        divide,
        a,
        threshold: state.neuron.threshold as f32,
        hard: i32::from(state.neuron.reset == Reset::Hard),
        slot: t % slots,
        slots,
        count,
        neurons,
    };
    if count > 0 {
        launcher.forward(Grid::per_neuron(count), &args)?;
    }
    Ok(step)
}

/// Backward step t with the kernel: spreads `g_z(t+1)` (`scatter`, none at the last step), then
/// forms `g_h(t)`.
pub fn backward_step(
    launcher: &dyn StepLauncher,
    state: &mut BackwardState,
    t: i64,
    scatter: Option<&Tensor>,
) -> Result<BackwardStep> {
    let slots = state.kernel.size()[1];
    let neuron = state.neuron;
    let scatter = scatter.map(Tensor::contiguous);
    let new = || Tensor::empty(state.grad_v.size().as_slice(), (Kind::Float, state.grad_v.device()));
    let step = BackwardStep { grad_h: new(), grad_masked: new() };
    let (grad_spikes, charged, spikes, slopes) =
        (state.grad_spikes.get(t), state.charged.get(t), state.spikes.get(t), state.slopes.get(t));
    let count = state.grad_v.numel() as i64;
    let args = BackwardArgs {
        scatter: optional(scatter.as_ref()),
        scatter_slot: (t + 1) % slots,
        ring: pointer(&state.ring),
        taps: pointer(&state.kernel),
        grad_spikes: pointer(&grad_spikes),
        charged: pointer(&charged),
        spikes: pointer(&spikes),
        slopes: pointer(&slopes),
        mask: optional(state.mask.as_ref()),
        grad_v: pointer(&state.grad_v),
        grad_input: pointer(&step.grad_h),
        grad_masked: pointer(&step.grad_masked),
        hard: i32::from(neuron.reset == Reset::Hard),
        detach: i32::from(neuron.detach_reset),
        threshold: neuron.threshold as f32,
        decay: (1.0 - 1.0 / neuron.tau) as f32,
        slot: t % slots,
        slots,
        count,
        neurons: state.grad_v.size()[1],
    };
    if count > 0 {
        launcher.backward(Grid::per_neuron(count), &args)?;
    }
    Ok(step)
}

/// The kernels loaded on one CUDA device, with the stream they run on.
struct CudaSteps {
    forward: CudaFunction,
    backward: CudaFunction,
    stream: Arc<CudaStream>,
}

// SAFETY: the functions and stream are handles into the CUDA context, which the driver allows
// to be used from any thread.
unsafe impl Send for CudaSteps {}
unsafe impl Sync for CudaSteps {}

impl StepLauncher for CudaSteps {
    fn forward(&self, grid: Grid, a: &ForwardArgs) -> Result<()> {
        crate::op_count::kernel_launched();
        let mut launch = self.stream.launch_builder(&self.forward);
        launch.arg(&a.x).arg(&a.recurrent).arg(&a.mask).arg(&a.membrane).arg(&a.ring).arg(&a.taps).arg(&a.spikes);
        launch.arg(&a.charged).arg(&a.arrived).arg(&a.divide).arg(&a.a).arg(&a.threshold).arg(&a.hard).arg(&a.slot);
        launch.arg(&a.slots).arg(&a.count).arg(&a.neurons);
        // SAFETY: the pointers are live contiguous float32 CUDA tensors sized as the kernel reads
        // them (or null where allowed), and the argument list matches `recurrent_forward_step`.
        unsafe { launch.launch(launch_config(grid)) }.context("launching the recurrent forward step")?;
        Ok(())
    }

    fn backward(&self, grid: Grid, a: &BackwardArgs) -> Result<()> {
        crate::op_count::kernel_launched();
        let mut launch = self.stream.launch_builder(&self.backward);
        launch.arg(&a.scatter).arg(&a.scatter_slot).arg(&a.ring).arg(&a.taps).arg(&a.grad_spikes).arg(&a.charged);
        launch.arg(&a.spikes).arg(&a.slopes).arg(&a.mask).arg(&a.grad_v).arg(&a.grad_input).arg(&a.grad_masked);
        launch.arg(&a.hard).arg(&a.detach).arg(&a.threshold).arg(&a.decay).arg(&a.slot).arg(&a.slots);
        launch.arg(&a.count).arg(&a.neurons);
        // SAFETY: as in `forward`, for `recurrent_backward_step`'s signature.
        unsafe { launch.launch(launch_config(grid)) }.context("launching the recurrent backward step")?;
        Ok(())
    }
}

/// How a layer on `device` runs its steps: the kernels on a CUDA device where they passed their
/// check, else libtorch ops.
pub fn steps_for(device: Device) -> Steps {
    match device {
        Device::Cuda(index) if verified(index).is_ok() => loaded(index).map_or(Steps::Ops, |kernels| Steps::Kernel(kernels)),
        _ => Steps::Ops,
    }
}

/// Whether the step kernels can run on CUDA device `index`: compiled, loaded and equal to the
/// ops on the CPU ([`compare_with_cpu`]). Checked once per device; the error says why not.
pub fn verified(index: usize) -> Result<(), String> {
    static CHECKED: PerDevice<Result<(), String>> = PerDevice::new();
    CHECKED.get_or(index, || self_check(index, || compare_with_cpu(loaded(index)?, Device::Cuda(index))))
}

/// Compiles the kernel source to PTX with libtorch's NVRTC (needs no GPU).
pub fn compile() -> Result<String> {
    crate::device::kernels::compile(SOURCE, "recurrent_step.cu", "the recurrent step kernels")
}

fn loaded(index: usize) -> Result<&'static CudaSteps> {
    static LOADED: PerDevice<&'static CudaSteps> = PerDevice::new();
    LOADED.get_or_try(index, || {
        let context = CudaContext::new(index).context("CUDA driver")?;
        let module =
            context.load_module(cudarc::nvrtc::Ptx::from_src(compile()?)).context("loading the recurrent step kernels")?;
        let kernels = CudaSteps {
            forward: module.load_function("recurrent_forward_step")?,
            backward: module.load_function("recurrent_backward_step")?,
            stream: context.default_stream(),
        };
        Ok(&*Box::leak(Box::new(kernels)))
    })
}

/// The neurons of both configurations, and each with the other reset's detachment.
fn neurons() -> Vec<StepLif> {
    let ssc = StepLif {
        tau: 2.0,
        threshold: 1.0,
        reset: Reset::Soft,
        detach_reset: false,
        surrogate: Surrogate::Triangle(Triangle { gamma: 1.0 }),
    };
    let shd =
        StepLif { tau: 1.05, reset: Reset::Hard, detach_reset: true, surrogate: Surrogate::ATan(ATan { alpha: 5.0 }), ..ssc };
    vec![ssc, shd, StepLif { detach_reset: true, ..ssc }, StepLif { detach_reset: false, ..shd }]
}

fn check(what: &str, expected: &Tensor, got: &Tensor, case: &str) -> Result<()> {
    if !same_bits(expected, got) {
        bail!("the recurrent step kernel's {what} differ from the ops' ({case})");
    }
    Ok(())
}

/// Runs one forward and one backward step of `launcher` on `device` against the ops on the CPU
/// from the same random state, for every neuron, charge, mask and spread case, on 8 × 83 = 664
/// threads (three blocks, the last ragged) with a kernel of 7 taps; compares every output and
/// the state left behind, bit for bit.
pub fn compare_with_cpu(launcher: &dyn StepLauncher, device: Device) -> Result<()> {
    let (steps, batch, n, slots) = (3i64, 8i64, 83i64, 7i64);
    let random = |shape: &[i64], scale: f64| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * scale;
    let x = random(&[steps, batch, n], 0.8) + 0.4;
    let kernel = Tensor::rand([n, slots], (Kind::Float, Device::Cpu));
    let mask = (Tensor::rand([batch, n], (Kind::Float, Device::Cpu)).ge(0.3).to_kind(Kind::Float) / 0.7).contiguous();
    let recurrent = random(&[batch, n], 0.5);
    for neuron in neurons() {
        for (train, mask) in [(true, Some(&mask)), (true, None), (false, None)] {
            let case = format!("{neuron:?}, train {train}, mask {}", mask.is_some());
            let on = |t: &Tensor| t.to_device(device);
            let mut cpu = ForwardState::new(&x, &kernel, mask, &neuron, train);
            let _ = cpu.ring.uniform_(-1.0, 1.0);
            let _ = cpu.membrane.uniform_(-0.5, 1.5);
            let mut gpu = ForwardState::new(&on(&x), &on(&kernel), mask.map(on).as_ref(), &neuron, train);
            gpu.ring.copy_(&cpu.ring);
            gpu.membrane.copy_(&cpu.membrane);
            let expected = cpu.ops_step(1, &recurrent);
            let got = forward_step(launcher, &mut gpu, 1, &on(&recurrent))?;
            for (what, expected, got) in [
                ("spikes", &expected.spikes, &got.spikes),
                ("membrane before the reset", &expected.charged, &got.charged),
                ("membrane", &cpu.membrane, &gpu.membrane),
                ("ring", &cpu.ring, &gpu.ring),
                ("arrived values", &expected.arrived, &got.arrived),
            ] {
                check(what, expected, got, &case)?;
            }
            compare_backward(launcher, device, &cpu, &neuron, &case)?;
        }
    }
    Ok(())
}

/// One backward step (the middle one, which spreads a gradient, and the last, which does not)
/// from the forward state `forward`'s outputs and a random gradient state.
fn compare_backward(
    launcher: &dyn StepLauncher,
    device: Device,
    forward: &ForwardState,
    neuron: &StepLif,
    case: &str,
) -> Result<()> {
    let shape = [forward.x.len() as i64, forward.membrane.size()[0], forward.membrane.size()[1]];
    let charged = Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.6 + 0.9;
    let spikes = (&charged - neuron.threshold).ge(0.0).to_kind(Kind::Float);
    let grad_spikes = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let on = |t: &Tensor| t.to_device(device);
    let scatter = Tensor::randn([shape[1], shape[2]], (Kind::Float, Device::Cpu));
    for (t, scatter) in [(1, Some(&scatter)), (shape[0] - 1, None)] {
        let mut cpu = BackwardState::new(&charged, &spikes, &grad_spikes, forward.mask.as_ref(), &forward.kernel, neuron);
        let _ = cpu.ring.uniform_(-1.0, 1.0);
        let _ = cpu.grad_v.uniform_(-1.0, 1.0);
        let mask = forward.mask.as_ref().map(on);
        let mut gpu =
            BackwardState::new(&on(&charged), &on(&spikes), &on(&grad_spikes), mask.as_ref(), &on(&forward.kernel), neuron);
        gpu.ring.copy_(&cpu.ring);
        gpu.grad_v.copy_(&cpu.grad_v);
        let expected = cpu.ops_step(t, scatter);
        let got = backward_step(launcher, &mut gpu, t, scatter.map(on).as_ref())?;
        let case = format!("{case}, backward step {t}");
        for (what, expected, got) in [
            ("input gradient", &expected.grad_h, &got.grad_h),
            ("masked gradient", &expected.grad_masked, &got.grad_masked),
            ("membrane gradient", &cpu.grad_v, &gpu.grad_v),
            ("gradient ring", &cpu.ring, &gpu.ring),
        ] {
            check(what, expected, got, &case)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecurrentBuffer;
    use crate::model::recurrent::RecurrentDelays;
    use tch::nn;

    extern "C" {
        fn snn_host_recurrent_forward_step(blocks: u32, block: u32, args: *const ForwardArgs);
        fn snn_host_recurrent_backward_step(blocks: u32, block: u32, args: *const BackwardArgs);
    }

    /// The CUDA source compiled for the host (`csrc/recurrent_step_host.cpp`), on CPU tensors.
    struct HostSteps;

    impl StepLauncher for HostSteps {
        fn forward(&self, g: Grid, a: &ForwardArgs) -> Result<()> {
            // SAFETY: the arguments point into live CPU tensors sized as the kernel reads them.
            unsafe { snn_host_recurrent_forward_step(g.blocks, g.block, a) };
            Ok(())
        }

        fn backward(&self, g: Grid, a: &BackwardArgs) -> Result<()> {
            // SAFETY: as in `forward`.
            unsafe { snn_host_recurrent_backward_step(g.blocks, g.block, a) };
            Ok(())
        }
    }

    #[test]
    fn the_step_kernels_run_on_the_host_equal_the_ops() {
        tch::manual_seed(5);
        compare_with_cpu(&HostSteps, Device::Cpu).unwrap();
    }

    /// Whole layers: the kernel path (compiled for the host) and the ops give the same spikes and
    /// the same gradients of the input, W and the kernel, bit for bit, for both configurations'
    /// neurons, with the dropout mask, over 40 steps of a 9-tap window.
    #[test]
    fn a_layer_through_the_step_kernels_equals_the_ops_bit_for_bit() {
        tch::manual_seed(3);
        for neuron in neurons() {
            let vs = nn::VarStore::new(Device::Cpu);
            let layer = RecurrentDelays::new(&vs.root(), 24, true, neuron, RecurrentBuffer::Fused);
            tch::no_grad(|| {
                let _ = layer.weight.shallow_clone().normal_(0.0, 0.4);
                let _ = layer.delays.shallow_clone().uniform_(0.0, 5.0);
            });
            let kernel = layer.kernel(&layer.delays, 0.7);
            let x = (Tensor::randn([40, 3, 24], (Kind::Float, Device::Cpu)) + 0.5).set_requires_grad(true);
            let mask = Tensor::rand([3, 24], (Kind::Float, Device::Cpu)).ge(0.2).to_kind(Kind::Float) / 0.8;
            let grad = Tensor::randn([40, 3, 24], (Kind::Float, Device::Cpu));
            let run = |steps: Steps| {
                let (spikes, cut) = layer.forward_fused_with(&x, &kernel, true, Some(&mask), steps).unwrap();
                let (gx, gw, gk) = tch::no_grad(|| cut.unwrap().gradients(&grad)).unwrap();
                (spikes.detach(), gx, gw, gk)
            };
            let (ops, kernels) = (run(Steps::Ops), run(Steps::Kernel(&HostSteps)));
            assert!(ops.0.sum(Kind::Float).double_value(&[]) > 10.0, "{neuron:?}: the layer fires");
            for (what, a, b) in [
                ("spikes", &ops.0, &kernels.0),
                ("g_x", &ops.1, &kernels.1),
                ("g_W", &ops.2, &kernels.2),
                ("g_K", &ops.3, &kernels.3),
            ] {
                assert!(same_bits(a, b), "{neuron:?}: {what} differ");
            }
        }
    }

    /// A comparison that cannot fail proves nothing: a kernel whose soft reset forgets the
    /// threshold's product is caught.
    #[test]
    fn the_check_catches_a_wrong_kernel() {
        struct HardAlways;
        impl StepLauncher for HardAlways {
            fn forward(&self, g: Grid, a: &ForwardArgs) -> Result<()> {
                HostSteps.forward(g, &ForwardArgs { hard: 1, ..*a })
            }
            fn backward(&self, g: Grid, a: &BackwardArgs) -> Result<()> {
                HostSteps.backward(g, a)
            }
        }
        let error = format!("{:#}", compare_with_cpu(&HardAlways, Device::Cpu).unwrap_err());
        assert!(error.contains("Soft"), "{error}");
    }

    #[test]
    fn the_step_kernels_compile_to_ptx_without_contractions() {
        let ptx = compile().unwrap();
        for entry in [".entry recurrent_forward_step", ".entry recurrent_backward_step"] {
            assert!(ptx.contains(entry), "{entry} missing from the PTX");
        }
        assert!(!ptx.contains("fma.rn.f32"), "the PTX contracts a multiply-add");
    }

    #[test]
    fn without_a_gpu_the_steps_are_libtorch_ops() {
        if tch::Cuda::device_count() == 0 {
            assert!(verified(0).is_err());
            assert!(matches!(steps_for(Device::Cuda(0)), Steps::Ops));
        }
        assert!(matches!(steps_for(Device::Cpu), Steps::Ops));
    }
}
