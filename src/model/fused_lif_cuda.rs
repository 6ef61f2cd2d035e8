//! The fused multi-step LIF/PLIF kernel on CUDA (docs/method.md, "Fused neurons"): the CPU
//! kernel's forward and backward ([`super::fused_lif`]) as two CUDA kernels, one thread per
//! neuron looping over time, compiled at run time by NVRTC and launched on the default stream
//! that libtorch uses. Every operation is a round-to-nearest intrinsic (`__fadd_rn`, …), so
//! nothing is contracted into a fused multiply-add and each thread computes the CPU kernel's
//! float32 values exactly.
//!
//! Before a CUDA network uses it, [`verified`] runs it once on a random input and compares every
//! output, bitwise, with the CPU kernel on the same input; a kernel that fails to load or to
//! agree is not used (the layer runs the ops path, and the run header says why).
//!
//! NVRTC comes with the torch wheel (`nvidia/cu13/lib`, beside `torch/lib`); it is loaded from
//! there, from the library path, or not at all.

use super::fused_lif::{Charge, Dynamics32, FusedForward, FusedGrads};
use super::neuron::Readout;
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

const SOURCE: &str = r#"
extern "C" {
// mode 0: (v - v/a) + x   mode 1: v*a + x   mode 2: (v - v*a) + x   mode 3: v*a + x (PLIF, a = 1 - r)
__device__ __forceinline__ float charge(int mode, float a, float v, float x) {
    if (mode == 0) return __fadd_rn(__fsub_rn(v, __fdiv_rn(v, a)), x);
    if (mode == 2) return __fadd_rn(__fsub_rn(v, __fmul_rn(v, a)), x);
    return __fadd_rn(__fmul_rn(v, a), x);
}
__device__ __forceinline__ float carry(int mode, float a, float gm, float gn) {
    if (mode == 0) return __fadd_rn(__fadd_rn(gm, gn), __fdiv_rn(-gn, a));
    if (mode == 2) return __fadd_rn(__fadd_rn(gm, gn), __fmul_rn(-gn, a));
    return __fadd_rn(gm, __fmul_rn(gn, a));
}
__device__ __forceinline__ float fired(float h, float threshold) { return h >= threshold ? 1.0f : 0.0f; }

__global__ void lif_forward(const float* x, float* spikes, float* membrane, float* charged, int mode, float a,
                            float threshold, long long steps, long long neurons) {
    long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= neurons) return;
    float v = 0.0f;
    for (long long t = 0; t < steps; ++t) {
        long long i = t * neurons + n;
        float h = charge(mode, a, v, x[i]);
        float f = fired(h, threshold);
        v = __fmul_rn(h, __fsub_rn(1.0f, f));
        if (spikes) spikes[i] = f;
        if (membrane) membrane[i] = v;
        if (charged) charged[i] = h;
    }
}

__global__ void lif_backward(const float* charged, const float* grad_spikes, const float* grad_membrane,
                             float* grad_input, float* terms, int mode, float a, float threshold, float z_scale,
                             float half_alpha, long long steps, long long neurons) {
    long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= neurons) return;
    float grad_next = 0.0f;
    for (long long t = steps - 1; t >= 0; --t) {
        long long i = t * neurons + n;
        float h = charged[i];
        float gm = grad_membrane ? grad_membrane[i] : 0.0f;
        float gv = (t + 1 == steps) ? gm : carry(mode, a, gm, grad_next);
        float gh = __fmul_rn(gv, __fsub_rn(1.0f, fired(h, threshold)));
        if (grad_spikes) {
            float z = __fmul_rn(__fsub_rn(h, threshold), z_scale);
            float slope = __fmul_rn(__fdiv_rn(1.0f, __fadd_rn(__fmul_rn(z, z), 1.0f)), half_alpha);
            gh = __fadd_rn(gh, __fmul_rn(grad_spikes[i], slope));
        }
        grad_input[i] = gh;
        if (terms) {
            float previous = 0.0f;
            if (t > 0) {
                float hp = charged[i - neurons];
                previous = __fmul_rn(hp, __fsub_rn(1.0f, fired(hp, threshold)));
            }
            terms[i] = mode == 2 ? __fmul_rn(-gh, previous) : __fmul_rn(gh, previous);
        }
        grad_next = gh;
    }
}
}
"#;

const BLOCK: u32 = 256;

/// The compiled kernels of one device, with the stream they run on.
struct Kernels {
    forward: CudaFunction,
    backward: CudaFunction,
    stream: Arc<CudaStream>,
}

// SAFETY: the functions and stream are handles into the CUDA context, which the driver allows
// to be used from any thread.
unsafe impl Send for Kernels {}
unsafe impl Sync for Kernels {}

