//! The `delays` format: the eval form ([`EvalNetwork`]) as safetensors, the input of the
//! inference engine. Per layer `l`:
//! - `layer{l}.delay`: int16 `(C_out, C_in, taps)`, delays in steps;
//! - `layer{l}.weight`: float32, the same shape, the weights as the eval kernel holds them;
//! - `layer{l}.scale`, `layer{l}.shift`: float32 `(C_out)`, the folded BatchNorm (hidden layers).
//!
//! The header metadata `snn_delays.eval_form` holds the geometry as JSON: the time step, the
//! loss (which fixes the readout), and per layer the sizes, taps, kernel size, threshold and the
//! eval charge (`divide` τ, `multiply` 1−1/τ, `subtract_product` sigmoid(w), `multiply_one_minus`
//! 1−sigmoid(w); float32 values). A checksum of the tensors is stored as in our checkpoints.
//! Reading is pure Rust (the safetensors crate), so the engine needs no libtorch.

use super::recurrent_delays;
use crate::checkpoint;
use crate::config::{Config, Loss};
use crate::model::eval_form::{EvalLayer, EvalNetwork, EvalSynapse, FoldedNorm};
use crate::model::neuron::Charge;
use crate::model::recurrent::eval_form::RecurrentEvalNetwork;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// The metadata key of the geometry.
pub const GEOMETRY_KEY: &str = "snn_delays.eval_form";
/// The metadata key of the training configuration, for framing the data the same way.
pub const CONFIG_KEY: &str = "snn_delays.config";
const FORMAT: &str = "snn-delays eval form";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Geometry {
    format: String,
    version: u32,
    time_step_ms: f64,
    loss: Loss,
    layers: Vec<LayerGeometry>,
}

#[derive(Serialize, Deserialize)]
struct LayerGeometry {
    in_channels: usize,
    out_channels: usize,
    taps: usize,
    kernel_size: usize,
    threshold: f32,
    charge: String,
    charge_value: f32,
    batch_norm: bool,
}

pub(super) fn charge_name(charge: Charge) -> (&'static str, f32) {
    match charge {
        Charge::Divide(v) => ("divide", v),
        Charge::Multiply(v) => ("multiply", v),
        Charge::SubtractProduct(v) => ("subtract_product", v),
        Charge::MultiplyOneMinus(v) => ("multiply_one_minus", v),
    }
}

pub(super) fn charge_of(name: &str, value: f32) -> Result<Charge> {
    Ok(match name {
        "divide" => Charge::Divide(value),
        "multiply" => Charge::Multiply(value),
        "subtract_product" => Charge::SubtractProduct(value),
        "multiply_one_minus" => Charge::MultiplyOneMinus(value),
        other => bail!("unknown charge `{other}`"),
    })
}

/// Writes `form` and the configuration it was trained with to `path` (atomically).
pub fn write(form: &EvalNetwork, config: &Config, path: &Path) -> Result<()> {
    let mut named = Vec::new();
    let mut layers = Vec::new();
    for (l, layer) in form.layers.iter().enumerate() {
        let s = &layer.synapse;
        ensure!(s.kernel_size <= i16::MAX as usize, "layer {l}: kernel size {} does not fit int16 delays", s.kernel_size);
        let shape = [s.out_channels as i64, s.in_channels as i64, s.taps as i64];
        let delays: Vec<i16> = s.delays.iter().map(|&d| d as i16).collect();
        named.push((format!("layer{l}.delay"), Tensor::from_slice(&delays).reshape(shape)));
        named.push((format!("layer{l}.weight"), Tensor::from_slice(&s.weights).reshape(shape)));
        if let Some(norm) = &layer.norm {
            named.push((format!("layer{l}.scale"), Tensor::from_slice(&norm.scale)));
            named.push((format!("layer{l}.shift"), Tensor::from_slice(&norm.shift)));
        }
        let (charge, charge_value) = charge_name(layer.charge);
        layers.push(LayerGeometry {
            in_channels: s.in_channels,
            out_channels: s.out_channels,
            taps: s.taps,
            kernel_size: s.kernel_size,
            threshold: layer.threshold,
            charge: charge.into(),
            charge_value,
            batch_norm: layer.norm.is_some(),
        });
    }
    let geometry = Geometry { format: FORMAT.into(), version: VERSION, time_step_ms: form.time_step_ms, loss: form.loss, layers };
    write_with_geometry(&named, &serde_json::to_string(&geometry)?, config, path)
}

/// Writes `named` tensors with the geometry and the configuration in the header (atomically).
pub(super) fn write_with_geometry(named: &[(String, Tensor)], geometry: &str, config: &Config, path: &Path) -> Result<()> {
    let metadata = HashMap::from([
        (GEOMETRY_KEY.to_string(), geometry.to_string()),
        (CONFIG_KEY.to_string(), serde_json::to_string(&config.to_json())?),
    ]);
    checkpoint::write_tensors_with_metadata(path, named, Some(metadata))
}

/// A `delays` file's network: feed-forward delays, or recurrent delays
/// ([`super::recurrent_delays`]).
pub enum Deployed {
    Feedforward(EvalNetwork),
    Recurrent(RecurrentEvalNetwork),
}

