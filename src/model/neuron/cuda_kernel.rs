//! The fused multi-step LIF/PLIF kernel on CUDA (docs/method.md, "Fused neurons"): the CPU
//! kernel's forward and backward ([`super::cpu_kernel`]) as CUDA kernels, one thread per neuron
//! looping over time (`csrc/fused_lif.cu`), compiled at run time by the NVRTC of libtorch's CUDA
//! version ([`crate::device::nvrtc`]) and launched on the legacy default stream, where libtorch
//! runs its ops. Every operation is a round-to-nearest intrinsic, so each thread computes the CPU
//! kernel's float32 values exactly. PLIF's rate `r = sigmoid(w)` is read by the kernel from the
//! device; the host never waits for it.
//!
//! The rate's gradient is reduced as autograd reduces it in the op-by-op path: the per-step sums
//! over neurons (one libtorch reduction over a `(T, B·C)` tensor), then added from the last step
//! back to the first (the `rate_fold` kernel).
//!
//! Before a CUDA network uses it, [`verified`] runs it on random inputs covering several blocks
//! and a ragged last one, for every charge formula (PLIF with the rate as a constant and on the
//! device), every readout and every combination of output gradients, and compares every tensor
//! it writes with the CPU kernel's, bit for bit (so +0 and −0 differ); the rate's gradient, whose
//! per-step sums are libtorch's device reductions, within `1e-5·Σ|terms|`. A kernel that fails
//! to load or to agree is not used: the network runs the op-by-op path and says why.
//!
//! The same launch code drives the kernels compiled for the host in the tests
//! (`csrc/fused_lif_host.cpp`), through [`Launcher`].

use super::cpu_kernel;
use super::formula::{Charge, Dynamics32, Firing, FusedForward, FusedGrads, LayerCharge, OutputGrads, Readout};
use crate::device::kernels::{self_check, PerDevice};
use anyhow::{bail, ensure, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// The kernels' source, shared with the host build of the tests.
pub const SOURCE: &str = include_str!("../../../csrc/fused_lif.cu");
/// Threads per block.
pub const BLOCK: u32 = 256;

/// A one-dimensional launch: `blocks` blocks of `block` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub blocks: u32,
    pub block: u32,
}

impl Grid {
    /// One thread per neuron, in blocks of [`BLOCK`].
    pub fn per_neuron(neurons: i64) -> Grid {
        Grid { blocks: (neurons.max(1) as u64).div_ceil(u64::from(BLOCK)) as u32, block: BLOCK }
    }

    /// One thread.
    pub const SINGLE: Grid = Grid { blocks: 1, block: 1 };
}

/// `lif_forward`'s arguments, in its order; pointers are 0 for an output not asked for.
#[derive(Clone, Copy, Debug)]
pub struct ForwardArgs {
    pub x: u64,
    pub spikes: u64,
    pub membrane: u64,
    pub charged: u64,
    pub mode: i32,
    pub a: f32,
    pub rate: u64,
    pub threshold: f32,
    pub steps: i64,
    pub neurons: i64,
}

/// `lif_backward`'s arguments, in its order.
#[derive(Clone, Copy, Debug)]
pub struct BackwardArgs {
    pub charged: u64,
    pub grad_spikes: u64,
    pub grad_membrane: u64,
    pub grad_input: u64,
    pub terms: u64,
    pub mode: i32,
    pub a: f32,
    pub rate: u64,
    pub threshold: f32,
    pub z_scale: f32,
    pub half_alpha: f32,
    pub steps: i64,
    pub neurons: i64,
}

/// `rate_fold`'s arguments, in its order.
#[derive(Clone, Copy, Debug)]
pub struct FoldArgs {
    pub per_step: u64,
    pub out: u64,
    pub negate: i32,
    pub steps: i64,
}

/// Runs the three kernels: on a GPU, or compiled for the host in the tests.
pub trait Launcher {
    fn forward(&self, grid: Grid, args: &ForwardArgs) -> Result<()>;
    fn backward(&self, grid: Grid, args: &BackwardArgs) -> Result<()>;
    fn fold(&self, grid: Grid, args: &FoldArgs) -> Result<()>;
}

