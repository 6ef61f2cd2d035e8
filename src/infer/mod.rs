//! The integer-delay inference engine: the eval form ([`EvalNetwork`], a `delays` file) run in
//! pure Rust, with no libtorch call (docs/method.md, "Deployment").
//!
//! Each layer computes `y[o, t] = Σ_i Σ_j w[o,i,j] · x[i, t − d[o,i,j]]` for
//! `t < T_in + (K−1)//2`, then the folded BatchNorm `c = fma(y, scale, shift)` (hidden layers),
//! then the neuron: `h = charge(v, c)`, spike `s = [h ≥ θ]`, `v = h·(1 − s)`, in float32 and in
//! the order the fused kernel rounds. A synapse has one tap (or `kc`), so a layer costs
//! `C_out·C_in·kc` multiply-adds per step instead of the dense convolution's `C_out·C_in·K`.
//!
//! - **Batch mode** ([`Model::run`], [`Model::run_all`]): sequences are stored channel by
//!   channel, so a synapse adds a shifted slice of its input row to its output row,
//!   `y[o, t..t+32] += w · x[i, t−d..t−d+32]`; each block of 32 output steps stays in vector
//!   registers while all of the neuron's synapses are added. An input channel that never fires
//!   is skipped. Samples run in parallel.
//! - **Streaming** ([`Stream`]): one frame at a time. Each layer keeps the last `K` steps of each
//!   input channel in a ring, so the output of step t is known at step t (delays only look back).
//!   After the last frame, [`Stream::finish`] runs the steps that the layers' right padding adds,
//!   each layer stopping where its batch output ends.
//!
//! Both modes add each output's terms in the same order (input channel, then tap), so streaming
//! equals batch mode bit for bit. Each sample runs on its own steps, never another's padding.
//! Under [`Semantics::Nir`] no layer's sequence ends: the recording is followed by the tail of
//! zero frames and every layer runs every step, as a NIR graph is stepped.
//!
//! Recurrent-delay networks run in [`RecurrentModel`]; [`load`] reads a `delays` file of either
//! kind as an [`Engine`].
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! # let (frames, steps) = (vec![0f32; 140 * 100], 100);
//! let model = snn_delays::infer::Model::load("model.safetensors".as_ref())?;
//! let mut stream = model.stream();
//! for frame in frames.chunks_exact(model.n_inputs()) {
//!     let _readout = stream.step(frame)?; // this step's output
//! }
//! let _tail = stream.finish(); // the steps the layers' padding adds
//! stream.reset();
//! let whole = model.run(&frames, steps)?; // batch mode, equal to the streamed readouts
//! let _class = snn_delays::infer::prediction(&model.scores(&whole));
//! # Ok(())
//! # }
//! ```

use crate::export::delays::Deployed;
use crate::model::eval_form::{EvalLayer, EvalNetwork};
use crate::model::loss::Scoring;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use std::path::Path;

mod recurrent;

pub use recurrent::{RecurrentModel, RecurrentStream};

/// A deployed network as `infer` runs it: feed-forward delays ([`Model`]) or recurrent delays
/// ([`RecurrentModel`]).
pub trait Engine: Sync {
    fn n_inputs(&self) -> usize;
    fn n_outputs(&self) -> usize;
    fn time_step_ms(&self) -> f64;
    /// How a readout becomes class scores.
    fn scoring(&self) -> Scoring;
    /// Each sample's readout, `output steps × n_outputs`, samples in parallel.
    fn run_all_as(&self, samples: &[(Vec<f32>, usize)], semantics: Semantics) -> Result<Vec<Vec<f32>>>;
    /// A stream for one recording.
    fn stream_as(&self, semantics: Semantics) -> Box<dyn Streaming + '_>;
    /// The class scores of a readout.
    fn scores(&self, readout: &[f32]) -> Vec<f32> {
        class_scores(self.scoring(), readout, self.n_outputs())
    }
}

/// One recording fed a frame at a time.
pub trait Streaming {
    /// Feeds one frame (`n_inputs` values) and returns the readout of this step.
    fn step(&mut self, frame: &[f32]) -> Result<&[f32]>;
    /// Ends the recording; the readouts of the steps that follow it (the network's tail).
    fn finish(&mut self) -> Vec<Vec<f32>>;
    /// Forgets the recording.
    fn reset(&mut self);
    /// Steps run so far.
    fn steps(&self) -> usize;
}

