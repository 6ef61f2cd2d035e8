//! The `delays` format of a recurrent-delay network: its eval form ([`RecurrentEvalNetwork`]) as
//! safetensors, the input of the inference engine. Per hidden block `l`:
//! - `block{l}.weight` float32 `(out, in)` and `block{l}.bias` `(out)`: the dense input;
//! - `block{l}.scale`, `block{l}.shift` `(out)`: the folded BatchNorm, when the block has one;
//! - `block{l}.recurrent_weight` float32 `(N, N)` (`[i, j]` from j to i) and
//!   `block{l}.recurrent_delay` int16 `(N)`, each presynaptic neuron's integer delay, for a
//!   recurrent block (a spike of j reaches the block `1 + d_j` steps later);
//!
//! and `readout.weight`, `readout.bias`. The header's `snn_delays.eval_form` holds the geometry
//! as JSON (format `snn-delays recurrent eval form`): the time step, the scoring rule, per block
//! the sizes, whether it has a BatchNorm and recurrence, and its neuron (charge as in
//! [`super::delays`], threshold, `soft` or `hard` reset); the readout's sizes and its neuron, if
//! any. The configuration and a checksum are stored as in the feed-forward format.

use super::delays::{charge_name, charge_of, floats, values, write_with_geometry};
use crate::config::Config;
use crate::model::eval_form::FoldedNorm;
use crate::model::loss::Scoring;
use crate::model::neuron::step::Reset;
use crate::model::recurrent::eval_form::{EvalBlock, EvalDense, EvalNeuron, EvalReadout, EvalRecurrence, RecurrentEvalNetwork};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub const FORMAT: &str = "snn-delays recurrent eval form";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Geometry {
    format: String,
    version: u32,
    time_step_ms: f64,
    scoring: Scoring,
    blocks: Vec<BlockGeometry>,
    readout: ReadoutGeometry,
}

#[derive(Serialize, Deserialize)]
struct NeuronGeometry {
    charge: String,
    charge_value: f32,
    threshold: f32,
    reset: String,
}

#[derive(Serialize, Deserialize)]
struct BlockGeometry {
    in_channels: usize,
    out_channels: usize,
    batch_norm: bool,
    recurrent: bool,
    neuron: NeuronGeometry,
}

#[derive(Serialize, Deserialize)]
struct ReadoutGeometry {
    in_channels: usize,
    out_channels: usize,
    neuron: Option<NeuronGeometry>,
}

impl NeuronGeometry {
    fn of(neuron: &EvalNeuron) -> NeuronGeometry {
        let (charge, charge_value) = charge_name(neuron.charge);
        let reset = match neuron.reset {
            Reset::Soft => "soft",
            Reset::Hard => "hard",
        };
        NeuronGeometry { charge: charge.into(), charge_value, threshold: neuron.threshold, reset: reset.into() }
    }

    fn neuron(&self) -> Result<EvalNeuron> {
        let reset = match self.reset.as_str() {
            "soft" => Reset::Soft,
            "hard" => Reset::Hard,
            other => bail!("unknown reset `{other}`"),
        };
        ensure!(self.threshold.is_finite(), "threshold {} is not finite", self.threshold);
        Ok(EvalNeuron { charge: charge_of(&self.charge, self.charge_value)?, threshold: self.threshold, reset })
    }
}

