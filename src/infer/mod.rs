//! The integer-delay inference engine: the eval form ([`EvalNetwork`], a `delays` file) run in
//! pure Rust, with no libtorch call (docs/method.md, "Deployment").
//!
//! Each layer computes `y[o, t] = Σ_i Σ_j w[o,i,j] · x[i, t − d[o,i,j]]` for
//! `t < T_in + (K−1)//2`, then the folded BatchNorm `c = fma(y, scale, shift)` (hidden layers),
//! then the neuron: `h = charge(v, c)`, spike `s = [h ≥ θ]`, `v = h·(1 − s)`, in float32 and in
//! the order the fused kernel rounds. A synapse has one tap (or `kc`), so a layer costs
//! `C_out·C_in·kc` multiply-adds per input step instead of the dense convolution's
//! `C_out·C_in·K`, and inputs that are zero (most spikes) are skipped: each nonzero input
//! `x[i, t]` is scattered to its fan-out `(o, t + d, w)`.
//!
//! - **Batch mode** ([`Model::run`]): whole sequences, parallel over samples.
//! - **Streaming** ([`Stream`]): one frame at a time. Each layer keeps a ring of `K` future
//!   steps of its synaptic input, into which every arriving frame scatters, so the output of
//!   step t is known at step t (delays only look back). After the last frame, [`Stream::finish`]
//!   runs the steps that the layers' right padding adds, each layer stopping where its batch
//!   output ends. Contributions are added in the same order in both modes, so streaming equals
//!   batch mode bit for bit.

use crate::config::Loss;
use crate::model::eval_form::{EvalLayer, EvalNetwork};
use anyhow::{ensure, Result};
use rayon::prelude::*;
use std::path::Path;

/// One synapse seen from its input: output neuron, delay and weight.
#[derive(Clone, Copy, Debug)]
struct Target {
    output: u32,
    delay: u16,
    weight: f32,
}

/// A loaded network, ready to run.
pub struct Model {
    form: EvalNetwork,
    /// Per layer, per input channel, the synapses it feeds (zero weights left out).
    fan_out: Vec<Vec<Vec<Target>>>,
}

impl Model {
    /// Loads a `delays` file (`snn-delays export --format delays`).
    pub fn load(path: &Path) -> Result<Model> {
        Ok(Model::new(crate::export::delays::read(path)?))
    }

    pub fn new(form: EvalNetwork) -> Model {
        let fan_out = form.layers.iter().map(fan_out).collect();
        Model { form, fan_out }
    }

    pub fn form(&self) -> &EvalNetwork {
        &self.form
    }

    pub fn n_inputs(&self) -> usize {
        self.form.n_inputs()
    }

    pub fn n_outputs(&self) -> usize {
        self.form.n_outputs()
    }

    /// Runs one sample of `steps` frames (`steps × n_inputs`, time-major) and returns the
    /// readout, `output_steps(steps) × n_outputs`: the output layer's membrane, or its spikes
    /// for `spike_count`.
    pub fn run(&self, frames: &[f32], steps: usize) -> Result<Vec<f32>> {
        ensure!(
            frames.len() == steps * self.n_inputs(),
            "{} values are not {steps} frames of {} inputs",
            frames.len(),
            self.n_inputs()
        );
        let mut x = frames.to_vec();
        let mut length = steps;
        for (layer, fan_out) in self.form.layers.iter().zip(&self.fan_out) {
            let current = synaptic_input(layer, fan_out, &x, length);
            length += layer.synapse.extra_steps();
            let membrane = self.is_output(layer) && !self.form.reads_spikes();
            x = neurons(layer, &current, layer.synapse.out_channels, membrane);
        }
        Ok(x)
    }

    /// [`Model::run`] over many samples in parallel.
    pub fn run_all(&self, samples: &[(Vec<f32>, usize)]) -> Result<Vec<Vec<f32>>> {
        samples.par_iter().map(|(frames, steps)| self.run(frames, *steps)).collect()
    }