/// Loads a `delays` file of either kind (`snn-delays export --format delays`).
pub fn load(path: &Path) -> Result<Box<dyn Engine>> {
    Ok(match crate::export::delays::read_any(path)? {
        Deployed::Feedforward(form) => Box::new(Model::new(form)),
        Deployed::Recurrent(form) => Box::new(RecurrentModel::new(form)),
    })
}

impl Engine for Model {
    fn n_inputs(&self) -> usize {
        self.form.n_inputs()
    }

    fn n_outputs(&self) -> usize {
        self.form.n_outputs()
    }

    fn time_step_ms(&self) -> f64 {
        self.form.time_step_ms
    }

    fn scoring(&self) -> Scoring {
        self.form.loss.into()
    }

    fn run_all_as(&self, samples: &[(Vec<f32>, usize)], semantics: Semantics) -> Result<Vec<Vec<f32>>> {
        Model::run_all_as(self, samples, semantics)
    }

    fn stream_as(&self, semantics: Semantics) -> Box<dyn Streaming + '_> {
        Box::new(Model::stream_as(self, semantics))
    }
}

impl Streaming for Stream<'_> {
    fn step(&mut self, frame: &[f32]) -> Result<&[f32]> {
        Stream::step(self, frame)
    }

    fn finish(&mut self) -> Vec<Vec<f32>> {
        Stream::finish(self)
    }

    fn reset(&mut self) {
        Stream::reset(self)
    }

    fn steps(&self) -> usize {
        Stream::steps(self)
    }
}

/// One synapse seen from its output neuron: input channel, delay and weight.
#[derive(Clone, Copy, Debug)]
struct Source {
    input: u32,
    delay: u16,
    weight: f32,
}

/// One synapse seen from its input channel: output neuron, delay and weight.
#[derive(Clone, Copy, Debug)]
struct Target {
    output: u32,
    delay: u16,
    weight: f32,
}

/// When a layer's sequence ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Semantics {
    /// As the reference's network computes (and `eval`): each layer's output ends `(K−1)//2`
    /// steps after its input ends, so a hidden layer's later spikes never reach the next layer.
    #[default]
    Reference,
    /// As a NIR graph runs: no layer ends; the recording is followed by the network's tail of
    /// zero frames and every layer runs every step, so delayed input keeps arriving.
    Nir,
}

/// A loaded network, ready to run.
pub struct Model {
    form: EvalNetwork,
    /// Per layer, per output neuron, its synapses by input channel then tap (zero weights left out).
    fan_in: Vec<Vec<Vec<Source>>>,
    /// The same synapses per input channel, by output neuron then tap (for streaming).
    fan_out: Vec<Vec<Vec<Target>>>,
}

impl Model {
    /// Loads a `delays` file (`snn-delays export --format delays`).
    pub fn load(path: &Path) -> Result<Model> {
        Ok(Model::new(crate::export::delays::read(path)?))
    }

    pub fn new(form: EvalNetwork) -> Model {
        let fan_in: Vec<Vec<Vec<Source>>> = form.layers.iter().map(fan_in).collect();
        let fan_out =
            form.layers.iter().zip(&fan_in).map(|(layer, sources)| fan_out(layer.synapse.in_channels, sources)).collect();
        Model { form, fan_in, fan_out }
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
        self.run_as(frames, steps, Semantics::Reference)
    }

