//! NIR (HDF5, as `nir.write` lays it out: `version`, and `node` holding `type = NIRGraph`,
//! `nodes/<name>/…`, `edges` and `metadata`). NIR's `Delay` holds one delay per channel, not per
//! synapse, so each layer becomes an exact equivalent graph: for every distinct delay `d` of the
//! layer, a `Delay(d)` on the layer's input (left out for `d = 0`) followed by an `Affine`
//! holding only the synapses with delay `d`, all summed into the layer's neuron. The folded
//! BatchNorm's scale multiplies the weights and its shift is the bias of the first branch.
//!
//! Neurons: NIR's `LIF` is `τ·dv/dt = (v_leak − v) + R·I` with a reset to `v_reset` at
//! `v_threshold`. Stepped by Euler with `dt` = the time step, `v ← v + (dt/τ)(R·I − v)`, it is
//! our charge `v − v/τ_s + x` when `τ = τ_s·dt` (`τ_s = 1/leak` steps, leak `1/τ` or
//! `sigmoid(w)`) and `R·I = τ_s·x`. `R` is written as 1 and `τ_s` is folded into the affine
//! weights and biases, since some runtimes ignore or rescale `R`. The output layer, whose
//! readout is its membrane (it never spikes), is an `LI` node with the same `τ`, `R` and
//! `v_leak`; for `spike_count` it is a `LIF` with θ = 2. Time constants are in seconds. The
//! paper-era float32 forms of the charge (`v·(1 − 1/τ)`) are the same equation.
//!
//! Every tensor is float32; large ones are stored shuffled and deflate-compressed (h5py reads
//! them as they are). The graph's `metadata` records `dt` (seconds), the `readout`, the
//! `scoring` rule that turns the readout into class scores, and `tail_steps`: a NIR graph has no
//! end, so a recording is followed by that many zero frames to produce the readout our engine
//! computes under its `nir` semantics (`snn-delays infer --semantics nir`).

use super::h5;
use crate::config::Loss;
use crate::model::eval_form::{EvalLayer, EvalNetwork};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// The `nir` package version whose layout this writes.
pub const NIR_VERSION: &str = "1.0.8";

/// One node: its type and float32 parameters.
struct Node {
    kind: &'static str,
    arrays: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
    shape: Option<i64>,
}

pub fn write(form: &EvalNetwork, path: &Path) -> Result<()> {
    let (nodes, edges) = graph(form);
    crate::atomic::write_with(path, |temporary| {
        let file = h5::create_file(temporary)?;
        h5::string(&file, "version", NIR_VERSION)?;
        let root = h5::group(&file, "node")?;
        h5::string(&root, "type", "NIRGraph")?;
        let group = h5::group(&root, "nodes")?;
        for (name, node) in &nodes {
            let entry = h5::group(&group, name)?;
            h5::string(&entry, "type", node.kind)?;
            if let Some(size) = node.shape {
                h5::array(&entry, "shape", &[1], &[size])?;
            }
            for (key, shape, values) in &node.arrays {
                h5::array(&entry, key, shape, values)?;
            }
        }
        h5::string_pairs(&root, "edges", &edges)?;
        write_metadata(&h5::group(&root, "metadata")?, form)?;
        file.close()?;
        Ok(())
    })
}

/// How the graph is to be run and read: the time step, the readout, how it becomes class
/// scores, and the zero frames that follow a recording.
fn write_metadata(group: &hdf5::Group, form: &EvalNetwork) -> Result<()> {
    let readout = if form.reads_spikes() { "spikes of the output LIF nodes" } else { "membrane of the output LI nodes" };
    let scoring = match form.loss {
        Loss::Sum => "class score = sum over steps of the softmax over classes of the readout",
        Loss::Mean => "class score = mean over steps of the readout",
        Loss::Max => "class score = max over steps of the readout",
        Loss::SpikeCount => "class score = number of output spikes",
    };
    h5::scalar(group, "dt", form.time_step_ms / 1000.0)?;
    h5::string(group, "readout", readout)?;
    h5::string(group, "scoring", scoring)?;
    h5::scalar(group, "tail_steps", form.tail_steps() as i64)?;
    h5::string(group, "producer", concat!("snn-delays ", env!("CARGO_PKG_VERSION")))?;
    Ok(())
}