    /// A stream for one recording.
    pub fn stream(&self) -> Stream<'_> {
        Stream::new(self)
    }

    fn is_output(&self, layer: &EvalLayer) -> bool {
        std::ptr::eq(layer, self.form.layers.last().expect("an output layer"))
    }

    /// The class scores of a readout (`steps × n_outputs`), as the loss defines them (§3).
    pub fn scores(&self, readout: &[f32]) -> Vec<f32> {
        class_scores(self.form.loss, readout, self.n_outputs())
    }
}

fn fan_out(layer: &EvalLayer) -> Vec<Vec<Target>> {
    let s = &layer.synapse;
    let mut lists = vec![Vec::new(); s.in_channels];
    for o in 0..s.out_channels {
        for i in 0..s.in_channels {
            for j in 0..s.taps {
                let index = (o * s.in_channels + i) * s.taps + j;
                if s.weights[index] != 0.0 {
                    lists[i].push(Target { output: o as u32, delay: s.delays[index], weight: s.weights[index] });
                }
            }
        }
    }
    lists
}

/// `y`, `(length + extra) × C_out`, from `x`, `length × C_in`.
fn synaptic_input(layer: &EvalLayer, fan_out: &[Vec<Target>], x: &[f32], length: usize) -> Vec<f32> {
    let (c_in, c_out) = (layer.synapse.in_channels, layer.synapse.out_channels);
    let steps = length + layer.synapse.extra_steps();
    let mut y = vec![0f32; steps * c_out];
    for t in 0..length {
        for (i, targets) in fan_out.iter().enumerate() {
            let value = x[t * c_in + i];
            if value != 0.0 {
                for target in targets {
                    let step = t + target.delay as usize;
                    if step < steps {
                        y[step * c_out + target.output as usize] += target.weight * value;
                    }
                }
            }
        }
    }
    y
}

/// The neurons over a whole `steps × C_out` synaptic input: spikes, or the membrane.
fn neurons(layer: &EvalLayer, current: &[f32], channels: usize, membrane: bool) -> Vec<f32> {
    let mut v = vec![0f32; channels];
    let mut out = vec![0f32; current.len()];
    for (input, output) in current.chunks_exact(channels).zip(out.chunks_exact_mut(channels)) {
        step_neurons(layer, input, &mut v, output, membrane);
    }
    out
}

/// One step of a layer's neurons: BatchNorm, charge, fire, reset. Writes the spikes, or the
/// post-reset membrane when `membrane`.
#[inline]
fn step_neurons(layer: &EvalLayer, input: &[f32], v: &mut [f32], output: &mut [f32], membrane: bool) {
    for (o, ((&y, v), out)) in input.iter().zip(v.iter_mut()).zip(output.iter_mut()).enumerate() {
        let c = layer.norm.as_ref().map_or(y, |norm| norm.apply(y, o));
        let h = layer.charge.apply(*v, c);
        let fired = if h >= layer.threshold { 1.0 } else { 0.0 };
        *v = h * (1.0 - fired);
        *out = if membrane { *v } else { fired };
    }
}

/// Class scores from a readout: `sum` Σ_t softmax, `mean`, `max`, `spike_count` Σ_t.
pub fn class_scores(loss: Loss, readout: &[f32], classes: usize) -> Vec<f32> {
    let mut scores = vec![if loss == Loss::Max { f32::NEG_INFINITY } else { 0.0 }; classes];
    let steps = readout.len() / classes.max(1);
    for row in readout.chunks_exact(classes) {
        match loss {
            Loss::Sum => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                scores.iter_mut().zip(&exps).for_each(|(s, e)| *s += e / total);
            }
            Loss::Mean | Loss::SpikeCount => scores.iter_mut().zip(row).for_each(|(s, v)| *s += v),
            Loss::Max => scores.iter_mut().zip(row).for_each(|(s, v)| *s = s.max(*v)),
        }
    }
    if loss == Loss::Mean {
        scores.iter_mut().for_each(|s| *s /= steps as f32);
    }
    scores
}

