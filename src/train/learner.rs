//! What a training run ([`super::run`]) drives, whichever the model: the paper's feedforward
//! network ([`Trainer`]) or a recurrent-delay network ([`RecurrentTrainer`]). The run owns the
//! epoch loop, evaluation passes, checkpoints, logs and resumption; a learner owns its network,
//! its two optimizers and their schedules, and knows how a batch step, an epoch's start and end,
//! and an evaluation pass go for its model.

use super::eval::{evaluate, evaluate_with, Pass, Scores};
use super::optim::Adam;
use super::recurrent::RecurrentTrainer;
use super::schedule::LrSchedule;
use super::{BatchResult, Trainer};
use crate::config::{name_of, Config, RecurrentBuffer};
use crate::data::Subset;
use crate::distributed::Group;
use crate::logging::Board;
use crate::model::recurrent::cuda_step;
use crate::model::{DropoutMasks, GlobalSum};
use anyhow::Result;
use std::collections::HashMap;
use std::rc::Rc;
use tch::{nn, Device, Kind, Tensor};

pub trait Learner {
    fn config(&self) -> &Config;
    fn vs(&self) -> &nn::VarStore;
    fn device(&self) -> Device;
    fn trainable_parameter_count(&self) -> i64;
    /// How the neurons are computed, for the run's header and summary (`fused`, `ops`, …),
    /// with why they do not run as configured, if they do not.
    fn neurons(&self) -> (String, Option<String>);
    /// The weights' optimizer, then the positions' when there is one.
    fn optimizers(&self) -> (&Adam, Option<&Adam>);
    fn optimizers_mut(&mut self) -> (&mut Adam, Option<&mut Adam>);
    /// The weights' and the positions' schedules.
    fn schedules(&self) -> (&LrSchedule, Option<&LrSchedule>);
    /// Restores the schedules (a resumed run) and applies them to the optimizers.
    fn set_schedules(&mut self, lr_w: LrSchedule, lr_pos: Option<LrSchedule>);
    /// The positions' learning rate in force.
    fn lr_pos(&self) -> f64;
    /// The kernel width σ in force (the output layer's, for the feedforward network).
    fn sigma(&self) -> f64;
    /// Called before epoch `epoch` (from 0) trains.
    fn begin_epoch(&mut self, epoch: usize);
    /// One batch: `x (T, B, C)`, one-hot `targets (B, classes)`.
    fn train_step(&mut self, x: &Tensor, targets: &Tensor, masks: DropoutMasks) -> Result<BatchResult>;
    /// Called after epoch `epoch` trained, before it is evaluated.
    fn end_epoch(&mut self, epoch: usize);
    fn evaluate(&mut self, subset: &Subset, pass: &Pass, group: Option<&Group>) -> Result<Scores>;
    /// Each delay layer's positions (detached copies), whose changes the run logs.
    fn positions(&self) -> Vec<Tensor>;
    /// The per-layer scalars and histograms of an epoch.
    fn log_layers(&self, board: &mut Board, step: usize);
    /// Each dropout of a training pass, in the order the network takes its masks: the drop
    /// probability and the width of the per-sample masks ([`super::masks`]).
    fn dropout_plan(&self) -> Vec<(f64, usize)>;
    /// Forward, loss and backward of a batch, leaving the gradients on the parameters; returns
    /// the batch's mean loss and class scores. With `share = Some(s)` the gradients are those
    /// of `s·loss` (a rank's shard of a global batch); an empty shard gives zero gradients and
    /// still takes part in every collective of the pass.
    fn compute_gradients(
        &mut self,
        x: &Tensor,
        targets: &Tensor,
        masks: DropoutMasks,
        share: Option<f64>,
    ) -> Result<(Tensor, Tensor)>;
    /// Steps both optimizers with the gradients in place, then clamps what the model clamps.
    fn apply_gradients(&mut self);
    /// Joins a data-parallel run: BatchNorm over the global batch through `sum`.
    fn join_group(&mut self, sum: Rc<dyn GlobalSum>);
    /// Clears the gradients of every optimized parameter.
    fn zero_grad(&mut self) {
        let (weights, positions) = self.optimizers_mut();
        weights.zero_grad();
        if let Some(positions) = positions {
            positions.zero_grad();
        }
    }
    /// What a best checkpoint records besides the weights, in its header.
    fn checkpoint_metadata(&self) -> HashMap<String, String> {
        HashMap::new()
    }
}

