//! The engine for recurrent-delay networks: a [`RecurrentEvalNetwork`] run step by step in pure
//! Rust (docs/method.md "Recurrent delays", deployment).
//!
//! Each step, block by block: the dense input `c = W·x + b` adds the column `W[:, i]·x_i` of
//! every nonzero input in input order, then the bias; then the folded BatchNorm; the recurrent
//! current adds the column `R[:, j]` of every presynaptic neuron j that fired `1 + d_j` steps
//! earlier, kept in a ring of the last `max d + 1` steps of spikes; then the neuron. The readout
//! is the dense output of the last block's spikes, or the membrane of a LIF fed with it.
//!
//! A recurrent network has no tail: its output has one step per input step, so both
//! [`Semantics`] run the same steps. Batch mode runs each sample's stream, samples in parallel,
//! so the two modes agree bit for bit.

use super::{transpose, Engine, Semantics, Streaming};
use crate::model::loss::Scoring;
use crate::model::recurrent::eval_form::{EvalDense, RecurrentEvalNetwork};
use anyhow::{ensure, Result};
use rayon::prelude::*;

/// A loaded recurrent network, ready to run.
pub struct RecurrentModel {
    form: RecurrentEvalNetwork,
    /// Per block, its dense weights by input (`W[:, i]` contiguous).
    columns: Vec<Vec<f32>>,
    /// Per block, its recurrent weights by presynaptic neuron (`R[:, j]` contiguous).
    recurrent_columns: Vec<Option<Vec<f32>>>,
    readout_columns: Vec<f32>,
}

impl RecurrentModel {
    pub fn new(form: RecurrentEvalNetwork) -> RecurrentModel {
        let columns = form.blocks.iter().map(|block| columns_of(&block.dense)).collect();
        let recurrent_columns = form
            .blocks
            .iter()
            .map(|block| {
                let n = block.dense.out_channels;
                block.recurrence.as_ref().map(|r| transpose(&r.weights, n, n))
            })
            .collect();
        let readout_columns = columns_of(&form.readout.dense);
        RecurrentModel { form, columns, recurrent_columns, readout_columns }
    }

    pub fn form(&self) -> &RecurrentEvalNetwork {
        &self.form
    }

    /// Runs one sample of `steps` frames (`steps × n_inputs`, time-major); the readout,
    /// `steps × n_outputs`.
    pub fn run(&self, frames: &[f32], steps: usize) -> Result<Vec<f32>> {
        let inputs = self.form.n_inputs();
        ensure!(frames.len() == steps * inputs, "{} values are not {steps} frames of {inputs} inputs", frames.len());
        let mut stream = RecurrentStream::new(self);
        let mut readout = Vec::with_capacity(steps * self.form.n_outputs());
        for frame in frames.chunks_exact(inputs) {
            readout.extend_from_slice(stream.step(frame)?);
        }
        Ok(readout)
    }

    pub fn stream(&self) -> RecurrentStream<'_> {
        RecurrentStream::new(self)
    }
}

/// `W[:, i]` for every input i, contiguous.
fn columns_of(dense: &EvalDense) -> Vec<f32> {
    transpose(&dense.weights, dense.out_channels, dense.in_channels)
}

/// `out = W·x + b`: the columns of the nonzero inputs, in input order, then the bias.
fn apply_dense(dense: &EvalDense, columns: &[f32], x: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (column, &value) in columns.chunks_exact(dense.out_channels).zip(x) {
        if value != 0.0 {
            out.iter_mut().zip(column).for_each(|(o, w)| *o = w.mul_add(value, *o));
        }
    }
    out.iter_mut().zip(&dense.bias).for_each(|(o, b)| *o += b);
}

impl Engine for RecurrentModel {
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
        self.form.scoring
    }

    fn run_all_as(&self, samples: &[(Vec<f32>, usize)], _semantics: Semantics) -> Result<Vec<Vec<f32>>> {
        samples.par_iter().map(|(frames, steps)| self.run(frames, *steps)).collect()
    }

    fn stream_as(&self, _semantics: Semantics) -> Box<dyn Streaming + '_> {
        Box::new(self.stream())
    }
}

/// One block's state: membranes, and the spikes of the last `max d + 1` steps (step t in slot
/// `t mod (max d + 1)`).
struct BlockState {
    membrane: Vec<f32>,
    spikes: Vec<f32>,
    slots: usize,
}

/// One recording fed a frame at a time.
pub struct RecurrentStream<'m> {
    model: &'m RecurrentModel,
    blocks: Vec<BlockState>,
    readout_membrane: Vec<f32>,
    /// Per block, this step's current; then the readout.
    currents: Vec<Vec<f32>>,
    output: Vec<f32>,
    /// Reused buffers: a block's input, and a step's recurrent current.
    input: Vec<f32>,
    recurrent: Vec<f32>,
    steps: usize,
    ended: bool,
}

