//! What our CUDA kernels share (docs/method.md, "Fused neurons"): the compile with libtorch's
//! NVRTC (no contraction into fused multiply-adds, IEEE division), loading and self-checking
//! once per device, and a check whose CUDA library fails to load (cudarc panics then) turned
//! into an error that says why.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// NVRTC options: no contraction into fused multiply-adds, IEEE division.
pub const OPTIONS: [&str; 2] = ["--fmad=false", "--prec-div=true"];

/// Compiles `source` (named `name`) to PTX with libtorch's NVRTC (needs no GPU); `what` names
/// the kernels in the error.
pub fn compile(source: &str, name: &str, what: &str) -> Result<String> {
    let nvrtc = super::nvrtc::loaded().map_err(anyhow::Error::msg)?;
    nvrtc.compile(source, name, &OPTIONS).with_context(|| format!("NVRTC could not compile {what}"))
}

/// A value per CUDA device, made once.
pub struct PerDevice<T> {
    values: OnceLock<Mutex<HashMap<usize, T>>>,
}

impl<T> Default for PerDevice<T> {
    fn default() -> Self {
        PerDevice::new()
    }
}

impl<T> PerDevice<T> {
    pub const fn new() -> PerDevice<T> {
        PerDevice { values: OnceLock::new() }
    }
}

impl<T: Clone> PerDevice<T> {
    /// Device `index`'s value, made by `make` the first time.
    pub fn get_or(&self, index: usize, make: impl FnOnce() -> T) -> T {
        let mut values = self.values.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        values.entry(index).or_insert_with(make).clone()
    }

    /// Device `index`'s value, made by `make` until it succeeds.
    pub fn get_or_try(&self, index: usize, make: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut values = self.values.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = values.get(&index) {
            return Ok(value.clone());
        }
        let value = make()?;
        values.insert(index, value.clone());
        Ok(value)
    }
}

/// Runs a kernel's self-check on CUDA device `index`: an error when there is no such device,
/// when the check fails, or when it panics (cudarc cannot load a CUDA library).
pub fn self_check(index: usize, check: impl FnOnce() -> Result<()>) -> Result<(), String> {
    if index >= tch::Cuda::device_count() as usize {
        return Err(format!("no CUDA device {index}"));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        Ok(result) => result.map_err(|e| format!("{e:#}")),
        Err(panic) => {
            Err(panic.downcast_ref::<String>().cloned().unwrap_or_else(|| "the CUDA driver library failed to load".into()))
        }
    }
}
