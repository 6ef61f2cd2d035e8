//! The checkpoint boundary: safetensors files whose keys are the PyTorch reference's
//! `state_dict` keys (`model.0.weight`, `model.0.P`, `model.0.SIG`, `model.1.running_mean`, …),
//! so that files cross between this crate and `safetensors.torch` unchanged (docs/method.md §2.1).
//! Loading is strict: missing, unexpected and mis-shaped keys are all reported by name, and so
//! are non-finite values, negative BatchNorm variances and integer or boolean data for float
//! variables; float64 and float16 values are converted with a warning.
//! Files may carry string metadata in the safetensors header (the training state of `last`).
//! Every file we write carries an FNV-1a checksum of its tensors (names, dtypes, shapes, bytes)
//! under [`CHECKSUM_KEY`], verified on every read; files without one (PyTorch's) are accepted.

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

/// The header metadata key of our files' checksum.
pub const CHECKSUM_KEY: &str = "snn_delays.checksum";

/// Reads every tensor of a safetensors file, after checking its checksum if it has one.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail!("safetensors file {} does not exist", path.display());
    }
    verify_checksum(path)?;
    Tensor::read_safetensors(path).with_context(|| format!("{} is not a readable safetensors file", path.display()))
}

/// FNV-1a (64-bit) over each tensor's name, dtype, shape and bytes, in name order.
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, dtype, shape, data) in sorted {
        feed(name.as_bytes());
        feed(dtype.as_bytes());
        shape.iter().for_each(|d| feed(&(*d as u64).to_le_bytes()));
        feed(data);
    }
    format!("{hash:016x}")
}

/// Checks the checksum of a safetensors file we wrote (files without one pass).
pub fn verify_checksum(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a readable safetensors file: {e:?}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a readable safetensors file: {e:?}", path.display()))?;
    let Some(stored) = header.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)) else {
        return Ok(());
    };
    let views = file.tensors();
    let actual =
        checksum(views.iter().map(|(name, view)| (name.as_str(), format!("{:?}", view.dtype()), view.shape(), view.data())));
    anyhow::ensure!(
        &actual == stored,
        "{} is damaged: its tensors do not match the checksum stored with them ({actual} against {stored})",
        path.display()
    );
    Ok(())
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
    let sum =
        checksum(views.iter().map(|(name, v)| (name.as_str(), format!("{:?}", v.dtype), v.shape.as_slice(), v.data.as_slice())));
    let mut metadata = metadata.unwrap_or_default();
    metadata.insert(CHECKSUM_KEY.to_string(), sum);
    let metadata = Some(metadata);
    atomic::write_with(path, |temporary| {
        safetensors::tensor::serialize_to_file(views, &metadata, temporary).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => anyhow::Error::new(io),
            other => anyhow::anyhow!("{other}"),
        })
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
            Kind::Int16 => (Dtype::I16, 2),
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

/// The key of one of the store's variables.
pub fn key_of(vs: &VarStore, variable: &Tensor) -> String {
    state_dict(vs)
        .into_iter()
        .find(|(_, t)| t.data_ptr() == variable.data_ptr())
        .map(|(key, _)| key)
        .expect("the variable belongs to this store")
}

/// Saves the store as a reference-compatible state dict.
pub fn save(vs: &VarStore, path: &Path) -> Result<()> {
    write_tensors(path, &state_dict(vs))
}

/// Loads a state dict into the store. Every variable must be present with its shape, and the
/// file must hold nothing else; values are converted to each variable's dtype and device.
pub fn load(vs: &VarStore, path: &Path) -> Result<()> {
    load_all(vs, path, read_tensors(path)?.into_iter().collect())
}

/// A value's dtype must convert to its variable's without loss of meaning, and its numbers must
/// be possible: finite, and BatchNorm variances not negative.
fn check_value(name: &str, value: &Tensor, kind: Kind) -> std::result::Result<(), String> {
    let float = |k: Kind| matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16);
    let integer = |k: Kind| matches!(k, Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8);
    match (value.kind(), kind) {
        (have, want) if have == want => {}
        (have, Kind::Float) if float(have) => eprintln!("warning: converting `{name}` from {have:?} to Float"),
        (have, Kind::Int64) if integer(have) => {}
        (have, want) => return Err(format!("key `{name}` holds {have:?} values where {want:?} is expected")),
    }
    if float(value.kind()) {
        if value.isfinite().logical_not().any().int64_value(&[]) == 1 {
            return Err(format!("key `{name}` holds NaN or infinite values"));
        }
        if name.ends_with(".running_var") && value.lt(0.0).any().int64_value(&[]) == 1 {
            return Err(format!("key `{name}` (a BatchNorm variance) holds negative values"));
        }
    }
    Ok(())
}

/// Loads the `model.*` keys of a file that also holds other state (a resumable checkpoint).
pub fn load_model_part(vs: &VarStore, path: &Path, tensors: &std::collections::BTreeMap<String, Tensor>) -> Result<()> {
    let model: std::collections::BTreeMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{}.", keys::MODEL)))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    load_all(vs, path, model)
}

/// Loads every key of `file` (the tensors of `path`) into the store, strictly: each variable
/// present with its shape, nothing else.
pub fn load_all(vs: &VarStore, path: &Path, mut file: std::collections::BTreeMap<String, Tensor>) -> Result<()> {
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
            Some(value) => match check_value(&name, &value, variable.kind()) {
                Ok(()) => assignments.push((variable, value)),
                Err(problem) => problems.push(problem),
            },
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