    /// [`Model::run`] under the given [`Semantics`]; the readout has the same number of steps.
    pub fn run_as(&self, frames: &[f32], steps: usize, semantics: Semantics) -> Result<Vec<f32>> {
        let inputs = self.n_inputs();
        ensure!(frames.len() == steps * inputs, "{} values are not {steps} frames of {inputs} inputs", frames.len());
        let total = self.form.output_steps(steps);
        let (mut x, mut length) = match semantics {
            Semantics::Reference => (transpose(frames, steps, inputs), steps),
            Semantics::Nir => (transpose(&[frames, &vec![0.0; (total - steps) * inputs]].concat(), total, inputs), total),
        };
        for (l, (layer, fan_in)) in self.form.layers.iter().zip(&self.fan_in).enumerate() {
            let mut y = synaptic_input(layer, fan_in, &x, length);
            match semantics {
                Semantics::Reference => length += layer.synapse.extra_steps(),
                Semantics::Nir => y = cut_rows(&y, length + layer.synapse.extra_steps(), length),
            }
            let membrane = l + 1 == self.form.layers.len() && !self.form.reads_spikes();
            x = neurons(layer, y, length, membrane);
        }
        Ok(transpose(&x, self.n_outputs(), length))
    }

    /// [`Model::run`] over many samples in parallel; readouts in the order of `samples`.
    pub fn run_all(&self, samples: &[(Vec<f32>, usize)]) -> Result<Vec<Vec<f32>>> {
        self.run_all_as(samples, Semantics::Reference)
    }

    /// [`Model::run_all`] under the given [`Semantics`].
    pub fn run_all_as(&self, samples: &[(Vec<f32>, usize)], semantics: Semantics) -> Result<Vec<Vec<f32>>> {
        samples.par_iter().map(|(frames, steps)| self.run_as(frames, *steps, semantics)).collect()
    }

    /// A stream for one recording.
    pub fn stream(&self) -> Stream<'_> {
        self.stream_as(Semantics::Reference)
    }

    /// A stream for one recording under the given [`Semantics`].
    pub fn stream_as(&self, semantics: Semantics) -> Stream<'_> {
        Stream::new(self, semantics)
    }

    /// The class scores of a readout (`steps × n_outputs`), as the loss defines them (§3).
    pub fn scores(&self, readout: &[f32]) -> Vec<f32> {
        class_scores(self.form.loss.into(), readout, self.n_outputs())
    }
}

fn fan_in(layer: &EvalLayer) -> Vec<Vec<Source>> {
    let s = &layer.synapse;
    (0..s.out_channels)
        .map(|o| {
            (0..s.in_channels * s.taps)
                .map(|k| o * s.in_channels * s.taps + k)
                .filter(|&index| s.weights[index] != 0.0)
                .map(|index| Source {
                    input: ((index / s.taps) % s.in_channels) as u32,
                    delay: s.delays[index],
                    weight: s.weights[index],
                })
                .collect()
        })
        .collect()
}

/// The synapses of `fan_in` regrouped by input channel, in output order.
fn fan_out(in_channels: usize, fan_in: &[Vec<Source>]) -> Vec<Vec<Target>> {
    let mut lists = vec![Vec::new(); in_channels];
    for (o, sources) in fan_in.iter().enumerate() {
        for source in sources {
            lists[source.input as usize].push(Target { output: o as u32, delay: source.delay, weight: source.weight });
        }
    }
    lists
}

/// The first `keep` of each row of `width` values.
fn cut_rows(values: &[f32], width: usize, keep: usize) -> Vec<f32> {
    values.chunks_exact(width).flat_map(|row| &row[..keep]).copied().collect()
}

