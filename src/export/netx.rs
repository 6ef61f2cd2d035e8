//! lava-dl netx HDF5: one `dense` layer per block under `layer/<i>`, each with `shape`,
//! `inFeatures`, `outFeatures`, `weight` and `delay` (both `(C_out, C_in)`, integers), `bias`,
//! and a `neuron` group of Loihi CUBA parameters. The mapping and its approximations:
//!
//! - **Weights and bias** are fixed-point integers: the folded BatchNorm's scale multiplies the
//!   weights and its shift is the bias, then both are multiplied by `2^e` and rounded. `e` is the
//!   largest exponent up to 10 whose weights fit the 8-bit range `[−256, 254]`, so the largest
//!   weight uses all of it; it is stored as `weightExponent` so that a reader can divide it
//!   back. Rounding moves each weight by at most `2^−(e+1)`. (netx re-derives its own exponent
//!   from these integers; Loihi's voltage is then `2^(6+e)` times ours, within its 24 bits for
//!   membranes up to `2^(17−e)`.)
//! - **Delays**: one integer per synapse, which netx reads as long as it is below 63. A synapse
//!   with two taps at different delays, or a delay of 63 or more, is refused.
//! - **Neuron** (`type = CUBA`): `iDecay = 4096`, so the current is the input of the step (Lava
//!   adds 1 to the stored decay: its current keeps nothing); `vDecay = round(4096 · leak)` with
//!   `leak = 1/τ` (LIF) or `sigmoid(w)` (PLIF), quantised to 1/4096; `vThMant = round(θ · 2^e)`,
//!   at most `2^17 − 1`; `refDelay = 1`; hard reset to 0, as Loihi's. The output layer's
//!   threshold (1e9: it never spikes, the readout is its membrane) is clipped to `2^17 − 1`:
//!   read its voltage.
//! - The first layer takes the binned spike counts, so load it with graded input spikes
//!   (`input_message_bits > 0`). Lava delivers a synapse's input on the next step, so each
//!   layer adds one step: run a recording with `tail + L` steps and read the output from step L
//!   (scripts/lava_netx_run.py).

use super::h5;
use crate::model::eval_form::{EvalLayer, EvalNetwork};
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// Delays netx reads (`num_delay_bits` refuses 63 and more).
const MAX_DELAY: u16 = 62;
/// The largest threshold mantissa (17 bits).
const MAX_THRESHOLD: i64 = (1 << 17) - 1;
/// The largest weight exponent: Loihi's 24-bit voltage then still holds membranes up to ±128.
const MAX_EXPONENT: i32 = 10;

pub fn write(form: &EvalNetwork, path: &Path) -> Result<()> {
    let layers = form.layers.iter().enumerate().map(|(l, layer)| dense(l, layer)).collect::<Result<Vec<_>>>()?;
    crate::atomic::write_with(path, |temporary| {
        let file = h5::create_file(temporary)?;
        let root = h5::group(&file, "layer")?;
        for (l, layer) in layers.iter().enumerate() {
            layer.write(&h5::group(&root, &l.to_string())?)?;
        }
        let simulation = h5::group(&file, "simulation")?;
        h5::scalar(&simulation, "Ts", 1i64)?;
        file.close()?;
        Ok(())
    })
}

/// One layer in netx's integer form.
struct Dense {
    in_features: usize,
    out_features: usize,
    weight: Vec<i64>,
    delay: Vec<i64>,
    bias: Vec<i64>,
    exponent: i32,
    v_decay: i64,
    threshold: i64,
}

impl Dense {
    fn write(&self, group: &hdf5::Group) -> Result<()> {
        h5::string(group, "type", "dense")?;
        h5::array(group, "shape", &[1], &[self.out_features as i64])?;
        h5::scalar(group, "inFeatures", self.in_features as i64)?;
        h5::scalar(group, "outFeatures", self.out_features as i64)?;
        let matrix = [self.out_features, self.in_features];
        h5::array(group, "weight", &matrix, &self.weight)?;
        h5::array(group, "delay", &matrix, &self.delay)?;
        h5::array(group, "bias", &[self.out_features], &self.bias)?;
        h5::scalar(group, "weightExponent", self.exponent as i64)?;
        let neuron = h5::group(group, "neuron")?;
        h5::string(&neuron, "type", "CUBA")?;
        h5::scalar(&neuron, "iDecay", 4096i64)?;
        h5::scalar(&neuron, "vDecay", self.v_decay)?;
        h5::scalar(&neuron, "vThMant", self.threshold)?;
        h5::scalar(&neuron, "refDelay", 1i64)?;
        h5::scalar(&neuron, "gradedSpike", 0i64)?;
        Ok(())
    }
}

fn dense(l: usize, layer: &EvalLayer) -> Result<Dense> {
    let s = &layer.synapse;
    let (weights, delays) = single_delay(l, layer)?;
    let (scale, shift): (Vec<f32>, Vec<f32>) = match &layer.norm {
        Some(norm) => (norm.scale.clone(), norm.shift.clone()),
        None => (vec![1.0; s.out_channels], vec![0.0; s.out_channels]),
    };
    let folded: Vec<f64> = weights.iter().enumerate().map(|(k, w)| f64::from(*w) * f64::from(scale[k / s.in_channels])).collect();
    let largest = folded.iter().fold(0f64, |m, w| m.max(w.abs()));
    let exponent = (0..=MAX_EXPONENT)
        .rev()
        .find(|e| largest * 2f64.powi(*e) <= 254.0)
        .with_context(|| format!("layer {l}: weights up to {largest:.3} do not fit netx's 8-bit range even without scaling"))?;
    let quantise = |v: f64| (v * 2f64.powi(exponent)).round() as i64;
    Ok(Dense {
        in_features: s.in_channels,
        out_features: s.out_channels,
        weight: folded.iter().map(|&w| quantise(w)).collect(),
        delay: delays,
        bias: shift.iter().map(|&b| quantise(f64::from(b))).collect(),
        exponent,
        v_decay: (4096.0 * layer.charge.leak()).round() as i64,
        threshold: quantise(f64::from(layer.threshold)).min(MAX_THRESHOLD),
    })
}

/// Each synapse's one weight and delay; refuses taps at different delays and delays past 62.
fn single_delay(l: usize, layer: &EvalLayer) -> Result<(Vec<f32>, Vec<i64>)> {
    let s = &layer.synapse;
    let (mut weights, mut delays) = (Vec::new(), Vec::new());
    for synapse in 0..s.out_channels * s.in_channels {
        let taps = (0..s.taps).map(|j| synapse * s.taps + j).filter(|&k| s.weights[k] != 0.0).collect::<Vec<_>>();
        let delay = taps.first().map_or(0, |&k| s.delays[k]);
        if taps.iter().any(|&k| s.delays[k] != delay) {
            bail!(
                "layer {l}, synapse ({}, {}): taps at different delays, but netx holds one delay per synapse",
                synapse / s.in_channels,
                synapse % s.in_channels
            );
        }
        ensure!(delay <= MAX_DELAY, "layer {l}: delay {delay} steps exceeds netx's limit of {MAX_DELAY}");
        weights.push(taps.iter().map(|&k| s.weights[k]).sum());
        delays.push(i64::from(delay));
    }
    Ok((weights, delays))
}