/// The kernels loaded on one CUDA device, with the stream they run on.
struct CudaKernels {
    forward: CudaFunction,
    backward: CudaFunction,
    fold: CudaFunction,
    stream: Arc<CudaStream>,
}

// SAFETY: the functions and stream are handles into the CUDA context, which the driver allows
// to be used from any thread.
unsafe impl Send for CudaKernels {}
unsafe impl Sync for CudaKernels {}

pub fn launch_config(grid: Grid) -> LaunchConfig {
    LaunchConfig { grid_dim: (grid.blocks, 1, 1), block_dim: (grid.block, 1, 1), shared_mem_bytes: 0 }
}

impl Launcher for CudaKernels {
    fn forward(&self, grid: Grid, a: &ForwardArgs) -> Result<()> {
        crate::op_count::kernel_launched();
        let mut launch = self.stream.launch_builder(&self.forward);
        launch.arg(&a.x).arg(&a.spikes).arg(&a.membrane).arg(&a.charged).arg(&a.mode).arg(&a.a).arg(&a.rate);
        launch.arg(&a.threshold).arg(&a.steps).arg(&a.neurons);
        // SAFETY: the pointers are live CUDA tensors of `steps·neurons` float32 values (or null), and
        // the argument list matches `lif_forward`'s signature.
        unsafe { launch.launch(launch_config(grid)) }.context("launching the fused neuron forward")?;
        Ok(())
    }

    fn backward(&self, grid: Grid, a: &BackwardArgs) -> Result<()> {
        crate::op_count::kernel_launched();
        let mut launch = self.stream.launch_builder(&self.backward);
        launch.arg(&a.charged).arg(&a.grad_spikes).arg(&a.grad_membrane).arg(&a.grad_input).arg(&a.terms);
        launch.arg(&a.mode).arg(&a.a).arg(&a.rate).arg(&a.threshold).arg(&a.z_scale).arg(&a.half_alpha);
        launch.arg(&a.steps).arg(&a.neurons);
        // SAFETY: as in `forward`, for `lif_backward`'s signature.
        unsafe { launch.launch(launch_config(grid)) }.context("launching the fused neuron backward")?;
        Ok(())
    }

    fn fold(&self, grid: Grid, a: &FoldArgs) -> Result<()> {
        crate::op_count::kernel_launched();
        let mut launch = self.stream.launch_builder(&self.fold);
        launch.arg(&a.per_step).arg(&a.out).arg(&a.negate).arg(&a.steps);
        // SAFETY: `per_step` holds `steps` float32 values and `out` one, on the device.
        unsafe { launch.launch(launch_config(grid)) }.context("launching the rate gradient's fold")?;
        Ok(())
    }
}

/// Whether the fused kernel can run on CUDA device `index`: compiled, loaded and equal to the CPU
/// kernel ([`compare_with_cpu`]). Checked once per device; the error says why not.
pub fn verified(index: usize) -> Result<(), String> {
    static CHECKED: PerDevice<Result<(), String>> = PerDevice::new();
    CHECKED.get_or(index, || self_check(index, || compare_with_cpu(kernels(index)?, Device::Cuda(index))))
}

/// Compiles the kernel source to PTX with libtorch's NVRTC (needs no GPU).
pub fn compile() -> Result<String> {
    crate::device::kernels::compile(SOURCE, "fused_lif.cu", "the fused neuron kernel")
}

fn kernels(index: usize) -> Result<&'static CudaKernels> {
    static LOADED: PerDevice<&'static CudaKernels> = PerDevice::new();
    LOADED.get_or_try(index, || {
        let context = CudaContext::new(index).context("CUDA driver")?;
        let module = context.load_module(cudarc::nvrtc::Ptx::from_src(compile()?)).context("loading the fused neuron kernel")?;
        let kernels = CudaKernels {
            forward: module.load_function("lif_forward")?,
            backward: module.load_function("lif_backward")?,
            fold: module.load_function("rate_fold")?,
            stream: context.default_stream(),
        };
        Ok(&*Box::leak(Box::new(kernels)))
    })
}