/// `rows × cols` row-major to `cols × rows`, in tiles that stay in cache.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 16;
    let mut out = vec![0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// Output steps computed together, in vector registers.
const CHUNK: usize = 128;
/// Input channels whose rows are added together, so that they stay in the first-level cache.
const INPUT_BLOCK: usize = 48;

/// `y`, `C_out × (length + extra)`, from `x`, `C_in × length` (channel-major). Each output row
/// is built `CHUNK` steps at a time in registers, adding its synapses in input order, each a
/// shifted slice of its input row; inputs are taken in blocks that fit the first-level cache
/// (which keeps the order), and input channels that never fire are skipped.
fn synaptic_input(layer: &EvalLayer, fan_in: &[Vec<Source>], x: &[f32], length: usize) -> Vec<f32> {
    let (c_in, c_out) = (layer.synapse.in_channels, layer.synapse.out_channels);
    let steps = length + layer.synapse.extra_steps();
    let lead = layer.synapse.kernel_size - 1;
    let chunks = steps.div_ceil(CHUNK);
    let width = lead + chunks * CHUNK;
    let mut rows = Rows { padded: vec![0f32; c_in * width], width, active: vec![false; c_in] };
    for (i, row) in x.chunks_exact(length.max(1)).enumerate() {
        rows.padded[i * width + lead..i * width + lead + length].copy_from_slice(row);
        rows.active[i] = row.iter().any(|v| *v != 0.0);
    }
    let mut y = vec![0f32; c_out * chunks * CHUNK];
    for block in (0..c_in).step_by(INPUT_BLOCK) {
        let end = (block + INPUT_BLOCK).min(c_in);
        for (row, sources) in y.chunks_exact_mut(chunks * CHUNK).zip(fan_in) {
            let first = sources.partition_point(|s| (s.input as usize) < block);
            let last = sources.partition_point(|s| (s.input as usize) < end);
            for (chunk, acc) in row.chunks_exact_mut(CHUNK).enumerate() {
                let acc: &mut [f32; CHUNK] = acc.try_into().expect("a chunk");
                accumulate(&sources[first..last], &rows, lead + chunk * CHUNK, acc);
            }
        }
    }
    y.chunks_exact(chunks * CHUNK).flat_map(|row| &row[..steps]).copied().collect()
}

/// A layer's input rows, padded with `K − 1` zero steps in front and whole chunks at the end,
/// and which channels fire at all.
struct Rows {
    padded: Vec<f32>,
    width: usize,
    active: Vec<bool>,
}

/// `acc[t] += Σ_s w_s · x_s[t − d_s]` for `CHUNK` steps from `offset` (in padded coordinates),
/// the terms added in the order of `sources`, each as one fused multiply-add.
#[inline(always)]
fn accumulate(sources: &[Source], rows: &Rows, offset: usize, acc: &mut [f32; CHUNK]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX-512F and FMA, checked just above.
            return unsafe { accumulate_avx512(sources, rows, offset, acc) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { accumulate_avx2(sources, rows, offset, acc) };
        }
    }
    accumulate_portable(sources, rows, offset, acc)
}

#[inline(always)]
fn accumulate_portable(sources: &[Source], rows: &Rows, offset: usize, acc: &mut [f32; CHUNK]) {
    let mut sum = *acc;
    for source in sources.iter().filter(|s| rows.active[s.input as usize]) {
        let start = source.input as usize * rows.width + offset - source.delay as usize;
        let x: &[f32; CHUNK] = rows.padded[start..start + CHUNK].try_into().expect("a chunk");
        for (a, x) in sum.iter_mut().zip(x) {
            *a = source.weight.mul_add(*x, *a);
        }
    }
    *acc = sum;
}

/// The same loop compiled for AVX-512: the same operations, sixteen at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn accumulate_avx512(sources: &[Source], rows: &Rows, offset: usize, acc: &mut [f32; CHUNK]) {
    accumulate_portable(sources, rows, offset, acc)
}

/// The same loop compiled for AVX2: the same operations, eight at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2(sources: &[Source], rows: &Rows, offset: usize, acc: &mut [f32; CHUNK]) {
    accumulate_portable(sources, rows, offset, acc)
}

/// The neurons over `C_out × steps` synaptic input (channel-major): spikes, or the membrane.
fn neurons(layer: &EvalLayer, mut current: Vec<f32>, steps: usize, membrane: bool) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA, checked just above.
        unsafe { neurons_fma(layer, &mut current, steps, membrane) };
        return current;
    }
    neurons_portable(layer, &mut current, steps, membrane);
    current
}

/// Time-major, so that each step updates every neuron in one loop of independent updates.
#[inline(always)]
fn neurons_portable(layer: &EvalLayer, current: &mut [f32], steps: usize, membrane: bool) {
    let channels = layer.synapse.out_channels;
    let mut by_time = transpose(current, channels, steps);
    let mut v = vec![0f32; channels];
    for row in by_time.chunks_exact_mut(channels) {
        if let Some(norm) = &layer.norm {
            for ((y, scale), shift) in row.iter_mut().zip(&norm.scale).zip(&norm.shift) {
                *y = y.mul_add(*scale, *shift);
            }
        }
        for (c, v) in row.iter_mut().zip(v.iter_mut()) {
            *c = fire(layer, *c, v, membrane);
        }
    }
    current.copy_from_slice(&transpose(&by_time, steps, channels));
}