/// Writes `form` and the configuration it was trained with to `path` (atomically).
pub fn write(form: &RecurrentEvalNetwork, config: &Config, path: &std::path::Path) -> Result<()> {
    let mut named = Vec::new();
    let mut blocks = Vec::new();
    for (l, block) in form.blocks.iter().enumerate() {
        let prefix = format!("block{l}");
        push_dense(&mut named, &prefix, &block.dense);
        if let Some(norm) = &block.norm {
            named.push((format!("{prefix}.scale"), Tensor::from_slice(&norm.scale)));
            named.push((format!("{prefix}.shift"), Tensor::from_slice(&norm.shift)));
        }
        if let Some(recurrence) = &block.recurrence {
            let n = block.dense.out_channels as i64;
            ensure!(
                recurrence.max_delay() <= i16::MAX as usize,
                "block {l}: delay {} does not fit int16",
                recurrence.max_delay()
            );
            let delays: Vec<i16> = recurrence.delays.iter().map(|&d| d as i16).collect();
            named.push((format!("{prefix}.recurrent_weight"), Tensor::from_slice(&recurrence.weights).reshape([n, n])));
            named.push((format!("{prefix}.recurrent_delay"), Tensor::from_slice(&delays)));
        }
        blocks.push(BlockGeometry {
            in_channels: block.dense.in_channels,
            out_channels: block.dense.out_channels,
            batch_norm: block.norm.is_some(),
            recurrent: block.recurrence.is_some(),
            neuron: NeuronGeometry::of(&block.neuron),
        });
    }
    push_dense(&mut named, "readout", &form.readout.dense);
    let readout = ReadoutGeometry {
        in_channels: form.readout.dense.in_channels,
        out_channels: form.readout.dense.out_channels,
        neuron: form.readout.neuron.as_ref().map(NeuronGeometry::of),
    };
    let geometry = Geometry {
        format: FORMAT.into(),
        version: VERSION,
        time_step_ms: form.time_step_ms,
        scoring: form.scoring,
        blocks,
        readout,
    };
    write_with_geometry(&named, &serde_json::to_string(&geometry)?, config, path)
}

fn push_dense(named: &mut Vec<(String, Tensor)>, prefix: &str, dense: &EvalDense) {
    let shape = [dense.out_channels as i64, dense.in_channels as i64];
    named.push((format!("{prefix}.weight"), Tensor::from_slice(&dense.weights).reshape(shape)));
    named.push((format!("{prefix}.bias"), Tensor::from_slice(&dense.bias)));
}

/// Reads the network of a file whose geometry is `text`; every shape and value is checked.
pub fn read(file: &safetensors::SafeTensors, text: &str) -> Result<RecurrentEvalNetwork> {
    let geometry: Geometry = serde_json::from_str(text).context("the geometry")?;
    ensure!(geometry.version == VERSION, "format version {} is not {VERSION}", geometry.version);
    ensure!(!geometry.blocks.is_empty(), "no blocks");
    let blocks = geometry.blocks.iter().enumerate().map(|(l, g)| read_block(file, l, g)).collect::<Result<Vec<_>>>()?;
    let g = &geometry.readout;
    let readout = EvalReadout {
        dense: read_dense(file, "readout", g.in_channels, g.out_channels)?,
        neuron: g.neuron.as_ref().map(NeuronGeometry::neuron).transpose().context("the readout")?,
    };
    let widths: Vec<(usize, usize)> =
        blocks.iter().map(|b| &b.dense).chain([&readout.dense]).map(|d| (d.in_channels, d.out_channels)).collect();
    for (l, pair) in widths.windows(2).enumerate() {
        ensure!(pair[0].1 == pair[1].0, "block {l} has {} outputs but the next layer takes {} inputs", pair[0].1, pair[1].0);
    }
    Ok(RecurrentEvalNetwork { blocks, readout, scoring: geometry.scoring, time_step_ms: geometry.time_step_ms })
}

fn read_block(file: &safetensors::SafeTensors, l: usize, g: &BlockGeometry) -> Result<EvalBlock> {
    let prefix = format!("block{l}");
    let n = g.out_channels;
    let norm = if g.batch_norm {
        Some(FoldedNorm {
            scale: floats(file, &format!("{prefix}.scale"), n)?,
            shift: floats(file, &format!("{prefix}.shift"), n)?,
        })
    } else {
        None
    };
    let recurrence = if g.recurrent {
        let delays = values::<2>(file, &format!("{prefix}.recurrent_delay"), n, "I16")?
            .into_iter()
            .map(|b| u16::try_from(i16::from_le_bytes(b)).ok())
            .collect::<Option<Vec<u16>>>()
            .with_context(|| format!("{prefix}.recurrent_delay holds a negative delay"))?;
        Some(EvalRecurrence { weights: floats(file, &format!("{prefix}.recurrent_weight"), n * n)?, delays })
    } else {
        None
    };
    Ok(EvalBlock {
        dense: read_dense(file, &prefix, g.in_channels, n)?,
        norm,
        neuron: g.neuron.neuron().with_context(|| format!("block {l}"))?,
        recurrence,
    })
}