/// Whether the fused kernel can run on CUDA device `index`: compiled, loaded and equal to the CPU
/// kernel on a random input. Checked once per device; the error says why not.
pub fn verified(index: usize) -> Result<(), String> {
    static CHECKED: OnceLock<Mutex<HashMap<usize, Result<(), String>>>> = OnceLock::new();
    let mut checked = CHECKED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    checked.entry(index).or_insert_with(|| checked_on(index)).clone()
}

/// The self-check, with cudarc's panics (a CUDA library it cannot load) turned into errors.
fn checked_on(index: usize) -> Result<(), String> {
    if index >= tch::Cuda::device_count() as usize {
        return Err(format!("no CUDA device {index}"));
    }
    match std::panic::catch_unwind(|| self_check(index)) {
        Ok(result) => result.map_err(|e| format!("{e:#}")),
        Err(panic) => {
            Err(panic.downcast_ref::<String>().cloned().unwrap_or_else(|| "the CUDA driver library failed to load".into()))
        }
    }
}

/// Compiles the kernel source to PTX (needs NVRTC, not a GPU).
pub fn compile() -> Result<cudarc::nvrtc::Ptx> {
    load_nvrtc()?;
    let options = cudarc::nvrtc::CompileOptions { fmad: Some(false), prec_div: Some(true), ..Default::default() };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options)
        .map_err(|e| anyhow!("NVRTC could not compile the fused neuron kernel: {e:?}"))
}

fn kernels(index: usize) -> Result<&'static Kernels> {
    static LOADED: OnceLock<Mutex<HashMap<usize, &'static Kernels>>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(kernels) = loaded.get(&index) {
        return Ok(kernels);
    }
    let context = CudaContext::new(index).context("CUDA driver")?;
    let module = context.load_module(compile()?).context("loading the fused neuron kernel")?;
    let kernels = Kernels {
        forward: module.load_function("lif_forward")?,
        backward: module.load_function("lif_backward")?,
        stream: context.default_stream(),
    };
    let kernels: &'static Kernels = Box::leak(Box::new(kernels));
    loaded.insert(index, kernels);
    Ok(kernels)
}

/// NVRTC from the path, or from the torch wheel's `nvidia/cu13/lib` beside libtorch.
fn load_nvrtc() -> Result<()> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: loading a shared library runs its initialisers; NVRTC's are benign.
            let on_path = unsafe { libloading::Library::new("libnvrtc.so.13") };
            if let Ok(library) = on_path {
                std::mem::forget(library);
                return Ok(());
            }
            let dir = wheel_nvrtc_dir().ok_or("libnvrtc.so.13 is neither on the library path nor beside libtorch")?;
            for name in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"] {
                // SAFETY: as above; kept loaded for the life of the process.
                let library = unsafe { libloading::Library::new(dir.join(name)) }
                    .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
                std::mem::forget(library);
            }
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `<site-packages>/nvidia/cu13/lib`, found from where libtorch was loaded.
fn wheel_nvrtc_dir() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let libtorch =
        maps.lines().filter_map(|line| line.split_whitespace().nth(5)).find(|path| path.ends_with("/libtorch_cpu.so"))?;
    let site = std::path::Path::new(libtorch).parent()?.parent()?.parent()?;
    Some(site.join("nvidia").join("cu13").join("lib")).filter(|dir| dir.join("libnvrtc.so.13").exists())
}

/// The kernel's mode number and parameter for a charge formula.
fn mode(charge: Charge) -> (i32, f32) {
    match charge {
        Charge::Divide(tau) => (0, tau),
        Charge::Multiply(keep) => (1, keep),
        Charge::SubtractProduct(rate) => (2, rate),
        Charge::MultiplyOneMinus(keep) => (3, keep),
    }
}

fn pointer(tensor: Option<&Tensor>) -> u64 {
    tensor.map_or(0, |t| t.data_ptr() as u64)
}

