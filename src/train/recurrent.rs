//! Training a recurrent-delay network as DelRec does (docs/method.md "Recurrent delays",
//! training; spec §7): two optimizers, weights (Linear and recurrent weights with weight decay,
//! BatchNorm without) and positions (delays and spreads, no decay), Adam or AdamW, each with its
//! schedule stepped once per epoch (one-cycle also cycles β1).
//!
//! - Epoch e starts by setting `σ_e` ([`RecurrentConfig::sigma_at`]).
//! - A batch step: forward with the kernels of the continuous delays at `σ_e`, loss, backward,
//!   both optimizers step, then (`clamp_every_step`) delays are clamped at 0.
//! - Evaluation ([`EvalDelays`]): `integer` rounds a copy of the delays (clamped at 0) and uses
//!   σ = 0; `original` rounds the delays in place, clamps them, and keeps `σ_e`.
//! - The epoch ends by stepping the schedules.

use super::optim::Adam;
use super::schedule::LrSchedule;
use super::{check_finite, idle_shard, weighted, BatchResult};
use crate::checkpoint;
use crate::config::{Config, EvalDelays, Optimizer, RecurrentConfig};
use crate::model::loss::hit_rate;
use crate::model::recurrent::network::{RecurrentNetwork, RecurrentShape};
use anyhow::Result;
use tch::{Device, Tensor};

pub struct RecurrentTrainer {
    pub config: Config,
    pub recurrent: RecurrentConfig,
    pub network: RecurrentNetwork,
    pub weights: Adam,
    pub positions: Adam,
    pub lr_w: LrSchedule,
    pub lr_pos: LrSchedule,
    /// The kernel width σ in force.
    pub sigma: f64,
}

impl RecurrentTrainer {
    /// The network of a `delrec` configuration seeded from its seed, with DelRec's optimizer
    /// groups and schedules, at epoch 0.
    pub fn new(config: &Config, device: Device) -> Result<RecurrentTrainer> {
        let shape = RecurrentShape::of(config)?;
        let recurrent = config.recurrent_settings()?.clone();
        let network = RecurrentNetwork::new(&shape, config.seed as i64, device);
        let groups = network.groups();
        let named = |tensors: &[Tensor]| {
            tensors.iter().map(|t| (checkpoint::key_of(&network.vs, t), t.shallow_clone())).collect::<Vec<_>>()
        };
        let optimizer = |adam: Adam| if recurrent.optimizer == Optimizer::AdamW { adam.decoupled() } else { adam };
        let weights =
            optimizer(Adam::new(vec![(named(&groups.weights), config.weight_decay), (named(&groups.norm), 0.0)], config.lr_w));
        let positions = optimizer(Adam::new(vec![(named(&groups.positions), 0.0)], recurrent.lr_pos));
        let mut trainer = RecurrentTrainer {
            lr_w: LrSchedule::new(config.scheduler_w, config.lr_w, config.epochs),
            lr_pos: LrSchedule::new(config.scheduler_pos, recurrent.lr_pos, config.epochs),
            sigma: recurrent.sigma_at(0, config.epochs),
            config: config.clone(),
            recurrent,
            network,
            weights,
            positions,
        };
        trainer.apply_schedules();
        Ok(trainer)
    }

    /// Sets each optimizer's rate and β1 to its schedule's current values.
    pub fn apply_schedules(&mut self) {
        for (adam, schedule) in [(&mut self.weights, &self.lr_w), (&mut self.positions, &self.lr_pos)] {
            adam.lr = schedule.lr;
            adam.beta1 = schedule.beta1();
        }
    }

    /// Sets σ for 0-based `epoch`.
    pub fn begin_epoch(&mut self, epoch: usize) {
        self.sigma = self.recurrent.sigma_at(epoch, self.config.epochs);
    }

    /// One batch: forward with the given dropout masks (drawn when `None`), loss, backward, both
    /// optimizers, the clamp. A non-finite loss stops before any parameter changes.
    pub fn train_step(&mut self, x: &Tensor, targets: &Tensor, masks: Option<&[Tensor]>) -> Result<BatchResult> {
        self.weights.zero_grad();
        self.positions.zero_grad();
        let (loss, scores) = self.compute_gradients(x, targets, masks, None)?;
        let value = check_finite(loss.double_value(&[]))?;
        self.apply_gradients();
        let accuracy = tch::no_grad(|| hit_rate(&scores, targets));
        Ok(BatchResult { loss: value, accuracy })
    }

