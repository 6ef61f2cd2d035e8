//! Where tensors live: `--device auto|cpu|cuda|cuda:N`, and libtorch's cuDNN settings.
//!
//! `auto` picks CUDA device 0 when one is present, else the CPU. cuDNN is off unless asked
//! for, as in the reference (docs/method.md §2.3); when on, it is deterministic, with TF32 off and no
//! benchmark autotuning, so that runs repeat. tch exposes only the on/off and benchmark switches:
//! the other two are libtorch's own `at::Context` setters, called through their exported symbols
//! (see libtorch.md).
//!
//! Host memory: a training step allocates and frees tensors of tens of MB. glibc serves those
//! with fresh `mmap`s, which the kernel faults in and zeroes page by page on every step (15% of
//! a CPU step at the SHD preset). [`keep_freed_host_memory`] makes glibc reuse them instead.

use anyhow::{bail, Result};
use std::ffi::{c_int, c_void};
use tch::Device;

extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut c_void;
    #[link_name = "_ZN2at7Context21setDeterministicCuDNNEb"]
    fn at_set_deterministic_cudnn(context: *mut c_void, on: bool);
    #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
    fn at_set_allow_tf32_cudnn(context: *mut c_void, on: bool);
    #[link_name = "_ZNK2at7Context18deterministicCuDNNEv"]
    fn at_deterministic_cudnn(context: *const c_void) -> bool;
    fn mallopt(param: c_int, value: c_int) -> c_int;
}

/// glibc's `M_TRIM_THRESHOLD` and `M_MMAP_MAX` (malloc.h).
const M_TRIM_THRESHOLD: c_int = -1;
const M_MMAP_MAX: c_int = -4;

/// Freed memory kept for reuse before glibc returns the top of the heap to the system.
const KEPT_FREE_BYTES: c_int = 512 << 20;

/// Serves every allocation from the heap and keeps up to 512 MiB of freed memory there for
/// reuse, so that a step's large temporaries do not page-fault again on the next step. (Keeping
/// more was no faster at the SHD preset and raised the peak resident memory.)
pub fn keep_freed_host_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before any large allocation.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES);
    }
}

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`, and checks that the device exists.
pub fn select(name: &str) -> Result<Device> {
    let count = tch::Cuda::device_count() as usize;
    let device = match name {
        "auto" if count > 0 => Device::Cuda(0),
        "auto" | "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => Device::Cuda(index),
            _ => bail!("--device must be auto, cpu, cuda or cuda:N, got `{name}`"),
        },
    };
    if let Device::Cuda(index) = device {
        if index >= count {
            bail!("--device {name}: CUDA is not available here ({count} CUDA devices found)");
        }
    }
    Ok(device)
}

/// The user-facing name of a device: `cpu`, `cuda:0`, ….
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(index) => format!("cuda:{index}"),
        _ => "cpu".into(),
    }
}

/// Turns cuDNN on (deterministic, no TF32, no autotuning) or off.
pub fn set_cudnn(enabled: bool) {
    tch::Cuda::set_user_enabled_cudnn(enabled);
    tch::Cuda::cudnn_set_benchmark(false);
    // SAFETY: `globalContext()` returns libtorch's process-wide context, which lives as long as
    // the process; the setters only store a flag.
    unsafe {
        let context = at_global_context();
        at_set_deterministic_cudnn(context, enabled);
        at_set_allow_tf32_cudnn(context, false);
    }
}

/// Whether libtorch will pick only deterministic cuDNN algorithms.
pub fn cudnn_is_deterministic() -> bool {
    // SAFETY: as in `set_cudnn`; the getter reads a flag.
    unsafe { at_deterministic_cudnn(at_global_context()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_missing_cuda_is_an_error() {
        assert_eq!(select("cpu").unwrap(), Device::Cpu);
        assert!(format!("{:#}", select("gpu").unwrap_err()).contains("`gpu`"));
        if tch::Cuda::device_count() == 0 {
            assert_eq!(select("auto").unwrap(), Device::Cpu);
            assert!(format!("{:#}", select("cuda:0").unwrap_err()).contains("CUDA is not available"));
        }
    }

    #[test]
    fn cudnn_switch_reaches_libtorch() {
        set_cudnn(true);
        assert!(cudnn_is_deterministic());
        set_cudnn(false);
        assert!(!cudnn_is_deterministic());
    }
}