fn device_index(tensor: &Tensor) -> Result<usize> {
    match tensor.device() {
        Device::Cuda(index) => Ok(index),
        other => bail!("the CUDA neuron kernel got a tensor on {other:?}"),
    }
}

/// The forward over a contiguous float32 `(T, B, C)` CUDA input.
pub fn forward(input: &Tensor, charge: &LayerCharge, firing: Firing, readout: Readout, save: bool) -> Result<FusedForward> {
    forward_with(kernels(device_index(input)?)?, input, charge, firing, readout, save)
}

/// The backward from the saved `charged` and the output gradients, on CUDA.
pub fn backward(charged: &Tensor, charge: &LayerCharge, firing: Firing, grads: OutputGrads) -> Result<FusedGrads> {
    backward_with(kernels(device_index(charged)?)?, charged, charge, firing, grads)
}

pub(crate) fn pointer(tensor: Option<&Tensor>) -> u64 {
    tensor.map_or(0, |t| t.data_ptr() as u64)
}

/// The kernel's mode, constant parameter and rate pointer for a layer's charge. A learned rate
/// must be a 0-dim float32 tensor on the kernel's device.
fn kernel_charge(charge: &LayerCharge, device: Device) -> Result<(i32, f32, u64, Option<Tensor>)> {
    match charge {
        LayerCharge::Constant(charge) => {
            let (mode, a) = charge.kernel_mode();
            Ok((mode, a, 0, None))
        }
        LayerCharge::Learned { multiply, rate } => {
            let rate = rate.detach().to_kind(Kind::Float).contiguous();
            ensure!(rate.numel() == 1 && rate.device() == device, "the learned rate must be one value on {device:?}");
            let (mode, a) = Charge::of_rate(*multiply, 0.0).kernel_mode();
            Ok((mode, a, pointer(Some(&rate)), Some(rate)))
        }
    }
}

/// [`forward`] through any launcher, on tensors of its device.
pub fn forward_with(
    launcher: &dyn Launcher,
    input: &Tensor,
    charge: &LayerCharge,
    firing: Firing,
    readout: Readout,
    save: bool,
) -> Result<FusedForward> {
    ensure!(input.kind() == Kind::Float && input.is_contiguous(), "the neuron kernel takes a contiguous float32 input");
    let shape = input.size();
    let (steps, neurons) = (shape[0], input.numel() as i64 / shape[0].max(1));
    let new = |wanted: bool| wanted.then(|| Tensor::empty(shape.as_slice(), (Kind::Float, input.device())));
    let (spikes, membrane, charged) = (new(readout.spikes), new(readout.membrane), new(save));
    let (mode, a, rate, _kept) = kernel_charge(charge, input.device())?;
    let args = ForwardArgs {
        x: pointer(Some(input)),
        spikes: pointer(spikes.as_ref()),
        membrane: pointer(membrane.as_ref()),
        charged: pointer(charged.as_ref()),
        mode,
        a,
        rate,
        threshold: firing.threshold,
        steps,
        neurons,
    };
    if neurons > 0 {
        launcher.forward(Grid::per_neuron(neurons), &args)?;
    }
    Ok(FusedForward { spikes, membrane, charged })
}