/// The nodes by name and the edges of the expanded graph.
fn graph(form: &EvalNetwork) -> (BTreeMap<String, Node>, Vec<(String, String)>) {
    let mut nodes = BTreeMap::new();
    let mut edges = Vec::new();
    nodes.insert("input".to_string(), Node { kind: "Input", arrays: Vec::new(), shape: Some(form.n_inputs() as i64) });
    let mut previous = "input".to_string();
    let dt = form.time_step_ms / 1000.0;
    for (l, layer) in form.layers.iter().enumerate() {
        let neuron = format!("layer{l}.neuron");
        for (d, (weights, bias)) in branches(layer) {
            let affine = format!("layer{l}.affine{d}");
            let (c_out, c_in) = (layer.synapse.out_channels, layer.synapse.in_channels);
            let arrays = vec![("weight", vec![c_out, c_in], weights), ("bias", vec![c_out], bias)];
            nodes.insert(affine.clone(), Node { kind: "Affine", arrays, shape: None });
            if d == 0 {
                edges.push((previous.clone(), affine.clone()));
            } else {
                let delay = format!("layer{l}.delay{d}");
                let values = vec![(f64::from(d) * dt) as f32; c_in];
                nodes.insert(delay.clone(), Node { kind: "Delay", arrays: vec![("delay", vec![c_in], values)], shape: None });
                edges.push((previous.clone(), delay.clone()));
                edges.push((delay, affine.clone()));
            }
            edges.push((affine, neuron.clone()));
        }
        let last = l + 1 == form.layers.len();
        nodes.insert(neuron.clone(), neuron_node(layer, dt, last && !form.reads_spikes()));
        previous = neuron;
    }
    nodes.insert("output".to_string(), Node { kind: "Output", arrays: Vec::new(), shape: Some(form.n_outputs() as i64) });
    edges.push((previous, "output".to_string()));
    (nodes, edges)
}

/// One delay's branch: its `(C_out, C_in)` weights and `(C_out)` bias.
type Branch = (Vec<f32>, Vec<f32>);

/// Per distinct delay (ascending), the `(C_out, C_in)` weights of that delay's synapses (folded
/// BatchNorm scale applied) and the bias (the folded shift on the first branch, else zeros), all
/// times `τ_s` (see the module's documentation).
fn branches(layer: &EvalLayer) -> Vec<(u16, Branch)> {
    let s = &layer.synapse;
    let tau = time_constant_steps(layer);
    let mut by_delay: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
    for (k, (&delay, &weight)) in s.delays.iter().zip(&s.weights).enumerate() {
        if weight != 0.0 {
            let synapse = k / s.taps;
            let scale = layer.norm.as_ref().map_or(1.0, |norm| f64::from(norm.scale[synapse / s.in_channels]));
            by_delay.entry(delay).or_insert_with(|| vec![0.0; s.out_channels * s.in_channels])[synapse] +=
                f64::from(weight) * scale;
        }
    }
    if by_delay.is_empty() {
        by_delay.insert(0, vec![0.0; s.out_channels * s.in_channels]);
    }
    let times_tau = |values: &[f64]| values.iter().map(|v| (v * tau) as f32).collect::<Vec<f32>>();
    let shift: Vec<f64> =
        layer.norm.as_ref().map_or(vec![0.0; s.out_channels], |norm| norm.shift.iter().map(|&v| f64::from(v)).collect());
    by_delay
        .into_iter()
        .enumerate()
        .map(|(index, (delay, weights))| {
            (delay, (times_tau(&weights), if index == 0 { times_tau(&shift) } else { vec![0.0; s.out_channels] }))
        })
        .collect()
}

/// `τ_s = 1/leak`, the membrane time constant in steps.
fn time_constant_steps(layer: &EvalLayer) -> f64 {
    1.0 / layer.charge.leak()
}

/// `LIF` (or `LI` for a membrane readout) with `τ = τ_s·dt`, `R = 1`, zero leak and reset.
fn neuron_node(layer: &EvalLayer, dt: f64, leaky_integrator: bool) -> Node {
    let c = layer.synapse.out_channels;
    let tau = (time_constant_steps(layer) * dt) as f32;
    let mut arrays = vec![("tau", vec![c], vec![tau; c]), ("r", vec![c], vec![1.0; c]), ("v_leak", vec![c], vec![0.0; c])];
    if leaky_integrator {
        return Node { kind: "LI", arrays, shape: None };
    }
    arrays.push(("v_reset", vec![c], vec![0.0; c]));
    arrays.push(("v_threshold", vec![c], vec![layer.threshold; c]));
    Node { kind: "LIF", arrays, shape: None }
}
