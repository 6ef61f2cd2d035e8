//! The checkpoint boundary: safetensors files whose keys are the PyTorch reference's
//! `state_dict` keys (`model.0.weight`, `model.0.P`, `model.0.SIG`, `model.1.running_mean`, …),
//! so that files cross between this crate and `safetensors.torch` unchanged (semantics.md §2.1).
//! Loading is strict: missing, unexpected and mis-shaped keys are all reported by name.
//! Files may carry string metadata in the safetensors header (the training state of `last`).

use crate::atomic;
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

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
    write_tensors_with_metadata(path, named, None)
}

/// Writes named tensors and header metadata atomically.
pub fn write_tensors_with_metadata(
    path: &Path,
    named: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views = named.iter().map(|(name, t)| Ok((name.clone(), HostTensor::new(t)?))).collect::<Result<Vec<_>>>()?;
    atomic::write_with(path, |temporary| {
        safetensors::tensor::serialize_to_file(views, &metadata, temporary)?;
        Ok(())
    })
}

/// The header metadata of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a readable safetensors file: {e:?}", path.display()))?;
    Ok(metadata.metadata().clone().unwrap_or_default())
}

/// A tensor copied to host memory, as safetensors serialises it.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl HostTensor {
    fn new(tensor: &Tensor) -> Result<HostTensor> {
        let tensor = tensor.detach().to_device(tch::Device::Cpu).contiguous();
        let (dtype, width) = match tensor.kind() {
            Kind::Float => (Dtype::F32, 4),
            Kind::Double => (Dtype::F64, 8),
            Kind::Half => (Dtype::F16, 2),
            Kind::Int64 => (Dtype::I64, 8),
            Kind::Int => (Dtype::I32, 4),
            Kind::Uint8 => (Dtype::U8, 1),
            other => bail!("cannot save tensors of kind {other:?}"),
        };
        let numel = tensor.numel();
        let mut data = vec![0u8; numel * width];
        tensor.copy_data_u8(&mut data, numel);
        Ok(HostTensor { dtype, shape: tensor.size().iter().map(|&d| d as usize).collect(), data })
    }
}

impl View for HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
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
    load_from(vs, path, read_tensors(path)?.into_iter().collect())
}

/// Loads the `model.*` keys of a file that also holds other state (a resumable checkpoint).
pub fn load_model_part(vs: &VarStore, path: &Path, tensors: &std::collections::BTreeMap<String, Tensor>) -> Result<()> {
    let model: std::collections::BTreeMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{}.", keys::MODEL)))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    load_from(vs, path, model)
}

fn load_from(vs: &VarStore, path: &Path, mut file: std::collections::BTreeMap<String, Tensor>) -> Result<()> {
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