impl<'m> RecurrentStream<'m> {
    fn new(model: &'m RecurrentModel) -> RecurrentStream<'m> {
        let blocks = model
            .form
            .blocks
            .iter()
            .map(|block| {
                let n = block.dense.out_channels;
                let slots = block.recurrence.as_ref().map_or(1, |r| r.max_delay() + 1);
                BlockState { membrane: vec![0.0; n], spikes: vec![0.0; slots * n], slots }
            })
            .collect();
        let outputs = model.form.n_outputs();
        RecurrentStream {
            model,
            blocks,
            readout_membrane: vec![0.0; outputs],
            currents: model.form.blocks.iter().map(|block| vec![0.0; block.dense.out_channels]).collect(),
            output: vec![0.0; outputs],
            input: Vec::new(),
            recurrent: Vec::new(),
            steps: 0,
            ended: false,
        }
    }

    /// One step of block `l` on its input `x`; its spikes go to slot `t mod slots`.
    fn advance_block(&mut self, l: usize, x: &[f32]) {
        let (model, t) = (self.model, self.steps);
        let block = &model.form.blocks[l];
        let n = block.dense.out_channels;
        let current = &mut self.currents[l];
        apply_dense(&block.dense, &model.columns[l], x, current);
        if let Some(norm) = &block.norm {
            current.iter_mut().enumerate().for_each(|(o, c)| *c = norm.apply(*c, o));
        }
        let state = &mut self.blocks[l];
        if let (Some(recurrence), Some(columns)) = (&block.recurrence, &model.recurrent_columns[l]) {
            let recurrent = &mut self.recurrent;
            recurrent.clear();
            recurrent.resize(n, 0.0);
            for (j, (&delay, column)) in recurrence.delays.iter().zip(columns.chunks_exact(n)).enumerate() {
                let lag = 1 + delay as usize;
                if t >= lag && state.spikes[((t - lag) % state.slots) * n + j] != 0.0 {
                    recurrent.iter_mut().zip(column).for_each(|(r, w)| *r += w);
                }
            }
            current.iter_mut().zip(recurrent.iter()).for_each(|(c, r)| *c += r);
        }
        let slot = &mut state.spikes[(t % state.slots) * n..(t % state.slots + 1) * n];
        for ((s, c), v) in slot.iter_mut().zip(current.iter()).zip(state.membrane.iter_mut()) {
            *s = block.neuron.fire(*c, v);
        }
    }

    /// This step's spikes of block `l`.
    fn spikes(&self, l: usize) -> &[f32] {
        let (state, n) = (&self.blocks[l], self.model.form.blocks[l].dense.out_channels);
        let slot = self.steps % state.slots;
        &state.spikes[slot * n..(slot + 1) * n]
    }
}

impl Streaming for RecurrentStream<'_> {
    fn step(&mut self, frame: &[f32]) -> Result<&[f32]> {
        ensure!(!self.ended, "the recording has ended; reset the stream to start another");
        let model = self.model;
        ensure!(frame.len() == model.form.n_inputs(), "a frame has {} values, expected {}", frame.len(), model.form.n_inputs());
        let mut input = std::mem::take(&mut self.input);
        for l in 0..model.form.blocks.len() {
            input.clear();
            input.extend_from_slice(if l == 0 { frame } else { self.spikes(l - 1) });
            self.advance_block(l, &input);
        }
        input.clear();
        input.extend_from_slice(self.spikes(model.form.blocks.len() - 1));
        let readout = &model.form.readout;
        apply_dense(&readout.dense, &model.readout_columns, &input, &mut self.output);
        self.input = input;
        if let Some(neuron) = &readout.neuron {
            for (y, v) in self.output.iter_mut().zip(self.readout_membrane.iter_mut()) {
                neuron.fire(*y, v);
                *y = *v;
            }
        }
        self.steps += 1;
        Ok(&self.output)
    }

    fn finish(&mut self) -> Vec<Vec<f32>> {
        self.ended = true;
        Vec::new()
    }

    fn reset(&mut self) {
        *self = RecurrentStream::new(self.model);
    }

    fn steps(&self) -> usize {
        self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::neuron::step::Reset;
    use crate::model::recurrent::eval_form::example::tiny;

    /// Neuron 0 fires at step 0; with delay 2 its spike reaches neuron 1 three steps later, as
    /// the layer computes, under either reset; streaming gives the same readout.
    #[test]
    fn a_recurrent_spike_arrives_one_plus_its_delay_steps_later() {
        for reset in [Reset::Soft, Reset::Hard] {
            let model = RecurrentModel::new(tiny(reset));
            let mut frames = vec![0f32; 12];
            frames[0] = 1.0;
            let readout = model.run(&frames, 6).unwrap();
            let expected = [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]].concat();
            assert_eq!(readout, expected, "{reset:?}");
            let mut stream = model.stream();
            let streamed: Vec<f32> = frames.chunks_exact(2).flat_map(|f| stream.step(f).unwrap().to_vec()).collect();
            assert_eq!(streamed, readout);
            assert!(stream.finish().is_empty());
            assert!(stream.step(&[0.0, 0.0]).is_err(), "a finished stream takes no frames");
            assert_eq!(model.scores(&readout), vec![1.0, 1.0]);
        }
    }

    #[test]
    fn a_frame_of_the_wrong_width_is_refused() {
        let model = RecurrentModel::new(tiny(Reset::Soft));
        let message = model.run(&[0.0; 5], 2).unwrap_err().to_string();
        assert!(message.contains("5 values are not 2 frames of 2 inputs"), "{message}");
    }
}