/// The same with the BatchNorm's fused multiply-add as one instruction (the same result).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn neurons_fma(layer: &EvalLayer, current: &mut [f32], steps: usize, membrane: bool) {
    neurons_portable(layer, current, steps, membrane);
}

/// One neuron's step: BatchNorm, charge, fire, reset; returns its spike, or its post-reset
/// membrane when `membrane`.
#[inline(always)]
fn neuron_step(layer: &EvalLayer, o: usize, y: f32, v: &mut f32, membrane: bool) -> f32 {
    fire(layer, layer.norm.as_ref().map_or(y, |norm| norm.apply(y, o)), v, membrane)
}

/// Charge with the current `c`, fire and reset: the spike, or the post-reset membrane when
/// `membrane`.
#[inline(always)]
fn fire(layer: &EvalLayer, c: f32, v: &mut f32, membrane: bool) -> f32 {
    let h = layer.charge.apply(*v, c);
    let fired = if h >= layer.threshold { 1.0 } else { 0.0 };
    *v = h * (1.0 - fired);
    if membrane {
        *v
    } else {
        fired
    }
}

/// Class scores from a readout (`steps × classes`) by the [`Scoring`] rule.
pub fn class_scores(scoring: Scoring, readout: &[f32], classes: usize) -> Vec<f32> {
    let mut scores = ClassScores::new(scoring, classes);
    readout.chunks_exact(classes).for_each(|row| scores.add(row));
    scores.scores()
}

/// Class scores accumulated one readout step at a time (for streaming decisions).
pub struct ClassScores {
    scoring: Scoring,
    totals: Vec<f32>,
    steps: usize,
}

impl ClassScores {
    pub fn new(scoring: Scoring, classes: usize) -> ClassScores {
        ClassScores { scoring, totals: vec![if scoring == Scoring::Max { f32::NEG_INFINITY } else { 0.0 }; classes], steps: 0 }
    }

    /// Adds one step's readout (`classes` values).
    pub fn add(&mut self, row: &[f32]) {
        match self.scoring {
            Scoring::SoftmaxSum => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                self.totals.iter_mut().zip(&exps).for_each(|(s, e)| *s += e / total);
            }
            Scoring::Mean | Scoring::Sum => self.totals.iter_mut().zip(row).for_each(|(s, v)| *s += v),
            Scoring::Max => self.totals.iter_mut().zip(row).for_each(|(s, v)| *s = s.max(*v)),
        }
        self.steps += 1;
    }

    /// The scores of the steps added so far.
    pub fn scores(&self) -> Vec<f32> {
        match self.scoring {
            Scoring::Mean => self.totals.iter().map(|s| s / self.steps as f32).collect(),
            _ => self.totals.clone(),
        }
    }
}

/// The first index of the largest score, as argmax breaks ties.
pub fn prediction(scores: &[f32]) -> usize {
    scores.iter().enumerate().fold(0, |best, (i, &s)| if s > scores[best] { i } else { best })
}

/// A layer's view of its recent input at step `t`: the ring of the last `k` steps and when each
/// channel last fired.
struct Window<'a> {
    ring: &'a [f32],
    last_active: &'a [Option<usize>],
    t: usize,
    k: usize,
}

/// A streamed step's synaptic input: each input channel active in the last K steps, in input
/// order, adds its synapses' terms `w · x[i, t − d]` to their outputs, so every output sums its
/// terms in the order batch mode does.
fn gather(fan_out: &[Vec<Target>], window: &Window, current: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA, checked just above.
        return unsafe { gather_fma(fan_out, window, current) };
    }
    gather_portable(fan_out, window, current);
}

#[inline(always)]
fn gather_portable(fan_out: &[Vec<Target>], window: &Window, current: &mut [f32]) {
    let (c_in, t, k) = (fan_out.len(), window.t, window.k);
    for (i, targets) in fan_out.iter().enumerate() {
        if window.last_active[i].is_none_or(|last| t - last >= k) {
            continue;
        }
        for target in targets {
            let d = target.delay as usize;
            if d <= t {
                let value = window.ring[((t - d) % k) * c_in + i];
                if value != 0.0 {
                    let y = &mut current[target.output as usize];
                    *y = target.weight.mul_add(value, *y);
                }
            }
        }
    }
}

