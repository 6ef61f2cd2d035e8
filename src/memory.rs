//! Memory budgets: what a run will allocate, estimated and checked before it allocates, so that
//! a configuration too large for the machine is an error naming its sizes, not an allocation
//! failure, an abort or the kernel's out-of-memory killer.
//!
//! A training step at `T` steps, batch `B` holds, in float32:
//! - parameters with their gradients and two Adam moments: `4·P` values;
//! - per DCLS layer, the dense kernel's construction kept for its backward: about
//!   `KERNEL_TENSORS·K·C_out·C_in·kc` values;
//! - per layer, the activations kept for the backward: about `ACTIVATION_TENSORS·T·B·C_out`;
//! - the input batch, three times (prefetched, current, on the device).
//!
//! The estimates err on the high side; the limit is the machine's memory unless a flag raises it.
//! On CUDA the step lives on the device: its free memory (the driver's `cuMemGetInfo`, before the
//! first step) is the limit too.

use crate::config::{Config, ModelType, RecurrentArchitecture, RecurrentBuffer};
use anyhow::{ensure, Result};

/// Tensors of the kernel's size kept by its construction (offsets, scaled, norm, exp, normalised, product).
const KERNEL_TENSORS: u64 = 6;
/// Tensors of an activation's size per layer (synapse output and its spectra, BatchNorm, the
/// neuron's saved membrane, spikes and their gradient, dropout).
const ACTIVATION_TENSORS: u64 = 12;
/// A recurrent-delay kernel's window assumed before training (DelRec's initial delays give about
/// 50 taps; it follows the largest delay as training goes).
const RECURRENT_WINDOW: u64 = 64;
const GIB: f64 = (1u64 << 30) as f64;
/// The source of a budget set on the command line.
const FLAG: &str = "--memory-limit-gb";

/// The most memory a run may use, and where that number comes from (for the message).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub bytes: u64,
    source: &'static str,
}

impl Budget {
    /// `--memory-limit-gb` if given, else the machine's total memory (for commands with the flag).
    pub fn new(limit_gb: Option<f64>) -> Result<Budget> {
        match limit_gb {
            Some(gb) => {
                ensure!(gb.is_finite() && gb > 0.0, "--memory-limit-gb must be a positive number, got {gb}");
                Ok(Budget { bytes: (gb * GIB) as u64, source: FLAG })
            }
            None => Ok(Budget { bytes: machine_bytes(), source: "this machine's memory; raise it with --memory-limit-gb" }),
        }
    }

    /// The machine's total memory (for commands without the flag).
    pub fn machine() -> Budget {
        Budget { bytes: machine_bytes(), source: "this machine's memory" }
    }

    /// A CUDA device's free memory, or `self` where it is lower and was set by the flag.
    pub fn on_device(self, free_bytes: u64) -> Budget {
        if self.source == FLAG && self.bytes <= free_bytes {
            return self;
        }
        Budget { bytes: free_bytes, source: "the CUDA device's free memory; free some, or use a smaller batch" }
    }

    /// [`Budget::on_device`] for CUDA device `index`, as its driver reports it now.
    pub fn cuda(self, index: usize) -> Result<Budget> {
        let gpu = crate::device::cuda::info(index)?;
        Ok(self.on_device(gpu.free_bytes))
    }

    /// Fails, naming the parts, when their sum exceeds the budget.
    pub fn check(&self, what: &str, parts: &[(&str, u64)]) -> Result<()> {
        let total: u64 = parts.iter().map(|(_, bytes)| bytes).fold(0, |a, &b| a.saturating_add(b));
        let described: Vec<String> = parts.iter().map(|(name, bytes)| format!("{name} {:.1} GiB", *bytes as f64 / GIB)).collect();
        ensure!(
            total <= self.bytes,
            "{what} needs about {:.1} GiB ({}), more than the limit of {:.1} GiB ({})",
            total as f64 / GIB,
            described.join(", "),
            self.bytes as f64 / GIB,
            self.source
        );
        Ok(())
    }
}

/// Total memory from /proc/meminfo (unlimited where it cannot be read).
pub fn machine_bytes() -> u64 {
    proc_kib("/proc/meminfo", "MemTotal").map_or(u64::MAX, |kib| kib.saturating_mul(1024))
}