/// [`backward`] through any launcher, on tensors of its device.
pub fn backward_with(
    launcher: &dyn Launcher,
    charged: &Tensor,
    charge: &LayerCharge,
    firing: Firing,
    grads: OutputGrads,
) -> Result<FusedGrads> {
    let (shape, device) = (charged.size(), charged.device());
    let (steps, neurons) = (shape[0], charged.numel() as i64 / shape[0].max(1));
    let (grad_spikes, grad_membrane) = grads.contiguous();
    let input = Tensor::empty(shape.as_slice(), (Kind::Float, device));
    let terms = charge.learns_rate().then(|| Tensor::empty([steps, neurons], (Kind::Float, device)));
    let (mode, a, rate, _kept) = kernel_charge(charge, device)?;
    let args = BackwardArgs {
        charged: pointer(Some(charged)),
        grad_spikes: pointer(grad_spikes.as_ref()),
        grad_membrane: pointer(grad_membrane.as_ref()),
        grad_input: pointer(Some(&input)),
        terms: pointer(terms.as_ref()),
        mode,
        a,
        rate,
        threshold: firing.threshold,
        z_scale: firing.z_scale,
        half_alpha: firing.half_alpha,
        steps,
        neurons,
    };
    if neurons > 0 {
        launcher.backward(Grid::per_neuron(neurons), &args)?;
    }
    let rate = terms.as_ref().map(|terms| fold_rate(launcher, terms, mode == 3)).transpose()?;
    Ok(FusedGrads { input, rate_terms: terms, rate })
}

/// The rate's gradient from the `(T, N)` terms: per-step sums, then the fold from the last step.
fn fold_rate(launcher: &dyn Launcher, terms: &Tensor, negate: bool) -> Result<Tensor> {
    let per_step = terms.sum_dim_intlist([1i64].as_slice(), false, Kind::Float).contiguous();
    let out = Tensor::zeros([], (Kind::Float, terms.device()));
    let args = FoldArgs {
        per_step: pointer(Some(&per_step)),
        out: pointer(Some(&out)),
        negate: i32::from(negate),
        steps: per_step.numel() as i64,
    };
    if args.steps > 0 {
        launcher.fold(Grid::SINGLE, &args)?;
    }
    Ok(out)
}

/// Every case of the comparison: the four charge formulas, PLIF's also with the rate on the device.
fn cases(device: Device) -> Vec<(LayerCharge, Charge)> {
    let on_device = |multiply: bool, rate: f32| LayerCharge::Learned { multiply, rate: Tensor::from(rate).to_device(device) };
    vec![
        (LayerCharge::Constant(Charge::Divide(1.5)), Charge::Divide(1.5)),
        (LayerCharge::Constant(Charge::Multiply(0.3)), Charge::Multiply(0.3)),
        (LayerCharge::Constant(Charge::SubtractProduct(0.4)), Charge::SubtractProduct(0.4)),
        (LayerCharge::Constant(Charge::MultiplyOneMinus(0.6)), Charge::MultiplyOneMinus(0.6)),
        (on_device(false, 0.4), Charge::SubtractProduct(0.4)),
        (on_device(true, 0.4), Charge::of_rate(true, 0.4)),
    ]
}

/// Whether two float32 tensors hold the same bits (+0 and −0 differ, NaNs compare by payload).
pub(crate) fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    let bits = |t: &Tensor| t.to_device(Device::Cpu).contiguous().view_dtype(Kind::Int);
    a.size() == b.size() && bits(a).equal(&bits(b))
}