/// The same with the multiply-add as one instruction (the same result).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn gather_fma(fan_out: &[Vec<Target>], window: &Window, current: &mut [f32]) {
    gather_portable(fan_out, window, current);
}

/// One recording fed a frame at a time.
pub struct Stream<'m> {
    model: &'m Model,
    /// Per layer, `K × C_in`: the last K steps of the layer's input, indexed by step modulo K.
    rings: Vec<Vec<f32>>,
    /// Per layer and input channel, the last step it was nonzero: older than K steps, it is
    /// skipped.
    last_active: Vec<Vec<Option<usize>>>,
    /// Per layer, this step's synaptic input.
    current: Vec<Vec<f32>>,
    membranes: Vec<Vec<f32>>,
    /// Per layer, this step's output (spikes, or the readout for the output layer).
    outputs: Vec<Vec<f32>>,
    steps: usize,
    ended_at: Option<usize>,
    semantics: Semantics,
}

impl<'m> Stream<'m> {
    fn new(model: &'m Model, semantics: Semantics) -> Stream<'m> {
        let layers = &model.form.layers;
        Stream {
            model,
            rings: layers.iter().map(|l| vec![0.0; l.synapse.kernel_size * l.synapse.in_channels]).collect(),
            last_active: layers.iter().map(|l| vec![None; l.synapse.in_channels]).collect(),
            current: layers.iter().map(|l| vec![0.0; l.synapse.out_channels]).collect(),
            membranes: layers.iter().map(|l| vec![0.0; l.synapse.out_channels]).collect(),
            outputs: layers.iter().map(|l| vec![0.0; l.synapse.out_channels]).collect(),
            steps: 0,
            ended_at: None,
            semantics,
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
        (0..self.model.form.tail_steps())
            .map(|_| {
                self.advance(None);
                self.outputs.last().expect("an output layer").clone()
            })
            .collect()
    }

    /// Forgets the recording: membranes and rings back to zero.
    pub fn reset(&mut self) {
        *self = Stream::new(self.model, self.semantics);
    }

    /// One step of every layer. Under [`Semantics::Reference`], a layer's input past the end of
    /// its batch-mode input counts as zero, and so does a hidden layer's output past the end of
    /// its batch-mode output; under [`Semantics::Nir`] no layer ends.
    fn advance(&mut self, frame: Option<&[f32]>) {
        let t = self.steps;
        let layers = &self.model.form.layers;
        let mut valid_until = match self.semantics {
            Semantics::Reference => self.ended_at.unwrap_or(usize::MAX),
            Semantics::Nir => usize::MAX,
        };
        for (l, layer) in layers.iter().enumerate() {
            let (k, c_in) = (layer.synapse.kernel_size, layer.synapse.in_channels);
            let (earlier, later) = self.outputs.split_at_mut(l);
            let input = if l == 0 { frame } else { Some(earlier[l - 1].as_slice()) };
            let ring = &mut self.rings[l];
            let slot = &mut ring[(t % k) * c_in..(t % k + 1) * c_in];
            match input {
                Some(x) => slot.copy_from_slice(x),
                None => slot.fill(0.0),
            }
            valid_until = valid_until.saturating_add(layer.synapse.extra_steps());
            let last_active = &mut self.last_active[l];
            for (i, value) in input.unwrap_or(&[]).iter().enumerate() {
                if *value != 0.0 {
                    last_active[i] = Some(t);
                }
            }
            let current = &mut self.current[l];
            current.fill(0.0);
            gather(&self.model.fan_out[l], &Window { ring, last_active, t, k }, current);
            let membrane = l + 1 == layers.len() && !self.model.form.reads_spikes();
            let output = &mut later[0];
            for (o, ((y, v), out)) in current.iter().zip(self.membranes[l].iter_mut()).zip(output.iter_mut()).enumerate() {
                *out = neuron_step(layer, o, *y, v, membrane);
            }
            if t >= valid_until {
                output.fill(0.0);
            }
        }
        self.steps += 1;
    }
}
