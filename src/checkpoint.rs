//! The checkpoint boundary: safetensors files whose keys are the PyTorch reference's
//! `state_dict` keys (`model.0.weight`, `model.0.P`, `model.0.SIG`, `model.1.running_mean`, …),
//! so that files cross between this crate and `safetensors.torch` unchanged (semantics.md §2.1).
//! Loading is strict: missing, unexpected and mis-shaped keys are all reported by name.

use crate::atomic;
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// The reference's names, used only where variables are created and files are read.
pub mod keys {
    /// The `nn.Sequential` holding every block.
    pub const MODEL: &str = "model";
    /// DCLS positions.
    pub const POSITIONS: &str = "P";
    /// DCLS Gaussian widths.
    pub const SIGMA: &str = "SIG";
    /// The PLIF leak parameter.
    pub const PLIF_W: &str = "w";
    /// A hidden block is synapse, BatchNorm, neuron, dropout: indices `4l .. 4l+3`.
    pub const HIDDEN_BLOCK_LEN: i64 = 4;
}

/// Reads every tensor of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail!("safetensors file {} does not exist", path.display());
    }
    Tensor::read_safetensors(path).with_context(|| format!("{} is not a readable safetensors file", path.display()))
}

/// Writes named tensors atomically.
pub fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    atomic::write_with(path, |temporary| {
        let contiguous: Vec<(&str, Tensor)> =
            named.iter().map(|(name, t)| (name.as_str(), t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
        Tensor::write_safetensors(&contiguous, temporary)?;
        Ok(())
    })
}

/// The store's variables as a sorted state dict.
pub fn state_dict(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Saves the store as a reference-compatible state dict.
pub fn save(vs: &VarStore, path: &Path) -> Result<()> {
    write_tensors(path, &state_dict(vs))
}

/// Loads a state dict into the store. Every variable must be present with its shape, and the
/// file must hold nothing else; values are converted to each variable's dtype and device.
pub fn load(vs: &VarStore, path: &Path) -> Result<()> {
    let mut file: std::collections::BTreeMap<String, Tensor> = read_tensors(path)?.into_iter().collect();
    let mut problems = Vec::new();
    let mut assignments = Vec::new();
    for (name, variable) in state_dict(vs) {
        match file.remove(&name) {
            None => problems.push(format!("missing key `{name}`")),
            Some(value) if value.size() != variable.size() => problems.push(format!(
                "key `{name}` has shape {:?} in the file but {:?} in the model",
                value.size(),
                variable.size()
            )),
            Some(value) => assignments.push((variable, value)),
        }
    }
    problems.extend(file.keys().map(|name| format!("unexpected key `{name}`")));
    if !problems.is_empty() {
        bail!("checkpoint {} does not fit this model: {}", path.display(), problems.join("; "));
    }
    tch::no_grad(|| {
        for (mut variable, value) in assignments {
            variable.copy_(&value.to_kind(variable.kind()).to_device(variable.device()));
        }
    });
    Ok(())
}