fn read_dense(file: &safetensors::SafeTensors, prefix: &str, in_channels: usize, out_channels: usize) -> Result<EvalDense> {
    ensure!(in_channels > 0 && out_channels > 0, "{prefix}: empty layer");
    Ok(EvalDense {
        in_channels,
        out_channels,
        weights: floats(file, &format!("{prefix}.weight"), out_channels * in_channels)?,
        bias: floats(file, &format!("{prefix}.bias"), out_channels)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::delays::{read_any, Deployed};
    use crate::model::recurrent::eval_form::example::tiny;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("snn-delays-recurrent-{name}-{}.safetensors", std::process::id()))
    }

    fn read(path: &std::path::Path) -> Result<RecurrentEvalNetwork> {
        match read_any(path)? {
            Deployed::Recurrent(form) => Ok(form),
            Deployed::Feedforward(_) => bail!("read as feed-forward"),
        }
    }

    #[test]
    fn a_network_reads_back_as_written_and_the_feedforward_reader_refuses_it() {
        let path = scratch("round-trip");
        let mut form = tiny(Reset::Hard);
        form.blocks[0].norm = Some(FoldedNorm { scale: vec![0.5, 2.0], shift: vec![0.1, -0.1] });
        write(&form, &Config::preset(crate::config::Dataset::Shd), &path).unwrap();
        assert_eq!(read(&path).unwrap(), form);
        let message = crate::export::delays::read(&path).unwrap_err().to_string();
        assert!(message.contains("recurrent-delay network"), "{message}");
        std::fs::remove_file(path).unwrap();
    }

    /// A negative delay and a readout wider than the last block are refused by name.
    #[test]
    fn bad_delays_and_widths_are_named() {
        let path = scratch("bad");
        let form = tiny(Reset::Soft);
        write(&form, &Config::preset(crate::config::Dataset::Shd), &path).unwrap();
        let mut tensors = crate::checkpoint::read_tensors(&path).unwrap();
        let metadata = crate::checkpoint::read_metadata(&path).unwrap();
        let geometry = metadata[super::super::delays::GEOMETRY_KEY].clone();
        for (name, tensor) in tensors.iter_mut() {
            if name == "block0.recurrent_delay" {
                *tensor = Tensor::from_slice(&[-1i16, 0]);
            }
        }
        crate::checkpoint::write_tensors_with_metadata(&path, &tensors, Some(metadata.clone().into_iter().collect())).unwrap();
        let message = format!("{:#}", read(&path).unwrap_err());
        assert!(message.contains("block0.recurrent_delay holds a negative delay"), "{message}");
        let wider = geometry.replace("\"readout\":{\"in_channels\":2", "\"readout\":{\"in_channels\":3");
        let mut metadata = metadata;
        metadata.insert(super::super::delays::GEOMETRY_KEY.to_string(), wider);
        write(&form, &Config::preset(crate::config::Dataset::Shd), &path).unwrap();
        let tensors = crate::checkpoint::read_tensors(&path).unwrap();
        crate::checkpoint::write_tensors_with_metadata(&path, &tensors, Some(metadata.into_iter().collect())).unwrap();
        let message = format!("{:#}", read(&path).unwrap_err());
        assert!(message.contains("`readout.weight` has shape [2, 2], expected 6 values"), "{message}");
        std::fs::remove_file(path).unwrap();
    }
}