/// The masks a recurrent-delay pass takes, when every one is given; `None` lets it draw them.
fn given_masks(masks: &DropoutMasks) -> Option<Vec<Tensor>> {
    masks.0.iter().map(|mask| mask.as_ref().map(Tensor::shallow_clone)).collect::<Option<Vec<_>>>().filter(|m| !m.is_empty())
}

/// The header key of the kernel width σ in force when a recurrent-delay checkpoint was written.
pub const SIGMA_KEY: &str = "snn_delays.sigma";

impl Learner for Trainer {
    fn config(&self) -> &Config {
        &self.config
    }

    fn vs(&self) -> &nn::VarStore {
        &self.network.vs
    }

    fn device(&self) -> Device {
        self.network.device()
    }

    fn trainable_parameter_count(&self) -> i64 {
        self.network.trainable_parameter_count()
    }

    fn neurons(&self) -> (String, Option<String>) {
        (name_of(&self.network.neuron_backend()), self.network.backend_note.clone())
    }

    fn optimizers(&self) -> (&Adam, Option<&Adam>) {
        (&self.weights, self.positions.as_ref())
    }

    fn optimizers_mut(&mut self) -> (&mut Adam, Option<&mut Adam>) {
        (&mut self.weights, self.positions.as_mut())
    }

    fn schedules(&self) -> (&LrSchedule, Option<&LrSchedule>) {
        (&self.lr_w, self.lr_pos.as_ref())
    }

    fn set_schedules(&mut self, lr_w: LrSchedule, lr_pos: Option<LrSchedule>) {
        self.lr_w = lr_w;
        self.lr_pos = lr_pos;
        self.apply_schedules();
    }

    fn lr_pos(&self) -> f64 {
        Trainer::lr_pos(self)
    }

    fn sigma(&self) -> f64 {
        self.output_sigma()
    }

    fn begin_epoch(&mut self, _epoch: usize) {}

    fn train_step(&mut self, x: &Tensor, targets: &Tensor, masks: DropoutMasks) -> Result<BatchResult> {
        Trainer::train_step(self, x, targets, masks)
    }

    fn end_epoch(&mut self, epoch: usize) {
        Trainer::end_epoch(self, epoch)
    }

    fn evaluate(&mut self, subset: &Subset, pass: &Pass, group: Option<&Group>) -> Result<Scores> {
        evaluate(&self.network, subset, pass, group)
    }

    fn positions(&self) -> Vec<Tensor> {
        self.network.dcls_layers().map(|layer| layer.positions.detach().copy()).collect()
    }

    fn log_layers(&self, board: &mut Board, step: usize) {
        let time_step = self.config.time_step_ms;
        for (i, neuron) in self.network.neurons().enumerate() {
            board.scalar(&format!("tau_m_{i}"), neuron.tau_steps() * time_step, step);
        }
        for (i, synapse) in self.network.synapses().enumerate() {
            board.scalar(&format!("w_{i}"), synapse.weight().abs().mean(Kind::Double).double_value(&[]), step);
            board.value_histogram(&format!("weights/layer{i}"), synapse.weight(), step);
        }
        for (i, layer) in self.network.dcls_layers().enumerate() {
            board.integer_histogram(&format!("delays/layer{i}"), &layer.delays(), layer.shape.kernel_size - 1, step);
        }
    }

    fn dropout_plan(&self) -> Vec<(f64, usize)> {
        vec![(self.config.dropout_p, self.config.n_hidden_neurons); self.config.n_hidden_layers]
    }

    fn compute_gradients(
        &mut self,
        x: &Tensor,
        targets: &Tensor,
        masks: DropoutMasks,
        share: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        Trainer::compute_gradients(self, x, targets, masks, share)
    }

    fn apply_gradients(&mut self) {
        Trainer::apply_gradients(self)
    }

    fn join_group(&mut self, sum: Rc<dyn GlobalSum>) {
        self.network.global_sum = Some(sum);
    }
}

impl Learner for RecurrentTrainer {
    fn config(&self) -> &Config {
        &self.config
    }