    /// Forward with the kernels at σ in force, loss and backward (of `share·loss` when a share
    /// is given), leaving the gradients on the parameters; the batch's mean loss and class
    /// scores. An empty shard takes part in the global BatchNorms' sums and adds nothing.
    pub fn compute_gradients(
        &mut self,
        x: &Tensor,
        targets: &Tensor,
        masks: Option<&[Tensor]>,
        share: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        if targets.size()[0] == 0 {
            self.network.idle_train_pass()?;
            return Ok(idle_shard(targets));
        }
        let kernels = self.network.kernels(self.sigma, false);
        let pass = self.network.forward(x, &kernels, true, masks)?;
        let loss = self.network.loss(&pass.output, targets);
        pass.backward(&weighted(&loss, share))?;
        let scores = tch::no_grad(|| self.network.class_scores(&pass.output));
        Ok((loss.detach(), scores))
    }

    /// Steps both optimizers, then clamps the delays if the configuration says so.
    pub fn apply_gradients(&mut self) {
        self.weights.step();
        self.positions.step();
        if self.recurrent.clamp_every_step {
            self.clamp_delays();
        }
    }

    fn clamp_delays(&mut self) {
        tch::no_grad(|| {
            for layer in self.network.recurrent_layers() {
                let _ = layer.delays.shallow_clone().clamp_min_(0.0);
            }
        });
    }

    /// Readies the network for an evaluation pass: the `original` rounding writes the rounded,
    /// clamped delays into the parameters.
    pub fn begin_evaluation(&mut self) {
        if self.recurrent.eval_delays == EvalDelays::Original {
            tch::no_grad(|| {
                for layer in self.network.recurrent_layers() {
                    let _ = layer.delays.shallow_clone().round_().clamp_min_(0.0);
                }
            });
        }
    }

    /// The kernels an evaluation pass uses.
    pub fn eval_kernels(&self) -> Vec<Tensor> {
        tch::no_grad(|| match self.recurrent.eval_delays {
            EvalDelays::Integer => self.network.kernels(0.0, true),
            EvalDelays::Original => self.network.kernels(self.sigma, false),
        })
    }

    /// One evaluation batch with `kernels`: its mean loss and class scores.
    pub fn evaluate_batch(&self, x: &Tensor, targets: &Tensor, kernels: &[Tensor]) -> Result<(f64, Tensor)> {
        tch::no_grad(|| {
            let output = self.network.forward(x, kernels, false, None)?.output;
            Ok((self.network.loss(&output, targets).double_value(&[]), self.network.class_scores(&output)))
        })
    }

    /// Steps both schedules after an epoch.
    pub fn end_epoch(&mut self) {
        self.lr_w.step();
        self.lr_pos.step();
        self.apply_schedules();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Preset, RecurrentArchitecture};
    use tch::Kind;

    #[test]
    fn sigma_follows_the_spec_schedule() {
        let ssc = RecurrentConfig::preset(RecurrentArchitecture::Ssc);
        assert_eq!(ssc.sigma_at(0, 100), 10.0);
        assert!((ssc.sigma_at(50, 100) - 0.769).abs() < 5e-4);
        assert!((ssc.sigma_at(99, 100) - 0.0623).abs() < 5e-5);
        assert!((ssc.sigma_at(149, 150) - 0.0613).abs() < 5e-5);
    }

    /// `integer` evaluation leaves the delays as they are; `original` rounds them in place.
    #[test]
    fn evaluation_rounds_a_copy_unless_the_original_rounding_is_chosen() {
        for (eval_delays, changes) in [("integer", false), ("original", true)] {
            let overrides = ["n_bins=175", "n_hidden_neurons=6", "n_outputs=3", "epochs=3"].map(String::from).to_vec();
            let overrides = [overrides, vec![format!("recurrent.eval_delays={eval_delays}")]].concat();
            let config = ConfigSource { preset: Some(Preset::DelrecShd), file: None, overrides: &overrides }.load().unwrap();
            let mut trainer = RecurrentTrainer::new(&config, Device::Cpu).unwrap();
            let x = Tensor::rand([8, 2, 4], (Kind::Float, Device::Cpu));
            let labels = crate::model::loss::one_hot(&Tensor::from_slice(&[0i64, 2]), 3);
            trainer.train_step(&x, &labels, None).unwrap();
            let before = trainer.network.recurrent_layers().next().unwrap().delays.copy();
            trainer.begin_evaluation();
            let kernels = trainer.eval_kernels();
            let (loss, _) = trainer.evaluate_batch(&x, &labels, &kernels).unwrap();
            assert!(loss.is_finite());
            let after = &trainer.network.recurrent_layers().next().unwrap().delays;
            assert_eq!(!before.equal(after), changes, "{eval_delays}");
            assert!(after.equal(&before.round().clamp_min(0.0)) || !changes);
        }
    }
}