/// Runs `launcher`'s kernels on `device` against the CPU kernel over every case, readout and
/// set of output gradients, on `(37, 5, 131)` inputs (655 neurons: three blocks, the last ragged).
pub fn compare_with_cpu(launcher: &dyn Launcher, device: Device) -> Result<()> {
    let shape = [37i64, 5, 131];
    let cpu = |t: Tensor| t.contiguous();
    let input = cpu(Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.8 + 0.4);
    let (grad_s, grad_m) =
        (cpu(Tensor::randn(shape, (Kind::Float, Device::Cpu))), cpu(Tensor::randn(shape, (Kind::Float, Device::Cpu))));
    let firing = Firing { threshold: 1.0, z_scale: 7.853_982, half_alpha: 2.5 };
    let on = |t: &Tensor| t.to_device(device);
    for (layer_charge, charge) in cases(device) {
        let dynamics = Dynamics32 { charge, firing };
        for readout in [Readout::SPIKES, Readout::MEMBRANE, Readout::BOTH] {
            let expected = cpu_kernel::forward(&input, &dynamics, readout, true);
            let got = forward_with(launcher, &on(&input), &layer_charge, firing, readout, true)?;
            let outputs = [
                ("spikes", &expected.spikes, &got.spikes),
                ("membrane", &expected.membrane, &got.membrane),
                ("charged", &expected.charged, &got.charged),
            ];
            for (what, expected, got) in outputs {
                compare(what, expected.as_ref(), got.as_ref(), &charge, readout)?;
            }
        }
        let charged = cpu_kernel::forward(&input, &dynamics, Readout::SPIKES, true).charged.expect("saved");
        for (gs, gm) in [(Some(&grad_s), Some(&grad_m)), (Some(&grad_s), None), (None, Some(&grad_m))] {
            let expected = cpu_kernel::backward(&charged, &dynamics, OutputGrads { spikes: gs, membrane: gm });
            let (gs_on, gm_on) = (gs.map(on), gm.map(on));
            let on_device = OutputGrads { spikes: gs_on.as_ref(), membrane: gm_on.as_ref() };
            let got = backward_with(launcher, &on(&charged), &layer_charge, firing, on_device)?;
            compare(
                "input gradient",
                Some(&expected.input),
                Some(&got.input),
                &charge,
                Readout { spikes: gs.is_some(), membrane: gm.is_some() },
            )?;
            compare("rate terms", expected.rate_terms.as_ref(), got.rate_terms.as_ref(), &charge, Readout::BOTH)?;
            if let (Some(terms), Some(expected), Some(got)) = (&expected.rate_terms, &expected.rate, &got.rate) {
                let scale = terms.abs().sum(Kind::Double).double_value(&[]);
                let error =
                    (expected.to_kind(Kind::Double) - got.to_device(Device::Cpu).to_kind(Kind::Double)).abs().double_value(&[]);
                ensure!(
                    error <= 1e-5 * scale,
                    "the rate gradient differs by {error:e} from the CPU kernel's (Σ|terms| = {scale:e}, {charge:?})"
                );
            }
        }
    }
    Ok(())
}