    fn vs(&self) -> &nn::VarStore {
        &self.network.vs
    }

    fn device(&self) -> Device {
        self.network.vs.device()
    }

    fn trainable_parameter_count(&self) -> i64 {
        self.network.trainable_parameters()
    }

    fn neurons(&self) -> (String, Option<String>) {
        let buffer = format!("{} recurrent-layer", name_of(&self.recurrent.buffer));
        match (self.recurrent.buffer, self.device()) {
            (RecurrentBuffer::Fused, Device::Cuda(index)) => match cuda_step::verified(index) {
                Ok(()) => (format!("{buffer} (CUDA step kernels)"), None),
                Err(why) => (buffer, Some(format!("its steps run as libtorch ops: {why}"))),
            },
            _ => (buffer, None),
        }
    }

    fn optimizers(&self) -> (&Adam, Option<&Adam>) {
        (&self.weights, Some(&self.positions))
    }

    fn optimizers_mut(&mut self) -> (&mut Adam, Option<&mut Adam>) {
        (&mut self.weights, Some(&mut self.positions))
    }

    fn schedules(&self) -> (&LrSchedule, Option<&LrSchedule>) {
        (&self.lr_w, Some(&self.lr_pos))
    }

    fn set_schedules(&mut self, lr_w: LrSchedule, lr_pos: Option<LrSchedule>) {
        self.lr_w = lr_w;
        if let Some(lr_pos) = lr_pos {
            self.lr_pos = lr_pos;
        }
        self.apply_schedules();
    }

    fn lr_pos(&self) -> f64 {
        self.lr_pos.lr
    }

    fn sigma(&self) -> f64 {
        self.sigma
    }

    fn begin_epoch(&mut self, epoch: usize) {
        RecurrentTrainer::begin_epoch(self, epoch)
    }

    fn train_step(&mut self, x: &Tensor, targets: &Tensor, masks: DropoutMasks) -> Result<BatchResult> {
        RecurrentTrainer::train_step(self, x, targets, given_masks(&masks).as_deref())
    }

    /// The original steps its schedules after evaluating; stepping them before changes nothing
    /// the evaluation computes (σ for the next epoch is set when it begins).
    fn end_epoch(&mut self, _epoch: usize) {
        RecurrentTrainer::end_epoch(self)
    }

    fn evaluate(&mut self, subset: &Subset, pass: &Pass, group: Option<&Group>) -> Result<Scores> {
        self.begin_evaluation();
        let kernels = self.eval_kernels();
        let network = &self.network;
        let score = |x: &Tensor| Ok(network.class_scores(&network.forward(x, &kernels, false, None)?.output));
        evaluate_with(self.device(), &score, subset, pass, group)
    }

    fn positions(&self) -> Vec<Tensor> {
        self.network.recurrent_layers().map(|layer| layer.delays.detach().copy()).collect()
    }

    fn log_layers(&self, board: &mut Board, step: usize) {
        for (i, layer) in self.network.recurrent_layers().enumerate() {
            board.scalar(&format!("w_rec_{i}"), layer.weight.abs().mean(Kind::Double).double_value(&[]), step);
            board.value_histogram(&format!("recurrent_weights/layer{i}"), &layer.weight, step);
            board.value_histogram(&format!("recurrent_delays/layer{i}"), &layer.delays, step);
        }
    }

    fn dropout_plan(&self) -> Vec<(f64, usize)> {
        let width = self.config.n_hidden_neurons;
        self.network.mask_plan().iter().map(|(_, dropout)| (dropout.p, width)).collect()
    }

    fn compute_gradients(
        &mut self,
        x: &Tensor,
        targets: &Tensor,
        masks: DropoutMasks,
        share: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        RecurrentTrainer::compute_gradients(self, x, targets, given_masks(&masks).as_deref(), share)
    }

    fn apply_gradients(&mut self) {
        RecurrentTrainer::apply_gradients(self)
    }

    fn join_group(&mut self, sum: Rc<dyn GlobalSum>) {
        self.network.global_sum = Some(sum);
    }

    /// σ, which the `original` evaluation uses with the rounded delays.
    fn checkpoint_metadata(&self) -> HashMap<String, String> {
        HashMap::from([(SIGMA_KEY.to_string(), self.sigma.to_string())])
    }
}
