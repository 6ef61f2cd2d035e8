//! Where tensors live: `--device auto|cpu|cuda|cuda:N`, and libtorch's cuDNN settings.
//!
//! `auto` picks CUDA device 0 when one is present, else the CPU. cuDNN is off unless asked
//! for, as in the reference (docs/method.md §2.3); when on, it is deterministic, with TF32 off and no
//! benchmark autotuning, so that runs repeat. tch exposes only the on/off and benchmark switches:
//! the other two are libtorch's own `at::Context` setters, called through their exported symbols
//! (see libtorch.md).

pub mod cuda;
pub mod kernels;
pub mod nvrtc;

use anyhow::{bail, Result};
use std::ffi::c_void;
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
    #[link_name = "_ZNK2at7Context16userEnabledCuDNNEv"]
    fn at_user_enabled_cudnn(context: *const c_void) -> bool;
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

/// Whether libtorch may use cuDNN (`--cudnn`).
pub fn cudnn_enabled() -> bool {
    // SAFETY: as in `set_cudnn`; the getter reads a flag.
    unsafe { at_user_enabled_cudnn(at_global_context()) }
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
        assert!(cudnn_is_deterministic() && cudnn_enabled());
        set_cudnn(false);
        assert!(!cudnn_is_deterministic() && !cudnn_enabled());
    }
}