fn compare(what: &str, expected: Option<&Tensor>, got: Option<&Tensor>, charge: &Charge, readout: Readout) -> Result<()> {
    match (expected, got) {
        (None, None) => Ok(()),
        (Some(expected), Some(got)) if same_bits(expected, got) => Ok(()),
        (Some(_), Some(_)) => bail!("the kernel's {what} differ from the CPU kernel's ({charge:?}, {readout:?})"),
        _ => bail!("the kernel wrote {what} where the CPU kernel did not, or the reverse ({charge:?}, {readout:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn snn_host_lif_forward(
            blocks: u32,
            block: u32,
            x: u64,
            spikes: u64,
            membrane: u64,
            charged: u64,
            mode: i32,
            a: f32,
            rate: u64,
            threshold: f32,
            steps: i64,
            neurons: i64,
        );
        fn snn_host_lif_backward(
            blocks: u32,
            block: u32,
            charged: u64,
            grad_spikes: u64,
            grad_membrane: u64,
            grad_input: u64,
            terms: u64,
            mode: i32,
            a: f32,
            rate: u64,
            threshold: f32,
            z_scale: f32,
            half_alpha: f32,
            steps: i64,
            neurons: i64,
        );
        fn snn_host_rate_fold(blocks: u32, block: u32, per_step: u64, out: u64, negate: i32, steps: i64);
    }

    /// The CUDA source compiled for the host (`csrc/fused_lif_host.cpp`), run on CPU tensors.
    struct HostKernels;

    impl Launcher for HostKernels {
        fn forward(&self, g: Grid, a: &ForwardArgs) -> Result<()> {
            // SAFETY: the arguments point into live CPU tensors sized as the kernel reads them.
            unsafe {
                snn_host_lif_forward(
                    g.blocks,
                    g.block,
                    a.x,
                    a.spikes,
                    a.membrane,
                    a.charged,
                    a.mode,
                    a.a,
                    a.rate,
                    a.threshold,
                    a.steps,
                    a.neurons,
                )
            };
            Ok(())
        }

        fn backward(&self, g: Grid, a: &BackwardArgs) -> Result<()> {
            // SAFETY: as in `forward`.
            unsafe {
                snn_host_lif_backward(
                    g.blocks,
                    g.block,
                    a.charged,
                    a.grad_spikes,
                    a.grad_membrane,
                    a.grad_input,
                    a.terms,
                    a.mode,
                    a.a,
                    a.rate,
                    a.threshold,
                    a.z_scale,
                    a.half_alpha,
                    a.steps,
                    a.neurons,
                )
            };
            Ok(())
        }

        fn fold(&self, g: Grid, a: &FoldArgs) -> Result<()> {
            // SAFETY: as in `forward`.
            unsafe { snn_host_rate_fold(g.blocks, g.block, a.per_step, a.out, a.negate, a.steps) };
            Ok(())
        }
    }

    /// The CUDA kernels, compiled for the host, equal the CPU kernel bitwise over every charge
    /// formula, readout and gradient variant, on a grid of several blocks with a ragged last one.
    #[test]
    fn the_cuda_source_run_on_the_host_equals_the_cpu_kernel() {
        tch::manual_seed(11);
        compare_with_cpu(&HostKernels, Device::Cpu).unwrap();
    }

    /// The fold adds the per-step sums from the last step back, as the CPU kernel's reduction does:
    /// given the same per-step sums, bitwise the same value.
    #[test]
    fn the_rate_fold_follows_the_cpu_kernel_s_order() {
        let terms = Tensor::randn([50, 1], (Kind::Float, Device::Cpu)) * 1e3;
        for negate in [false, true] {
            let expected = cpu_kernel::rate_gradient(&terms, negate);
            let got = fold_rate(&HostKernels, &terms, negate).unwrap();
            assert!(same_bits(&expected, &got), "{expected:?} vs {got:?}");
        }
    }

    /// A comparison that cannot fail proves nothing: a kernel whose charge is off by one rounding
    /// (mode 1 for mode 0) is caught, and so is a sign flip in −0.
    #[test]
    fn the_comparison_catches_a_wrong_kernel_and_a_negative_zero() {
        struct WrongMode;
        impl Launcher for WrongMode {
            fn forward(&self, g: Grid, a: &ForwardArgs) -> Result<()> {
                HostKernels.forward(
                    g,
                    &ForwardArgs {
                        mode: if a.mode == 0 { 2 } else { a.mode },
                        a: if a.mode == 0 { 1.0 / a.a } else { a.a },
                        ..*a
                    },
                )
            }
            fn backward(&self, g: Grid, a: &BackwardArgs) -> Result<()> {
                HostKernels.backward(g, a)
            }
            fn fold(&self, g: Grid, a: &FoldArgs) -> Result<()> {
                HostKernels.fold(g, a)
            }
        }
        let error = format!("{:#}", compare_with_cpu(&WrongMode, Device::Cpu).unwrap_err());
        assert!(error.contains("Divide"), "{error}");
        assert!(!same_bits(&Tensor::from(0.0f32), &Tensor::from(-0.0f32)));
    }

    /// The kernel source compiles with libtorch's NVRTC (no GPU needed), without fused
    /// multiply-adds, and exports every kernel.
    #[test]
    fn kernels_compile_to_ptx_without_contractions() {
        let ptx = compile().unwrap();
        for entry in [".entry lif_forward", ".entry lif_backward", ".entry rate_fold"] {
            assert!(ptx.contains(entry), "{entry} missing from the PTX");
        }
        assert!(!ptx.contains("fma.rn.f32"), "the PTX contracts a multiply-add");
    }

    #[test]
    fn without_a_gpu_the_kernel_is_not_verified() {
        if tch::Cuda::device_count() == 0 {
            assert!(verified(0).is_err());
        }
    }

    #[test]
    fn grids_cover_every_neuron() {
        assert_eq!(Grid::per_neuron(655), Grid { blocks: 3, block: 256 });
        assert_eq!(Grid::per_neuron(256), Grid { blocks: 1, block: 256 });
    }
}
