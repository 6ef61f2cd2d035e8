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
use crate::model::eval_form::{EvalLayer, EvalNetwork, FoldedNorm};
use crate::model::loss::Scoring;
use crate::model::neuron::step::Reset;
use crate::model::recurrent::eval_form::{EvalDense, EvalNeuron, RecurrentEvalNetwork};
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
    let readout = if form.reads_spikes() { "spikes of the output LIF nodes" } else { "membrane of the output LI nodes" };
    let metadata = Metadata {
        dt: form.time_step_ms / 1000.0,
        readout,
        scoring: scoring_rule(form.loss.into(), form.reads_spikes()),
        tail_steps: form.tail_steps(),
    };
    write_graph(&nodes, &edges, &metadata, path)
}

/// How a graph is to be run and read.
struct Metadata {
    /// The time step, in seconds.
    dt: f64,
    readout: &'static str,
    scoring: &'static str,
    /// Zero frames that follow a recording.
    tail_steps: usize,
}

fn write_graph(nodes: &BTreeMap<String, Node>, edges: &[(String, String)], metadata: &Metadata, path: &Path) -> Result<()> {
    crate::atomic::write_with(path, |temporary| {
        let file = h5::create_file(temporary)?;
        h5::string(&file, "version", NIR_VERSION)?;
        let root = h5::group(&file, "node")?;
        h5::string(&root, "type", "NIRGraph")?;
        let group = h5::group(&root, "nodes")?;
        for (name, node) in nodes {
            let entry = h5::group(&group, name)?;
            h5::string(&entry, "type", node.kind)?;
            if let Some(size) = node.shape {
                h5::array(&entry, "shape", &[1], &[size])?;
            }
            for (key, shape, values) in &node.arrays {
                h5::array(&entry, key, shape, values)?;
            }
        }
        h5::string_pairs(&root, "edges", edges)?;
        write_metadata(&h5::group(&root, "metadata")?, metadata)?;
        file.close()?;
        Ok(())
    })
}

/// The time step, the readout, how it becomes class scores, the zero frames that follow a
/// recording, and how a cycle's edge is stepped.
fn write_metadata(group: &hdf5::Group, metadata: &Metadata) -> Result<()> {
    h5::scalar(group, "dt", metadata.dt)?;
    h5::string(group, "readout", metadata.readout)?;
    h5::string(group, "scoring", metadata.scoring)?;
    h5::scalar(group, "tail_steps", metadata.tail_steps as i64)?;
    h5::string(group, "cycles", CYCLES)?;
    h5::string(group, "producer", concat!("snn-delays ", env!("CARGO_PKG_VERSION")))?;
    Ok(())
}

/// How a graph with cycles is stepped.
const CYCLES: &str = "nodes are computed in depth-first order from the input; an edge into a node already computed in this step (one closing a cycle) carries its source's value of the previous step, zero at the first, so every loop takes one step";

/// The scoring rule, in words.
fn scoring_rule(scoring: Scoring, spikes: bool) -> &'static str {
    match scoring {
        Scoring::SoftmaxSum => "class score = sum over steps of the softmax over classes of the readout",
        Scoring::Mean => "class score = mean over steps of the readout",
        Scoring::Max => "class score = max over steps of the readout",
        Scoring::Sum if spikes => "class score = number of output spikes",
        Scoring::Sum => "class score = sum over steps of the readout",
    }
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
    leaky(layer.synapse.out_channels, time_constant_steps(layer) * dt, (!leaky_integrator).then_some(layer.threshold))
}

/// Writes a recurrent-delay network (docs/method.md "Recurrent delays", deployment): per block an
/// `Affine` (the dense input with the folded BatchNorm, times `τ_s`) into its neuron, and for a
/// recurrent block the loop neuron → `Delay` (each presynaptic neuron's `d_j·dt`) → `Affine`
/// (`R·τ_s`) → neuron, which takes one step more as every loop does: `1 + d_j` steps, as the
/// network computes. A hard-reset neuron is a `LIF`; a soft-reset one (`v = h − θ·s`) is an `LI`
/// holding `h`, a `Threshold` giving the spikes, and the loop `Threshold` → `Affine`
/// (`−θ·(1 − 1/τ_s)·τ_s` on the diagonal) → `LI`, which subtracts the threshold from the next
/// step's charge. The readout is an `Affine` (`ssc`), or an `Affine` into an `LI` (`shd`: its
/// LIF never fires, θ = 1e8).
/// NIR's `Threshold` fires where `h > θ`, ours where `h ≥ θ`: they part only at equality.
pub fn write_recurrent(form: &RecurrentEvalNetwork, path: &Path) -> Result<()> {
    let (nodes, edges) = recurrent_graph(form);
    let readout = if form.readout.neuron.is_some() { "membrane of the output LI nodes" } else { "output of the readout Affine" };
    let metadata =
        Metadata { dt: form.time_step_ms / 1000.0, readout, scoring: scoring_rule(form.scoring, false), tail_steps: 0 };
    write_graph(&nodes, &edges, &metadata, path)
}

/// A graph under construction.
#[derive(Default)]
struct Graph {
    nodes: BTreeMap<String, Node>,
    edges: Vec<(String, String)>,
}

impl Graph {
    fn node(&mut self, name: &str, node: Node) -> String {
        self.nodes.insert(name.to_string(), node);
        name.to_string()
    }

    fn edge(&mut self, from: &str, to: &str) {
        self.edges.push((from.to_string(), to.to_string()));
    }
}