/// A `KEY:  N kB` line of a /proc file, in KiB.
pub fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let value = text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The parts of a training step's memory at `steps` input steps and batch `batch`.
pub fn training_step(config: &Config, steps: u64, batch: u64) -> Vec<(&'static str, u64)> {
    let derived = config.derived();
    let (kernel, count) = (derived.kernel_size as u64, config.kernel_count as u64);
    let delays = config.has_delays();
    let widths: Vec<u64> = std::iter::once(derived.n_inputs as u64)
        .chain(std::iter::repeat_n(config.n_hidden_neurons as u64, config.n_hidden_layers))
        .chain(std::iter::once(derived.n_outputs as u64))
        .collect();
    let (mut parameters, mut kernels, mut activations) = (0u64, 0u64, 0u64);
    let mut length = steps;
    for pair in widths.windows(2) {
        let synapses = pair[0].saturating_mul(pair[1]);
        parameters = parameters.saturating_add(synapses.saturating_mul(if delays { 3 * count } else { 1 }));
        if delays {
            kernels =
                kernels.saturating_add(KERNEL_TENSORS.saturating_mul(kernel).saturating_mul(synapses).saturating_mul(count));
            length = length.saturating_add((kernel - 1) / 2);
        }
        activations =
            activations.saturating_add(ACTIVATION_TENSORS.saturating_mul(length).saturating_mul(batch).saturating_mul(pair[1]));
    }
    let input = 3u64.saturating_mul(steps).saturating_mul(batch).saturating_mul(widths[0]);
    let (recurrent_parameters, buffers) = recurrent_parts(config, steps, batch);
    [
        ("parameters and Adam state", 4u64.saturating_mul(parameters.saturating_add(recurrent_parameters))),
        ("kernels", kernels),
        ("activations", activations),
        ("input", input),
        ("recurrent buffers", buffers),
    ]
    .into_iter()
    .map(|(name, values)| (name, values.saturating_mul(4)))
    .collect()
}

/// A recurrent-delay model's recurrent weights and the values its recurrent layers keep for the
/// backward: per step, the fused layer keeps three `(B, N)` tensors; autograd keeps buffers of
/// the window's length. `(0, 0)` for the feedforward models.
fn recurrent_parts(config: &Config, steps: u64, batch: u64) -> (u64, u64) {
    let Some(recurrent) = config.recurrent.as_ref().filter(|_| config.model_type == ModelType::Delrec) else {
        return (0, 0);
    };
    let layers = match recurrent.architecture {
        RecurrentArchitecture::Ssc => recurrent.hidden_layers() as u64,
        RecurrentArchitecture::Shd => 1,
    };
    let n = config.n_hidden_neurons as u64;
    let per_step = if recurrent.buffer == RecurrentBuffer::Fused { 3 } else { 2 * RECURRENT_WINDOW };
    let parameters = layers.saturating_mul(n.saturating_mul(n).saturating_add(2 * n));
    (parameters, layers.saturating_mul(steps).saturating_mul(batch).saturating_mul(n).saturating_mul(per_step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Dataset, Preset};

    #[test]
    fn recurrent_layers_count_their_buffers() {
        let step = |buffer: &str| {
            let overrides = [format!("recurrent.buffer={buffer}")];
            let config = ConfigSource { preset: Some(Preset::DelrecSsc), file: None, overrides: &overrides }.load().unwrap();
            training_step(&config, 250, 128).into_iter().find(|part| part.0 == "recurrent buffers").unwrap().1
        };
        assert_eq!(step("fused"), 3 * 250 * 128 * 256 * 3 * 4);
        assert!(step("postsynaptic") > 40 * step("fused"));
    }

    fn shd(overrides: &[&str]) -> Config {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        ConfigSource { preset: Some(Dataset::Shd.into()), file: None, overrides: &overrides }.load().unwrap()
    }

    #[test]
    fn the_preset_fits_and_a_huge_network_does_not() {
        let budget = Budget::new(Some(8.0)).unwrap();
        let preset = training_step(&shd(&[]), 150, 256);
        let total: u64 = preset.iter().map(|p| p.1).sum();
        assert!((1 << 28..4 << 30).contains(&total), "{preset:?}");
        budget.check("a step", &preset).unwrap();
        let message =
            format!("{:#}", budget.check("a step", &training_step(&shd(&["n_hidden_neurons=100000"]), 150, 256)).unwrap_err());
        assert!(message.contains("kernels") && message.contains("--memory-limit-gb"), "{message}");
        assert!(Budget::new(Some(0.0)).is_err() && machine_bytes() > 1 << 30);
    }

    #[test]
    fn on_cuda_the_device_s_free_memory_limits_the_step() {
        let step = training_step(&shd(&[]), 150, 256);
        let tight = Budget::machine().on_device(64 << 20);
        let message = format!("{:#}", tight.check("a step", &step).unwrap_err());
        assert!(message.contains("CUDA device's free memory") && message.contains("0.1 GiB"), "{message}");
        let flag = Budget::new(Some(1.0)).unwrap();
        assert_eq!(flag.on_device(8 << 30).bytes, 1 << 30);
        assert_eq!(flag.on_device(1 << 20).bytes, 1 << 20);
    }
}
