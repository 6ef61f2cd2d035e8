//! The paper's training procedure (docs/method.md §4): [`Trainer`] holds the network, its two Adam
//! optimizers and their schedules, and performs one batch step and one end of epoch exactly as
//! the reference orders them. [`run`] drives whole runs; [`eval`] evaluates with integer delays.

pub mod data_parallel;
pub mod eval;
pub mod learner;
pub mod masks;
pub mod optim;
pub mod protocols;
pub mod recurrent;
pub mod run;
pub mod schedule;
pub mod state;

use crate::config::Config;
use crate::model::loss::{class_scores, cross_entropy, hit_rate};
use crate::model::{DropoutMasks, Network};
use anyhow::{bail, Result};
use optim::Adam;
use schedule::{sigma_decays, LrSchedule};
use tch::{Device, Tensor};

/// The loss, when it is finite; otherwise an error raised before any parameter changes.
fn check_finite(loss: f64) -> Result<f64> {
    if !loss.is_finite() {
        bail!("the training loss is {loss}; stopping before this step changes any parameter");
    }
    Ok(loss)
}

/// Loss and accuracy of one batch. The loss is read (its finiteness is checked); the accuracy
/// stays on the device, a 0-dim float64 tensor, until the caller reads many at once.
#[derive(Debug)]
pub struct BatchResult {
    pub loss: f64,
    pub accuracy: Tensor,
}

pub struct Trainer {
    pub config: Config,
    pub network: Network,
    /// Weights (wd), PLIF w (wd), BatchNorm (no wd), at `lr_w` (§4.2).
    pub weights: Adam,
    /// Positions at `lr_pos`, no weight decay; only for `snn_delays`.
    pub positions: Option<Adam>,
    pub lr_w: LrSchedule,
    pub lr_pos: Option<LrSchedule>,
}

impl Trainer {
    /// A seeded network (§1.6) with the reference's optimizer groups and schedules.
    pub fn new(config: &Config, device: Device) -> Trainer {
        let network = Network::new(config, device);
        let derived = config.derived();
        let groups = network.parameter_groups();
        let named = |tensors: &[Tensor]| tensors.iter().map(|t| (network.key_of(t), t.shallow_clone())).collect::<Vec<_>>();
        let weights = Adam::new(
            vec![
                (named(&groups.weights), config.weight_decay),
                (named(&groups.plif_w), config.weight_decay),
                (named(&groups.norm), 0.0),
            ],
            config.lr_w,
        );
        let positions = (!groups.positions.is_empty()).then(|| Adam::new(vec![(named(&groups.positions), 0.0)], derived.lr_pos));
        let lr_w = match config.scheduler_w {
            crate::config::Scheduler::OneCycle => LrSchedule::new(config.scheduler_w, derived.max_lr_w, config.epochs),
            kind => LrSchedule::new(kind, config.lr_w, config.epochs),
        };
        let lr_pos = positions.is_some().then(|| LrSchedule::new(derived.scheduler_pos, derived.lr_pos, derived.t_max_pos));
        let mut trainer = Trainer { config: config.clone(), network, weights, positions, lr_w, lr_pos };
        trainer.apply_schedules();
        trainer
    }

    /// Sets each optimizer's rate (and β1) to its schedule's current value.
    pub fn apply_schedules(&mut self) {
        self.weights.lr = self.lr_w.lr;
        self.weights.beta1 = self.lr_w.beta1();
        if let (Some(adam), Some(schedule)) = (&mut self.positions, &self.lr_pos) {
            adam.lr = schedule.lr;
        }
    }

    /// §4.4: zero gradients, forward, loss, backward, step both optimizers, clamp positions.
    /// The loss is read once, after the backward is queued, and a non-finite loss stops before
    /// any parameter changes.
    pub fn train_step(&mut self, x: &Tensor, targets: &Tensor, masks: DropoutMasks) -> Result<BatchResult> {
        self.zero_grad();
        let (loss, scores) = self.compute_gradients(x, targets, masks, None)?;
        let value = check_finite(loss.double_value(&[]))?;
        self.apply_gradients();
        let accuracy = tch::no_grad(|| hit_rate(&scores, targets));
        Ok(BatchResult { loss: value, accuracy })
    }

    /// Clears the gradients of every optimized parameter.
    pub fn zero_grad(&mut self) {
        self.optimizers_mut().for_each(Adam::zero_grad);
    }

    /// Forward, loss and backward of a batch, leaving the gradients on the parameters; returns
    /// the batch's mean loss and class scores. With `share = Some(s)` the gradients are those
    /// of `s·loss`, this batch's weight in a larger one (a rank's shard of a global batch); an
    /// empty shard gives zero gradients, and still takes part in every collective of the pass.
    pub fn compute_gradients(
        &mut self,
        x: &Tensor,
        targets: &Tensor,
        masks: DropoutMasks,
        share: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        if targets.size()[0] == 0 {
            self.network.idle_train_pass()?;
            return Ok(idle_shard(targets));
        }
        let pass = self.network.forward_train(x, masks)?;
        let scores = class_scores(&pass.output, self.config.loss);
        let loss = cross_entropy(&scores, targets);
        pass.backward(&weighted(&loss, share))?;
        Ok((loss.detach(), scores))
    }

    /// Steps both optimizers with the gradients in place, then clamps the positions.
    pub fn apply_gradients(&mut self) {
        self.optimizers_mut().for_each(Adam::step);
        self.network.clamp_positions();
    }

    /// The weights' optimizer, then the positions' when there is one.
    pub fn optimizers(&self) -> impl Iterator<Item = &Adam> {
        std::iter::once(&self.weights).chain(self.positions.as_ref())
    }

    fn optimizers_mut(&mut self) -> impl Iterator<Item = &mut Adam> {
        std::iter::once(&mut self.weights).chain(self.positions.as_mut())
    }

    /// §4.5 steps 2–3 after epoch `epoch`: step the schedules, then decay sigma.
    pub fn end_epoch(&mut self, epoch: usize) {
        self.lr_w.step();
        if let Some(schedule) = &mut self.lr_pos {
            schedule.step();
        }
        self.apply_schedules();
        let derived = self.config.derived();
        if sigma_decays(epoch, derived.final_sigma_epoch, self.output_sigma()) {
            tch::no_grad(|| {
                for layer in self.network.dcls_layers_mut() {
                    layer.sigma *= derived.sigma_decay;
                }
            });
        }
    }

    /// The output layer's `SIG[0,0,0,0]` (0 for the `snn` model).
    pub fn output_sigma(&self) -> f64 {
        self.network.dcls_layers().last().map_or(0.0, |layer| layer.sigma.double_value(&[0, 0, 0, 0]))
    }

    /// The positions learning rate in force (the configured one when there is no schedule).
    pub fn lr_pos(&self) -> f64 {
        self.lr_pos.as_ref().map_or(self.config.derived().lr_pos, |s| s.lr)
    }
}

/// What an empty shard's pass gives: a zero loss and `(0, classes)` scores.
pub(crate) fn idle_shard(targets: &Tensor) -> (Tensor, Tensor) {
    let zeros = |shape: &[i64]| Tensor::zeros(shape, (tch::Kind::Float, targets.device()));
    (zeros(&[]), zeros(&targets.size()))
}

/// The loss to back-propagate: `share·loss` for a rank's shard of a global batch, else the loss.
pub(crate) fn weighted(loss: &Tensor, share: Option<f64>) -> Tensor {
    share.map_or_else(|| loss.shallow_clone(), |share| loss * share)
}