fn config(neurons: i64) -> LaunchConfig {
    let blocks = (neurons as u64).div_ceil(u64::from(BLOCK)).max(1) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

fn device_index(tensor: &Tensor) -> Result<usize> {
    match tensor.device() {
        Device::Cuda(index) => Ok(index),
        other => bail!("the CUDA neuron kernel got a tensor on {other:?}"),
    }
}

/// The forward over a contiguous float32 `(T, B, C)` CUDA input.
pub fn forward(input: &Tensor, dynamics: &Dynamics32, readout: Readout, save: bool) -> Result<FusedForward> {
    let kernels = kernels(device_index(input)?)?;
    let shape = input.size();
    let (steps, neurons) = (shape[0], input.numel() as i64 / shape[0].max(1));
    let new = |wanted: bool| wanted.then(|| Tensor::empty(shape.as_slice(), (Kind::Float, input.device())));
    let (spikes, membrane, charged) = (new(readout.spikes), new(readout.membrane), new(save));
    let (mode, a) = mode(dynamics.charge);
    let pointers = [pointer(Some(input)), pointer(spikes.as_ref()), pointer(membrane.as_ref()), pointer(charged.as_ref())];
    let mut launch = kernels.stream.launch_builder(&kernels.forward);
    for p in &pointers {
        launch.arg(p);
    }
    launch.arg(&mode).arg(&a).arg(&dynamics.threshold).arg(&steps).arg(&neurons);
    // SAFETY: the pointers are live CUDA tensors of `steps·neurons` float32 values (or null), and
    // the argument list matches `lif_forward`'s signature.
    unsafe { launch.launch(config(neurons)) }.context("launching the fused neuron forward")?;
    Ok(FusedForward { spikes, membrane, charged })
}

/// The backward from the saved `charged` and the output gradients, on CUDA.
pub fn backward(
    charged: &Tensor,
    dynamics: &Dynamics32,
    grad_spikes: Option<&Tensor>,
    grad_membrane: Option<&Tensor>,
) -> Result<FusedGrads> {
    let kernels = kernels(device_index(charged)?)?;
    let shape = charged.size();
    let (steps, neurons) = (shape[0], charged.numel() as i64 / shape[0].max(1));
    let contiguous = |g: Option<&Tensor>| g.map(|g| g.to_kind(Kind::Float).contiguous());
    let (grad_spikes, grad_membrane) = (contiguous(grad_spikes), contiguous(grad_membrane));
    let input = Tensor::empty(shape.as_slice(), (Kind::Float, charged.device()));
    let terms = dynamics.charge.learns_rate().then(|| Tensor::empty([steps, neurons], (Kind::Float, charged.device())));
    let (mode, a) = mode(dynamics.charge);
    let pointers = [
        pointer(Some(charged)),
        pointer(grad_spikes.as_ref()),
        pointer(grad_membrane.as_ref()),
        pointer(Some(&input)),
        pointer(terms.as_ref()),
    ];
    let mut launch = kernels.stream.launch_builder(&kernels.backward);
    for p in &pointers {
        launch.arg(p);
    }
    launch.arg(&mode).arg(&a).arg(&dynamics.threshold).arg(&dynamics.z_scale).arg(&dynamics.half_alpha);
    launch.arg(&steps).arg(&neurons);
    // SAFETY: as in `forward`, for `lif_backward`'s signature.
    unsafe { launch.launch(config(neurons)) }.context("launching the fused neuron backward")?;
    Ok(FusedGrads { input, rate: terms.map(|terms| terms.sum(Kind::Float) * dynamics.charge.rate_sign()) })
}

/// Runs both kernels on a random input and compares them bitwise with the CPU kernel.
fn self_check(index: usize) -> Result<()> {
    let device = Device::Cuda(index);
    let input = (Tensor::randn([37, 3, 29], (Kind::Float, Device::Cpu)) * 0.8 + 0.4).contiguous();
    let grads = [Tensor::randn([37, 3, 29], (Kind::Float, Device::Cpu)), Tensor::randn([37, 3, 29], (Kind::Float, Device::Cpu))];
    for charge in [Charge::Divide(1.5), Charge::Multiply(0.3), Charge::SubtractProduct(0.4), Charge::MultiplyOneMinus(0.6)] {
        let dynamics = Dynamics32 { charge, threshold: 1.0, z_scale: 7.853_982, half_alpha: 2.5 };
        let on_cpu = super::fused_lif::forward(&input, &dynamics, Readout::BOTH, true)?;
        let on_gpu = forward(&input.to_device(device), &dynamics, Readout::BOTH, true)?;
        let cpu_back =
            super::fused_lif::backward(on_cpu.charged.as_ref().expect("saved"), &dynamics, Some(&grads[0]), Some(&grads[1]))?;
        let gpu_grads = [grads[0].to_device(device), grads[1].to_device(device)];
        let gpu_back = backward(on_gpu.charged.as_ref().expect("saved"), &dynamics, Some(&gpu_grads[0]), Some(&gpu_grads[1]))?;
        let pairs = [
            ("spikes", on_cpu.spikes, on_gpu.spikes),
            ("membrane", on_cpu.membrane, on_gpu.membrane),
            ("charged", on_cpu.charged, on_gpu.charged),
            ("input gradient", Some(cpu_back.input), Some(gpu_back.input)),
        ];
        for (what, cpu, gpu) in pairs {
            let (cpu, gpu) = (cpu.expect("computed"), gpu.expect("computed").to_device(Device::Cpu));
            if !cpu.equal(&gpu) {
                bail!("the CUDA kernel's {what} differ from the CPU kernel's ({charge:?})");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel source compiles with the torch wheel's NVRTC (no GPU needed), without fused
    /// multiply-adds, and exports both kernels.
    #[test]
    fn kernels_compile_to_ptx_without_contractions() {
        let ptx = compile().unwrap().to_src();
        for entry in [".entry lif_forward", ".entry lif_backward"] {
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
}