/// Reads a `delays` file of either kind; every shape and value is checked against the geometry.
pub fn read_any(path: &Path) -> Result<Deployed> {
    let context = || format!("{} is not a snn-delays eval form (`export --format delays`)", path.display());
    checkpoint::verify_checksum(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{e:?}")).with_context(context)?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{e:?}")).with_context(context)?;
    let text = header.metadata().as_ref().and_then(|m| m.get(GEOMETRY_KEY)).with_context(context)?;
    let format: serde_json::Value = serde_json::from_str(text).with_context(context)?;
    let reading = || format!("reading {}", path.display());
    match format["format"].as_str() {
        Some(FORMAT) => Ok(Deployed::Feedforward(read_feedforward(&file, text).with_context(reading)?)),
        Some(recurrent_delays::FORMAT) => Ok(Deployed::Recurrent(recurrent_delays::read(&file, text).with_context(reading)?)),
        _ => Err(anyhow::anyhow!("unknown format {}", format["format"])).with_context(context),
    }
}

/// Reads a `delays` file of a feed-forward network.
pub fn read(path: &Path) -> Result<EvalNetwork> {
    match read_any(path)? {
        Deployed::Feedforward(form) => Ok(form),
        Deployed::Recurrent(_) => bail!("{} holds a recurrent-delay network; load it with `infer::load`", path.display()),
    }
}

fn read_feedforward(file: &safetensors::SafeTensors, text: &str) -> Result<EvalNetwork> {
    let geometry: Geometry = serde_json::from_str(text)?;
    ensure!(geometry.version == VERSION, "format version {} is not {VERSION}", geometry.version);
    ensure!(!geometry.layers.is_empty(), "no layers");
    let layers = geometry.layers.iter().enumerate().map(|(l, g)| read_layer(file, l, g)).collect::<Result<Vec<_>>>()?;
    for (l, pair) in layers.windows(2).enumerate() {
        ensure!(
            pair[0].synapse.out_channels == pair[1].synapse.in_channels,
            "layer {l} has {} outputs but layer {} takes {} inputs",
            pair[0].synapse.out_channels,
            l + 1,
            pair[1].synapse.in_channels
        );
    }
    Ok(EvalNetwork { layers, loss: geometry.loss, time_step_ms: geometry.time_step_ms })
}

/// The configuration stored in a `delays` file, as JSON (for `--config`).
pub fn stored_config(path: &Path) -> Result<Option<String>> {
    Ok(checkpoint::read_metadata(path)?.remove(CONFIG_KEY))
}

fn read_layer(file: &safetensors::SafeTensors, l: usize, g: &LayerGeometry) -> Result<EvalLayer> {
    let synapses = g.out_channels * g.in_channels * g.taps;
    ensure!(synapses > 0 && g.kernel_size >= 1, "layer {l}: empty layer");
    let delays: Vec<u16> = values::<2>(file, &format!("layer{l}.delay"), synapses, "I16")?
        .into_iter()
        .map(|b| i16::from_le_bytes(b) as i32)
        .map(|d| u16::try_from(d).ok().filter(|&d| (d as usize) < g.kernel_size))
        .collect::<Option<_>>()
        .with_context(|| format!("layer{l}.delay holds a delay outside 0..{}", g.kernel_size))?;
    let weights = floats(file, &format!("layer{l}.weight"), synapses)?;
    let norm = if g.batch_norm {
        Some(FoldedNorm {
            scale: floats(file, &format!("layer{l}.scale"), g.out_channels)?,
            shift: floats(file, &format!("layer{l}.shift"), g.out_channels)?,
        })
    } else {
        None
    };
    let synapse = EvalSynapse {
        out_channels: g.out_channels,
        in_channels: g.in_channels,
        taps: g.taps,
        kernel_size: g.kernel_size,
        delays,
        weights,
    };
    Ok(EvalLayer { synapse, norm, charge: charge_of(&g.charge, g.charge_value)?, threshold: g.threshold })
}

pub(super) fn floats(file: &safetensors::SafeTensors, name: &str, count: usize) -> Result<Vec<f32>> {
    let values: Vec<f32> = values::<4>(file, name, count, "F32")?.into_iter().map(f32::from_le_bytes).collect();
    ensure!(values.iter().all(|v| v.is_finite()), "{name} holds a value that is not finite");
    Ok(values)
}

/// The `count` little-endian elements of `name`, whose dtype must be `dtype`.
pub(super) fn values<const N: usize>(
    file: &safetensors::SafeTensors,
    name: &str,
    count: usize,
    dtype: &str,
) -> Result<Vec<[u8; N]>> {
    let view = file.tensor(name).map_err(|_| anyhow::anyhow!("missing tensor `{name}`"))?;
    ensure!(format!("{:?}", view.dtype()) == dtype, "`{name}` is {:?}, expected {dtype}", view.dtype());
    ensure!(view.data().len() == count * N, "`{name}` has shape {:?}, expected {count} values", view.shape());
    Ok(view.data().chunks_exact(N).map(|chunk| chunk.try_into().expect("chunks of N bytes")).collect())
}
