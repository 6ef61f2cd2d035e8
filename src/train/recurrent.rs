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
use super::BatchResult;
use crate::config::{EvalDelays, Optimizer, RecurrentConfig};
use crate::model::loss::hit_rate;
use crate::model::recurrent::network::{RecurrentNetwork, Widths};
use anyhow::{bail, Result};
use tch::{Device, Tensor};

pub struct RecurrentTrainer {
    pub config: RecurrentConfig,
    pub epochs: usize,
    pub network: RecurrentNetwork,
    pub weights: Adam,
    pub positions: Adam,
    pub lr_w: LrSchedule,
    pub lr_pos: LrSchedule,
    /// The kernel width σ in force.
    pub sigma: f64,
}

impl RecurrentTrainer {
    /// A network of `widths` seeded from `seed`, with DelRec's optimizer groups and schedules for
    /// an `epochs`-epoch run, at epoch 0.
    pub fn new(config: &RecurrentConfig, widths: Widths, epochs: usize, seed: i64, device: Device) -> RecurrentTrainer {
        let network = RecurrentNetwork::new(config.architecture, widths, config.buffer, seed, device);
        let groups = network.groups();
        let named = |tensors: &[Tensor]| tensors.iter().map(|t| (key_of(&network, t), t.shallow_clone())).collect::<Vec<_>>();
        let optimizer = |adam: Adam| if config.optimizer == Optimizer::AdamW { adam.decoupled() } else { adam };
        let weights =
            optimizer(Adam::new(vec![(named(&groups.weights), config.weight_decay), (named(&groups.norm), 0.0)], config.lr_w));
        let positions = optimizer(Adam::new(vec![(named(&groups.positions), 0.0)], config.lr_pos));
        let mut trainer = RecurrentTrainer {
            config: config.clone(),
            epochs,
            network,
            weights,
            positions,
            lr_w: LrSchedule::new(config.scheduler_w, config.lr_w, epochs),
            lr_pos: LrSchedule::new(config.scheduler_pos, config.lr_pos, epochs),
            sigma: config.sigma_at(0, epochs),
        };
        trainer.apply_schedules();
        trainer
    }

    /// Sets each optimizer's rate and β1 to its schedule's current values.
    fn apply_schedules(&mut self) {
        for (adam, schedule) in [(&mut self.weights, &self.lr_w), (&mut self.positions, &self.lr_pos)] {
            adam.lr = schedule.lr;
            adam.beta1 = schedule.beta1();
        }
    }

    /// Sets σ for 0-based `epoch`.
    pub fn begin_epoch(&mut self, epoch: usize) {
        self.sigma = self.config.sigma_at(epoch, self.epochs);
    }

    /// One batch: forward with the given dropout masks (drawn when `None`), loss, backward, both
    /// optimizers, the clamp. A non-finite loss stops before any parameter changes.
    pub fn train_step(&mut self, x: &Tensor, labels: &Tensor, masks: Option<&[Tensor]>) -> Result<BatchResult> {
        let kernels = self.network.kernels(self.sigma, false);
        let output = self.network.forward(x, &kernels, true, masks)?;
        let loss = self.network.loss(&output, labels);
        self.weights.zero_grad();
        self.positions.zero_grad();
        loss.backward();
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            bail!("the training loss is {value}; stopping before this step changes any parameter");
        }
        self.weights.step();
        self.positions.step();
        if self.config.clamp_every_step {
            self.clamp_delays();
        }
        let accuracy = tch::no_grad(|| hit_rate(&self.network.class_scores(&output), &self.one_hot(labels)));
        Ok(BatchResult { loss: value, accuracy })
    }

    fn one_hot(&self, labels: &Tensor) -> Tensor {
        crate::model::loss::one_hot(labels, self.network.readout.linear.weight.size()[0])
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
        if self.config.eval_delays == EvalDelays::Original {
            tch::no_grad(|| {
                for layer in self.network.recurrent_layers() {
                    let _ = layer.delays.shallow_clone().round_().clamp_min_(0.0);
                }
            });
        }
    }

    /// The kernels an evaluation pass uses.
    pub fn eval_kernels(&self) -> Vec<Tensor> {
        tch::no_grad(|| match self.config.eval_delays {
            EvalDelays::Integer => self.network.kernels(0.0, true),
            EvalDelays::Original => self.network.kernels(self.sigma, false),
        })
    }

    /// One evaluation batch with `kernels`: its mean loss and class scores.
    pub fn evaluate_batch(&self, x: &Tensor, labels: &Tensor, kernels: &[Tensor]) -> Result<(f64, Tensor)> {
        tch::no_grad(|| {
            let output = self.network.forward(x, kernels, false, None)?;
            Ok((self.network.loss(&output, labels).double_value(&[]), self.network.class_scores(&output)))
        })
    }

    /// Steps both schedules after an epoch.
    pub fn end_epoch(&mut self) {
        self.lr_w.step();
        self.lr_pos.step();
        self.apply_schedules();
    }
}

/// The variable's name in the network's store.
fn key_of(network: &RecurrentNetwork, variable: &Tensor) -> String {
    crate::checkpoint::state_dict(&network.vs)
        .into_iter()
        .find(|(_, t)| t.data_ptr() == variable.data_ptr())
        .map(|(key, _)| key)
        .expect("the variable belongs to this network")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecurrentArchitecture;
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
        let widths = Widths { inputs: 4, hidden: 6, outputs: 3 };
        for (eval_delays, changes) in [(EvalDelays::Integer, false), (EvalDelays::Original, true)] {
            let config = RecurrentConfig { eval_delays, ..RecurrentConfig::preset(RecurrentArchitecture::Shd) };
            let mut trainer = RecurrentTrainer::new(&config, widths, 3, 0, Device::Cpu);
            let x = Tensor::rand([8, 2, 4], (Kind::Float, Device::Cpu));
            let labels = Tensor::from_slice(&[0i64, 2]);
            trainer.train_step(&x, &labels, None).unwrap();
            let before = trainer.network.recurrent_layers().next().unwrap().delays.copy();
            trainer.begin_evaluation();
            let kernels = trainer.eval_kernels();
            let (loss, _) = trainer.evaluate_batch(&x, &labels, &kernels).unwrap();
            assert!(loss.is_finite());
            let after = &trainer.network.recurrent_layers().next().unwrap().delays;
            assert_eq!(!before.equal(after), changes, "{eval_delays:?}");
            assert!(after.equal(&before.round().clamp_min(0.0)) || !changes);
        }
    }
}