/// The first index of the largest score, as argmax breaks ties.
pub fn prediction(scores: &[f32]) -> usize {
    scores.iter().enumerate().fold(0, |best, (i, &s)| if s > scores[best] { i } else { best })
}

/// One recording fed a frame at a time.
pub struct Stream<'m> {
    model: &'m Model,
    /// Per layer, `K × C_out` future synaptic input, indexed by step modulo K.
    rings: Vec<Vec<f32>>,
    membranes: Vec<Vec<f32>>,
    /// Per layer, this step's output (spikes, or the readout for the output layer).
    outputs: Vec<Vec<f32>>,
    steps: usize,
    ended_at: Option<usize>,
}

impl<'m> Stream<'m> {
    fn new(model: &'m Model) -> Stream<'m> {
        let layers = &model.form.layers;
        Stream {
            model,
            rings: layers.iter().map(|l| vec![0.0; l.synapse.kernel_size * l.synapse.out_channels]).collect(),
            membranes: layers.iter().map(|l| vec![0.0; l.synapse.out_channels]).collect(),
            outputs: layers.iter().map(|l| vec![0.0; l.synapse.out_channels]).collect(),
            steps: 0,
            ended_at: None,
        }
    }

    /// Steps fed so far (frames and, after [`Stream::finish`], padding).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Feeds one frame (`n_inputs` values) and returns the readout of this step.
    pub fn step(&mut self, frame: &[f32]) -> Result<&[f32]> {
        ensure!(self.ended_at.is_none(), "the recording has ended; reset the stream to start another");
        ensure!(frame.len() == self.model.n_inputs(), "a frame has {} values, expected {}", frame.len(), self.model.n_inputs());
        self.advance(Some(frame));
        Ok(self.outputs.last().expect("an output layer"))
    }

    /// Ends the recording: runs the steps the layers' right padding adds (as batch mode does)
    /// and returns their readouts.
    pub fn finish(&mut self) -> Vec<Vec<f32>> {
        self.ended_at.get_or_insert(self.steps);
        let total: usize = self.model.form.layers.iter().map(|l| l.synapse.extra_steps()).sum();
        (0..total)
            .map(|_| {
                self.advance(None);
                self.outputs.last().expect("an output layer").clone()
            })
            .collect()
    }

    /// Forgets the recording: membranes and rings back to zero.
    pub fn reset(&mut self) {
        *self = Stream::new(self.model);
    }

    /// One step of every layer. A hidden layer's output past the end of its batch-mode output
    /// (`frames + Σ its and earlier layers' padding`) is not passed on.
    fn advance(&mut self, frame: Option<&[f32]>) {
        let t = self.steps;
        let layers = &self.model.form.layers;
        let mut valid_until = self.ended_at.unwrap_or(usize::MAX);
        for (l, layer) in layers.iter().enumerate() {
            let (k, c_out) = (layer.synapse.kernel_size, layer.synapse.out_channels);
            let (earlier, later) = self.outputs.split_at_mut(l);
            let input = if l == 0 { frame } else { Some(earlier[l - 1].as_slice()) };
            let ring = &mut self.rings[l];
            if let Some(x) = input {
                for (i, targets) in self.model.fan_out[l].iter().enumerate() {
                    if x[i] != 0.0 {
                        for target in targets {
                            ring[((t + target.delay as usize) % k) * c_out + target.output as usize] += target.weight * x[i];
                        }
                    }
                }
            }
            valid_until = valid_until.saturating_add(layer.synapse.extra_steps());
            let current = &mut ring[(t % k) * c_out..(t % k + 1) * c_out];
            let membrane = l + 1 == layers.len() && !self.model.form.reads_spikes();
            let output = &mut later[0];
            step_neurons(layer, current, &mut self.membranes[l], output, membrane);
            current.iter_mut().for_each(|v| *v = 0.0);
            if t >= valid_until {
                output.iter_mut().for_each(|v| *v = 0.0);
            }
        }
        self.steps += 1;
    }
}