fn recurrent_graph(form: &RecurrentEvalNetwork) -> (BTreeMap<String, Node>, Vec<(String, String)>) {
    let dt = form.time_step_ms / 1000.0;
    let mut graph = Graph::default();
    let mut previous = graph.node("input", Node { kind: "Input", arrays: Vec::new(), shape: Some(form.n_inputs() as i64) });
    for (l, block) in form.blocks.iter().enumerate() {
        let tau = 1.0 / block.neuron.charge.leak();
        let dense = graph.node(&format!("block{l}.affine"), affine(&block.dense, block.norm.as_ref(), tau));
        graph.edge(&previous, &dense);
        let (input, spikes) = block_neuron(&mut graph, l, &block.neuron, block.dense.out_channels, dt);
        graph.edge(&dense, &input);
        if let Some(recurrence) = &block.recurrence {
            let delays = recurrence.delays.iter().map(|&d| (f64::from(d) * dt) as f32).collect();
            let n = block.dense.out_channels;
            let delay = graph.node(
                &format!("block{l}.recurrent_delay"),
                Node { kind: "Delay", arrays: vec![("delay", vec![n], delays)], shape: None },
            );
            let weights = EvalDense { in_channels: n, out_channels: n, weights: recurrence.weights.clone(), bias: vec![0.0; n] };
            let recurrent = graph.node(&format!("block{l}.recurrent"), affine(&weights, None, tau));
            graph.edge(&spikes, &delay);
            graph.edge(&delay, &recurrent);
            graph.edge(&recurrent, &input);
        }
        previous = spikes;
    }
    let readout = &form.readout;
    let tau = readout.neuron.map_or(1.0, |neuron| 1.0 / neuron.charge.leak());
    let mut last = graph.node("readout.affine", affine(&readout.dense, None, tau));
    graph.edge(&previous, &last);
    if readout.neuron.is_some() {
        let membrane = graph.node("readout.neuron", leaky(readout.dense.out_channels, tau * dt, None));
        graph.edge(&last, &membrane);
        last = membrane;
    }
    let output = graph.node("output", Node { kind: "Output", arrays: Vec::new(), shape: Some(form.n_outputs() as i64) });
    graph.edge(&last, &output);
    (graph.nodes, graph.edges)
}

/// A block's neuron nodes: the node its input goes to and the node giving its spikes.
fn block_neuron(graph: &mut Graph, l: usize, neuron: &EvalNeuron, n: usize, dt: f64) -> (String, String) {
    let tau = 1.0 / neuron.charge.leak();
    match neuron.reset {
        Reset::Hard => {
            let lif = graph.node(&format!("block{l}.neuron"), leaky(n, tau * dt, Some(neuron.threshold)));
            (lif.clone(), lif)
        }
        Reset::Soft => {
            let membrane = graph.node(&format!("block{l}.membrane"), leaky(n, tau * dt, None));
            let threshold =
                Node { kind: "Threshold", arrays: vec![("threshold", vec![n], vec![neuron.threshold; n])], shape: None };
            let spikes = graph.node(&format!("block{l}.neuron"), threshold);
            let keep = 1.0 - neuron.charge.leak();
            let mut diagonal = vec![0f32; n * n];
            (0..n).for_each(|i| diagonal[i * n + i] = (-f64::from(neuron.threshold) * keep * tau) as f32);
            let reset = graph.node(
                &format!("block{l}.reset"),
                Node {
                    kind: "Affine",
                    arrays: vec![("weight", vec![n, n], diagonal), ("bias", vec![n], vec![0.0; n])],
                    shape: None,
                },
            );
            graph.edge(&membrane, &spikes);
            graph.edge(&spikes, &reset);
            graph.edge(&reset, &membrane);
            (membrane, spikes)
        }
    }
}

/// An `Affine` of `τ_s·fma(W·x + b, scale, shift)`: weights `τ_s·scale_o·W[o, :]`, bias
/// `τ_s·(scale_o·b_o + shift_o)`.
fn affine(dense: &EvalDense, norm: Option<&FoldedNorm>, tau: f64) -> Node {
    let (out, inputs) = (dense.out_channels, dense.in_channels);
    let scale = |o: usize| norm.map_or(1.0, |n| f64::from(n.scale[o]));
    let shift = |o: usize| norm.map_or(0.0, |n| f64::from(n.shift[o]));
    let weights = dense.weights.iter().enumerate().map(|(k, &w)| (f64::from(w) * scale(k / inputs) * tau) as f32).collect();
    let bias = (0..out).map(|o| ((f64::from(dense.bias[o]) * scale(o) + shift(o)) * tau) as f32).collect();
    Node { kind: "Affine", arrays: vec![("weight", vec![out, inputs], weights), ("bias", vec![out], bias)], shape: None }
}

/// A `LIF` with `threshold` (reset to 0), or an `LI` without: `τ` in seconds, `R = 1`, zero leak.
fn leaky(n: usize, tau: f64, threshold: Option<f32>) -> Node {
    let mut arrays = vec![("tau", vec![n], vec![tau as f32; n]), ("r", vec![n], vec![1.0; n]), ("v_leak", vec![n], vec![0.0; n])];
    match threshold {
        Some(threshold) => {
            arrays.push(("v_reset", vec![n], vec![0.0; n]));
            arrays.push(("v_threshold", vec![n], vec![threshold; n]));
            Node { kind: "LIF", arrays, shape: None }
        }
        None => Node { kind: "LI", arrays, shape: None },
    }
}
