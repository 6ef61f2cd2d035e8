//! Run configuration: the reference's hyper-parameters in user units (milliseconds), the three
//! presets of docs/method.md §6, JSON/`key=value` overrides, and every derived value computed in one
//! place ([`Derived`]).
//!
//! Derivations (§6, §1.6, §2.4, §4.6):
//! - kernel size `K = floor(max_delay_ms / time_step_ms)`, plus one when even;
//! - `tau = (init_tau_ms + 1e-9) / time_step_ms` in steps; paddings `K−1` (left), `(K−1)//2` (right);
//! - `sigma_init = K//2`, `final_sigma_epoch = epochs//4`, `α = (0.23/sigma_init)^(1/final_epoch)`;
//! - `lr_pos = 100·lr_w`, `max_lr_w = 5·lr_w`; the non-delay models get `lr_pos = 0`, no position
//!   scheduler, version `max`, `sigma_init = 0`, `final_epoch = 0`.

pub use crate::model::time_conv::Convolution;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// Number of SHD/SSC input channels before binning (the cochlea model's 700 units).
pub const RAW_CHANNELS: usize = 700;
/// Number of mel bands of the GSC features (§5.5).
pub const GSC_MEL_BANDS: usize = 140;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    Shd,
    Ssc,
    Gsc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    /// Learned delays: DCLS synapses with Gaussian taps.
    SnnDelays,
    /// Fixed random integer delays (positions not trained).
    SnnDelaysLr0,
    /// No delays: plain linear synapses.
    Snn,
    /// Learned delays on recurrent connections (DelRec), configured by the `recurrent` section.
    Delrec,
}

/// A starting configuration: a dataset's preset for the paper's feedforward delays, or one of
/// DelRec's recurrent-delay configurations (docs/method.md §6, "Recurrent delays").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    Shd,
    Ssc,
    Gsc,
    DelrecSsc,
    DelrecShd,
}

impl From<Dataset> for Preset {
    fn from(dataset: Dataset) -> Preset {
        match dataset {
            Dataset::Shd => Preset::Shd,
            Dataset::Ssc => Preset::Ssc,
            Dataset::Gsc => Preset::Gsc,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeuronType {
    Lif,
    Plif,
}

/// Where a training batch's dropout masks come from (§2.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskDraw {
    /// One `(B, C)` mask per batch from torch's global generator, as the reference draws it.
    #[default]
    Global,
    /// Each sample's mask from its own seeded stream of (seed, epoch, sample, layer), so that it
    /// does not depend on the batch or on which process of a data-parallel run holds the sample.
    PerSample,
}

/// Which floating-point form of the membrane charge to use (§2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeFormula {
    /// `v − v/τ + x` in every mode (SpikingJelly 2.0.0).
    Spikingjelly2,
    /// The paper-era SpikingJelly: LIF charges `v·(1−1/τ) + x` while training and `v − v/τ + x`
    /// in eval; PLIF charges `v·(1−sigmoid(w)) + x` in both.
    Paper2023,
}

impl ChargeFormula {
    /// Whether the charge multiplies `v` by the kept fraction (instead of subtracting the leak),
    /// for a neuron with a learned (PLIF) or fixed (LIF) rate, in training or eval mode.
    pub fn multiplies(self, learned_rate: bool, train: bool) -> bool {
        self == ChargeFormula::Paper2023 && (learned_rate || train)
    }
}

/// How the neuron layers are computed; both give the same numbers on the CPU (docs/method.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeuronBackend {
    /// One kernel over all time steps, forward and backward, on the CPU or on CUDA (there once it
    /// has matched the CPU kernel bit for bit; otherwise the `ops` path runs and the run says why).
    Fused,
    /// libtorch ops step by step with autograd: the oracle that the fused kernel is tested against.
    Ops,
}

/// How a recurrent-delay layer carries spikes to their arrival steps (docs/method.md "Recurrent
/// delays"); both compute the same sums, in a different order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecurrentBuffer {
    /// The original's formulation: a buffer of future postsynaptic currents, filled by one
    /// `N×N` product per tap and step; the exact path.
    Postsynaptic,
    /// A buffer of future presynaptic kernel values, read through one `N×N` product per step.
    Presynaptic,
    /// The presynaptic sums with a hand-written backward: a few ops per step, no autograd graph.
    Fused,
}

/// DelRec's two configurations (docs/method.md "Recurrent delays", architectures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecurrentArchitecture {
    /// Three recurrent-delay layers, soft reset, τ = 2, triangle surrogate, learned spreads,
    /// a linear readout summed over time.
    Ssc,
    /// A plain LIF layer then a recurrent-delay layer, BatchNorm, hard reset, τ = 1.05, ATan, a
    /// shared width, a non-firing LIF readout.
    Shd,
}

/// The optimizer of a parameter group: Adam with L2 weight decay in the gradient, or AdamW with
/// the decay applied to the parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Adam,
    AdamW,
}

/// How evaluation forms its integer delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalDelays {
    /// Round a copy (clamped at 0) and evaluate with integer taps (σ = 0); training goes on from
    /// the continuous delays.
    Integer,
    /// The original's: round the delays in place (training resumes from them) and evaluate at
    /// the σ in force.
    Original,
}

/// The training of a recurrent-delay network (DelRec's protocol, spec'd in docs/method.md
/// "Recurrent delays").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentConfig {
    pub architecture: RecurrentArchitecture,
    pub buffer: RecurrentBuffer,
    /// Both groups' optimizer; the weights take the top-level `lr_w`, `weight_decay` and
    /// `scheduler_w`, the positions `lr_pos` and the top-level `scheduler_pos`.
    pub optimizer: Optimizer,
    pub lr_pos: f64,
    /// Dropout on each recurrent layer's recurrent current (a `(B, N)` mask fixed over time).
    pub recurrent_dropout: f64,
    /// σ at epoch 0; `σ_e = sigma_init·(sigma_gamma^(sigma_clock/E))^e`.
    pub sigma_init: f64,
    pub sigma_gamma: f64,
    pub sigma_clock: f64,
    /// Clamp the delays at 0 after every optimizer step (else only when evaluating).
    pub clamp_every_step: bool,
    pub eval_delays: EvalDelays,
    /// `false`: recurrence without delays (DelRec's vanilla RSNN): every delay 0 and frozen, σ 0,
    /// so a spike reaches the layer one step later through one tap.
    #[serde(default = "learns")]
    pub learn_delays: bool,
    /// DelRec's SHD training augmentation: every epoch holds each training sample as it is,
    /// shifted per channel and blended with a same-class partner (three times the steps).
    #[serde(default)]
    pub augment: bool,
}

fn learns() -> bool {
    true
}

impl RecurrentConfig {
    /// DelRec's settings for an architecture (spec §7).
    pub fn preset(architecture: RecurrentArchitecture) -> RecurrentConfig {
        let ssc = RecurrentConfig {
            architecture,
            buffer: RecurrentBuffer::Fused,
            optimizer: Optimizer::Adam,
            lr_pos: 5e-2,
            recurrent_dropout: 0.3,
            sigma_init: 10.0,
            sigma_gamma: 0.95,
            sigma_clock: 100.0,
            clamp_every_step: false,
            eval_delays: EvalDelays::Integer,
            learn_delays: true,
            augment: false,
        };
        match architecture {
            RecurrentArchitecture::Ssc => ssc,
            RecurrentArchitecture::Shd => RecurrentConfig {
                optimizer: Optimizer::AdamW,
                recurrent_dropout: 0.2,
                clamp_every_step: true,
                augment: true,
                ..ssc
            },
        }
    }

    /// σ at the start of 0-based `epoch` of an `epochs`-epoch run (0 without learned delays).
    pub fn sigma_at(&self, epoch: usize, epochs: usize) -> f64 {
        if !self.learn_delays {
            return 0.0;
        }
        self.sigma_init * self.sigma_gamma.powf(self.sigma_clock / epochs as f64).powf(epoch as f64)
    }

    /// The derived values that mean something else for a recurrent-delay model: one-cycle peaks
    /// at `lr_w`, positions learn at `lr_pos` on `scheduler_pos`, σ starts at `sigma_init`, and
    /// τ (in steps) is the recurrent neurons'.
    fn derive(&self, derived: Derived, config: &Config) -> Derived {
        Derived {
            tau_steps: self.architecture.recurrent_neuron().tau,
            sigma_init: self.sigma_init,
            lr_pos: self.lr_pos,
            max_lr_w: config.lr_w,
            scheduler_pos: config.scheduler_pos,
            learns_positions: true,
            ..derived
        }
    }

    /// The hidden blocks the architecture has.
    pub fn hidden_layers(&self) -> usize {
        match self.architecture {
            RecurrentArchitecture::Ssc => 3,
            RecurrentArchitecture::Shd => 2,
        }
    }

    /// Checks the section's values; messages name the key as `recurrent.<key>`.
    fn validate(&self) -> Result<()> {
        for (key, value) in [("lr_pos", self.lr_pos), ("sigma_gamma", self.sigma_gamma), ("sigma_clock", self.sigma_clock)] {
            ensure!(value.is_finite() && value > 0.0, "config key `recurrent.{key}` must be a positive number, got {value}");
        }
        ensure!(
            self.sigma_init.is_finite() && self.sigma_init >= 0.0,
            "config key `recurrent.sigma_init` must be a non-negative number, got {}",
            self.sigma_init
        );
        ensure!(
            (0.0..1.0).contains(&self.recurrent_dropout),
            "config key `recurrent.recurrent_dropout` must lie in [0, 1), got {}",
            self.recurrent_dropout
        );
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    Sum,
    Mean,
    Max,
    SpikeCount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelVersion {
    Gauss,
    Max,
    V1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    OneCycle,
    CosineA,
    None,
}

/// Event-to-frame integration of SHD/SSC spikes (§5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Integration {
    /// SpikingJelly 2.0's fixed grid shifted to the first spike.
    Grid,
    /// The paper-era event-anchored float16 windows, with no empty frames.
    Paper2023,
    /// DelRec's SSC binning: `np.digitize` against 250 edges evenly spaced over [0, 1.4 s], so
    /// every sample has 250 frames and frame 0 stays empty.
    Digitize,
}

/// Which data selects the best epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// The test split (SHD has no validation file; the paper selected on test).
    Test,
    /// A `valid_fraction` of the training split, held out by seed.
    Holdout,
    /// The dataset's own validation split (SSC `valid` file, GSC `validation_list.txt`).
    File,
}

/// The user-facing hyper-parameters. Field names follow the paper; units are milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dataset: Dataset,
    pub data_dir: String,
    pub integration: Integration,
    pub validation: Validation,
    pub valid_fraction: f64,
    pub seed: u64,
    pub model_type: ModelType,
    pub time_step_ms: f64,
    pub n_bins: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub neuron: NeuronType,
    pub neuron_backend: NeuronBackend,
    pub charge_formula: ChargeFormula,
    pub init_tau_ms: f64,
    pub n_hidden_layers: usize,
    pub n_hidden_neurons: usize,
    /// Output neurons (classes); `null` takes the dataset's class count (20 SHD, 35 SSC/GSC).
    pub n_outputs: Option<usize>,
    pub dropout_p: f64,
    /// `global` (the reference's) or `per_sample` (needed by data-parallel runs).
    #[serde(default)]
    pub dropout_masks: MaskDraw,
    pub v_threshold: f64,
    pub surrogate_alpha: f64,
    pub loss: Loss,
    pub weight_decay: f64,
    pub lr_w: f64,
    pub scheduler_w: Scheduler,
    pub scheduler_pos: Scheduler,
    pub dcls_version: KernelVersion,
    pub kernel_count: usize,
    pub max_delay_ms: f64,
    /// How DCLS synapses convolve over time: `fft` (fast, float32-rounding close) or `direct`
    /// (libtorch's conv1d, bitwise the reference's); see docs/method.md, "Time convolution".
    pub convolution: Convolution,
    /// Set the DCLS kernel's subnormal taps to zero before the convolution (docs/method.md,
    /// "Subnormal taps"); `false` keeps the reference's kernel bit for bit.
    pub flush_subnormal_taps: bool,
    pub augment: bool,
    pub tn_mask_aug_proba: f64,
    pub cutmix_aug_proba: f64,
    pub rnoise_sig: f64,
    /// The recurrent-delay model's settings: present exactly when `model_type` is `delrec`.
    #[serde(default)]
    pub recurrent: Option<RecurrentConfig>,
}

/// Values computed from [`Config`]; never set directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    pub n_inputs: usize,
    pub n_outputs: usize,
    pub kernel_size: usize,
    pub max_delay_steps: usize,
    pub tau_steps: f64,
    pub left_padding: usize,
    pub right_padding: usize,
    pub position_limit: f64,
    pub init_pos_low: f64,
    pub init_pos_high: f64,
    pub kernel_version: KernelVersion,
    pub sigma_init: f64,
    pub final_sigma_epoch: usize,
    pub sigma_decay: f64,
    pub lr_pos: f64,
    pub max_lr_w: f64,
    pub scheduler_pos: Scheduler,
    pub t_max_pos: usize,
    pub output_v_threshold: f64,
    pub time_mask_size: usize,
    pub neuron_mask_size: usize,
    pub learns_positions: bool,
}

impl Config {
    /// The reference's best configuration for a dataset (docs/method.md §6).
    pub fn preset(dataset: Dataset) -> Config {
        let shd = Config {
            dataset,
            data_dir: "Datasets/SHD".into(),
            integration: Integration::Grid,
            validation: Validation::Test,
            valid_fraction: 0.2,
            seed: 0,
            model_type: ModelType::SnnDelays,
            time_step_ms: 10.0,
            n_bins: 5,
            epochs: 150,
            batch_size: 256,
            neuron: NeuronType::Lif,
            neuron_backend: NeuronBackend::Fused,
            charge_formula: ChargeFormula::Spikingjelly2,
            init_tau_ms: 10.05,
            n_hidden_layers: 2,
            n_hidden_neurons: 256,
            n_outputs: None,
            dropout_p: 0.4,
            dropout_masks: MaskDraw::Global,
            v_threshold: 1.0,
            surrogate_alpha: 5.0,
            loss: Loss::Sum,
            weight_decay: 1e-5,
            lr_w: 1e-3,
            scheduler_w: Scheduler::OneCycle,
            scheduler_pos: Scheduler::CosineA,
            dcls_version: KernelVersion::Gauss,
            kernel_count: 1,
            max_delay_ms: 250.0,
            convolution: Convolution::Fft,
            flush_subnormal_taps: true,
            augment: false,
            tn_mask_aug_proba: 0.65,
            cutmix_aug_proba: 0.5,
            rnoise_sig: 0.0,
            recurrent: None,
        };
        let large = |data_dir: &str, epochs| Config {
            data_dir: data_dir.into(),
            validation: Validation::File,
            epochs,
            batch_size: 128,
            init_tau_ms: 15.0,
            n_hidden_layers: 3,
            n_hidden_neurons: 512,
            dropout_p: 0.25,
            max_delay_ms: 300.0,
            ..shd.clone()
        };
        match dataset {
            Dataset::Shd => shd,
            Dataset::Ssc => large("Datasets/SSC", 60),
            Dataset::Gsc => large("Datasets/GSC", 100),
        }
    }

    /// The starting configuration of a preset: a dataset's, or DelRec's for SSC (three
    /// recurrent-delay layers, 250 digitized frames, the `valid` file, 100 epochs) or SHD (one
    /// recurrent-delay layer after a plain one, 10 ms frames, 20 % of train held out, 150 epochs).
    pub fn of_preset(preset: Preset) -> Config {
        let delrec = |dataset: Dataset, architecture: RecurrentArchitecture| Config {
            model_type: ModelType::Delrec,
            neuron_backend: NeuronBackend::Ops,
            charge_formula: ChargeFormula::Paper2023,
            n_hidden_neurons: 256,
            weight_decay: 1e-5,
            scheduler_w: Scheduler::OneCycle,
            recurrent: Some(RecurrentConfig::preset(architecture)),
            ..Config::preset(dataset)
        };
        match preset {
            Preset::Shd => Config::preset(Dataset::Shd),
            Preset::Ssc => Config::preset(Dataset::Ssc),
            Preset::Gsc => Config::preset(Dataset::Gsc),
            Preset::DelrecSsc => Config {
                integration: Integration::Digitize,
                time_step_ms: 1400.0 / 249.0,
                epochs: 100,
                batch_size: 128,
                n_hidden_layers: 3,
                dropout_p: 0.1,
                lr_w: 1e-3,
                scheduler_pos: Scheduler::OneCycle,
                ..delrec(Dataset::Ssc, RecurrentArchitecture::Ssc)
            },
            Preset::DelrecShd => Config {
                validation: Validation::Holdout,
                epochs: 150,
                batch_size: 256,
                n_hidden_layers: 2,
                dropout_p: 0.4,
                lr_w: 5e-3,
                scheduler_pos: Scheduler::CosineA,
                ..delrec(Dataset::Shd, RecurrentArchitecture::Shd)
            },
        }
    }

    pub fn learns_positions(&self) -> bool {
        self.model_type == ModelType::SnnDelays
    }

    /// The `recurrent` section, which a recurrent-delay model needs.
    pub fn recurrent_settings(&self) -> Result<&RecurrentConfig> {
        self.recurrent.as_ref().context("model_type `delrec` needs the config's `recurrent` section")
    }

    /// Refuses a recurrent-delay model where a command handles only the feedforward ones.
    pub fn check_feedforward(&self) -> Result<()> {
        ensure!(
            self.model_type != ModelType::Delrec,
            "this command handles the feedforward models (model_type snn_delays, snn_delays_lr0, snn); model_type `delrec` (recurrent delays) is trained by `snn-delays train`, evaluated by `eval`, initialised by `init`, exported by `export` and run by `infer`"
        );
        Ok(())
    }

    /// Whether the synapses are DCLS delay convolutions (learned or fixed).
    pub fn has_delays(&self) -> bool {
        matches!(self.model_type, ModelType::SnnDelays | ModelType::SnnDelaysLr0)
    }

    /// Checks every value; the message names the key and the offending value.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("time_step_ms", self.time_step_ms),
            ("init_tau_ms", self.init_tau_ms),
            ("max_delay_ms", self.max_delay_ms),
            ("lr_w", self.lr_w),
            ("surrogate_alpha", self.surrogate_alpha),
            ("v_threshold", self.v_threshold),
        ];
        for (key, value) in positive {
            ensure!(value.is_finite() && value > 0.0, "config key `{key}` must be a positive number, got {value}");
        }
        let counts = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("n_bins", self.n_bins),
            ("n_hidden_neurons", self.n_hidden_neurons),
            ("kernel_count", self.kernel_count),
        ];
        for (key, value) in counts {
            ensure!(value > 0, "config key `{key}` must be at least 1, got {value}");
        }
        ensure!(
            self.n_outputs.is_none_or(|n| n >= 2),
            "config key `n_outputs` must be at least 2 classes (or null for the dataset's), got {}",
            self.n_outputs.unwrap_or(0)
        );
        ensure!(RAW_CHANNELS.is_multiple_of(self.n_bins), "config key `n_bins` must divide {RAW_CHANNELS}, got {}", self.n_bins);
        ensure!(
            self.init_tau_ms > self.time_step_ms,
            "config key `init_tau_ms` ({}) must exceed `time_step_ms` ({}): tau in steps must be above 1",
            self.init_tau_ms,
            self.time_step_ms
        );
        ensure!(
            self.max_delay_ms >= self.time_step_ms,
            "config key `max_delay_ms` ({}) must be at least `time_step_ms` ({})",
            self.max_delay_ms,
            self.time_step_ms
        );
        ensure!((0.0..1.0).contains(&self.dropout_p), "config key `dropout_p` must lie in [0, 1), got {}", self.dropout_p);
        for (key, value) in [("tn_mask_aug_proba", self.tn_mask_aug_proba), ("cutmix_aug_proba", self.cutmix_aug_proba)] {
            ensure!((0.0..=1.0).contains(&value), "config key `{key}` must lie in [0, 1], got {value}");
        }
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "config key `weight_decay` must be a non-negative number, got {}",
            self.weight_decay
        );
        ensure!(
            self.rnoise_sig.is_finite() && self.rnoise_sig >= 0.0,
            "config key `rnoise_sig` must be a non-negative number, got {}",
            self.rnoise_sig
        );
        ensure!(
            self.valid_fraction > 0.0 && self.valid_fraction < 1.0,
            "config key `valid_fraction` must lie in (0, 1), got {}",
            self.valid_fraction
        );
        ensure!(
            !(self.dataset == Dataset::Shd && self.validation == Validation::File),
            "config key `validation` is `file`, but SHD has no validation file: use `test` (the paper) or `holdout`"
        );
        ensure!(
            self.scheduler_pos != Scheduler::OneCycle || self.model_type == ModelType::Delrec,
            "config key `scheduler_pos` must be `cosine_a` or `none`, got `one_cycle` (one-cycle positions are DelRec's)"
        );
        ensure!(
            self.integration != Integration::Digitize || self.dataset != Dataset::Gsc,
            "config key `integration` is `digitize`, which bins spike files; GSC has audio"
        );
        self.validate_recurrent()
    }

    /// The `recurrent` section is there exactly for `delrec`, and fixes the number of layers.
    fn validate_recurrent(&self) -> Result<()> {
        match (&self.recurrent, self.model_type) {
            (None, ModelType::Delrec) => bail!("config key `recurrent` is missing: model_type `delrec` needs its settings"),
            (None, _) => Ok(()),
            (Some(_), model) if model != ModelType::Delrec => {
                bail!("config key `recurrent` is set, but model_type is `{}`; set it to null or use `delrec`", name_of(&model))
            }
            (Some(recurrent), _) => {
                ensure!(
                    self.n_hidden_layers == recurrent.hidden_layers(),
                    "config key `n_hidden_layers` must be {} for recurrent.architecture `{}`, got {}",
                    recurrent.hidden_layers(),
                    name_of(&recurrent.architecture),
                    self.n_hidden_layers
                );
                recurrent.validate()
            }
        }
    }

    /// Every derived value, from the current fields (docs/method.md §6).
    pub fn derived(&self) -> Derived {
        let steps = (self.max_delay_ms / self.time_step_ms).floor() as usize;
        let kernel_size = if steps.is_multiple_of(2) { steps + 1 } else { steps };
        let half = kernel_size / 2;
        let learns = self.learns_positions();
        let epochs_quarter = self.epochs / 4;
        let (kernel_version, sigma_init, final_sigma_epoch) =
            if learns { (self.dcls_version, half as f64, epochs_quarter) } else { (KernelVersion::Max, 0.0, 0) };
        let sigma_decay = if final_sigma_epoch > 0 { (0.23 / sigma_init).powf(1.0 / final_sigma_epoch as f64) } else { 1.0 };
        let n_inputs = match self.dataset {
            Dataset::Gsc => GSC_MEL_BANDS,
            Dataset::Shd | Dataset::Ssc => RAW_CHANNELS / self.n_bins,
        };
        let derived = Derived {
            n_inputs,
            n_outputs: self.n_outputs.unwrap_or(match self.dataset {
                Dataset::Shd => 20,
                Dataset::Ssc | Dataset::Gsc => 35,
            }),
            kernel_size,
            max_delay_steps: kernel_size - 1,
            tau_steps: (self.init_tau_ms + 1e-9) / self.time_step_ms,
            left_padding: kernel_size - 1,
            right_padding: (kernel_size - 1) / 2,
            position_limit: half as f64,
            init_pos_low: (-(kernel_size as i64)).div_euclid(2) as f64,
            init_pos_high: half as f64,
            kernel_version,
            sigma_init,
            final_sigma_epoch,
            sigma_decay,
            lr_pos: if learns { 100.0 * self.lr_w } else { 0.0 },
            max_lr_w: 5.0 * self.lr_w,
            scheduler_pos: if learns { self.scheduler_pos } else { Scheduler::None },
            t_max_pos: self.epochs,
            output_v_threshold: if self.loss == Loss::SpikeCount { 2.0 } else { 1e9 },
            time_mask_size: kernel_size / 3,
            neuron_mask_size: n_inputs / 5,
            learns_positions: learns,
        };
        match &self.recurrent {
            Some(recurrent) if self.model_type == ModelType::Delrec => recurrent.derive(derived, self),
            _ => derived,
        }
    }

    /// The effective configuration as JSON: the fields plus a read-only `derived` section.
    pub fn to_json(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("config serialises");
        let derived = serde_json::to_value(self.derived()).expect("derived values serialise");
        value.as_object_mut().expect("config is an object").insert("derived".into(), derived);
        value
    }
}

/// The configuration spelling of an enum value (`shd`, `snn_delays`, …).
pub fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// The key a run's `config.json` adds for the run's identity; not a configuration value.
pub const RUN_ID_KEY: &str = "run_id";

/// How a configuration is assembled: a preset, then a JSON file, then `key=value` overrides.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource<'a> {
    pub preset: Option<Preset>,
    pub file: Option<&'a Path>,
    pub overrides: &'a [String],
}

impl ConfigSource<'_> {
    /// Builds and validates the configuration. A `derived` section in the file must agree with
    /// the values derived from the file's own fields (overrides then change both).
    pub fn load(&self) -> Result<Config> {
        let file = self.file.map(read_json_object).transpose()?;
        let origin = self.file.map(|path| format!("config file {}", path.display()));
        load_fields(self.preset, file.zip(origin), self.overrides)
    }

    /// A configuration as `snn-delays config` prints it (stored with a model), from `origin`
    /// (for messages), then `overrides`.
    pub fn from_printed(text: &str, origin: &str, overrides: &[String]) -> Result<Config> {
        match serde_json::from_str(text).with_context(|| format!("{origin} is not valid JSON"))? {
            Value::Object(object) => load_fields(None, Some((object, origin.to_string())), overrides),
            _ => bail!("{origin} must hold a JSON object"),
        }
    }
}

/// Preset, then the fields of a JSON object (with where it came from), then `key=value`.
fn load_fields(preset: Option<Preset>, file: Option<(Map<String, Value>, String)>, overrides: &[String]) -> Result<Config> {
    let preset = match (preset, &file) {
        (Some(preset), _) => preset,
        (None, Some((object, _))) => match object.get("dataset") {
            Some(value) => parse_field::<Dataset>("dataset", value.clone())?.into(),
            None => Preset::Shd,
        },
        (None, None) => Preset::Shd,
    };
    let mut fields = match serde_json::to_value(Config::of_preset(preset)) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("a preset is a JSON object"),
    };
    let mut stated_derived = None;
    let origin = file.as_ref().map(|(_, origin)| origin.clone()).unwrap_or_default();
    if let Some((object, origin)) = file {
        for (key, value) in object {
            if key == "derived" {
                stated_derived = Some(value);
            } else if key == RUN_ID_KEY {
                continue;
            } else {
                set_field(&mut fields, &key, value).with_context(|| format!("in {origin}"))?;
            }
        }
    }
    if let Some(stated) = stated_derived {
        let from_file: Config = parse_field("config", Value::Object(fields.clone()))?;
        check_derived(&from_file, stated, &origin)?;
    }
    for assignment in overrides {
        let (key, raw) = assignment.split_once('=').with_context(|| format!("--set expects key=value, got `{assignment}`"))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        set_field(&mut fields, key.trim(), value).with_context(|| format!("in --set {assignment}"))?;
    }
    let config: Config = parse_field("config", Value::Object(fields))?;
    config.validate()?;
    Ok(config)
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    match serde_json::from_str(&text).with_context(|| format!("config file {} is not valid JSON", path.display()))? {
        Value::Object(map) => Ok(map),
        _ => bail!("config file {} must hold a JSON object", path.display()),
    }
}

fn parse_field<T: serde::de::DeserializeOwned>(key: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("invalid config key `{key}`: {e}"))
}

/// Replaces one field, checking that the key exists and that the value has the field's type; a
/// dotted key (`recurrent.buffer`) replaces a field of a section.
fn set_field(fields: &mut Map<String, Value>, key: &str, value: Value) -> Result<()> {
    if let Some((section, inner)) = key.split_once('.') {
        let Some(Value::Object(mut map)) = fields.get(section).cloned() else {
            bail!("config key `{section}` holds no settings here, so `{key}` cannot be set");
        };
        let Some(slot) = map.get(inner) else {
            let known: Vec<&str> = map.keys().map(String::as_str).collect();
            bail!("unknown config key `{key}`; known keys of `{section}`: {}", known.join(", "));
        };
        map.insert(inner.to_string(), coerce_like(slot, value));
        return set_field(fields, section, Value::Object(map));
    }
    let Some(slot) = fields.get_mut(key) else {
        let known: Vec<&str> = fields.keys().map(String::as_str).collect();
        bail!("unknown config key `{key}`; known keys: {}", known.join(", "));
    };
    let value = coerce_like(slot, value);
    let mut probe = fields.clone();
    probe.insert(key.to_string(), value.clone());
    parse_field::<Config>(key, Value::Object(probe))?;
    fields.insert(key.to_string(), value);
    Ok(())
}

/// `--set seed=3` parses as an integer; a float field given an integer keeps float semantics.
fn coerce_like(slot: &Value, value: Value) -> Value {
    match (slot, &value) {
        (Value::Number(old), Value::Number(new)) if old.is_f64() && !new.is_f64() => {
            new.as_f64().map(Value::from).unwrap_or(value)
        }
        _ => value,
    }
}

fn check_derived(config: &Config, stated: Value, origin: &str) -> Result<()> {
    let actual = serde_json::to_value(config.derived()).expect("derived values serialise");
    let (Value::Object(stated), Value::Object(actual)) = (stated, actual) else {
        bail!("{origin}: `derived` must be a JSON object");
    };
    let mut conflicts = Vec::new();
    for (key, value) in &stated {
        match actual.get(key) {
            Some(expected) if numbers_equal(expected, value) => {}
            Some(expected) => conflicts.push(format!("{key}: file says {value}, the fields give {expected}")),
            None => conflicts.push(format!("{key}: not a derived value")),
        }
    }
    ensure!(
        conflicts.is_empty(),
        "{origin}: its `derived` section contradicts its fields ({}); edit the fields and drop `derived`",
        conflicts.join("; ")
    );
    Ok(())
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(preset: Dataset, overrides: &[&str]) -> Result<Config> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        ConfigSource { preset: Some(preset.into()), file: None, overrides: &overrides }.load()
    }

    #[test]
    fn presets_derive_the_reference_values() {
        let shd = Config::preset(Dataset::Shd).derived();
        assert_eq!((shd.kernel_size, shd.left_padding, shd.right_padding), (25, 24, 12));
        assert_eq!((shd.init_pos_low, shd.init_pos_high, shd.position_limit), (-13.0, 12.0, 12.0));
        assert_eq!((shd.sigma_init, shd.final_sigma_epoch), (12.0, 37));
        assert_eq!(shd.tau_steps, 1.0050000001000001);
        assert_eq!(shd.sigma_decay, 0.8986329531637871);
        assert_eq!((shd.n_inputs, shd.n_outputs, shd.lr_pos, shd.max_lr_w), (140, 20, 0.1, 0.005));
        assert_eq!(shd.time_mask_size, 8);
        let ssc = Config::preset(Dataset::Ssc).derived();
        assert_eq!((ssc.kernel_size, ssc.init_pos_low, ssc.final_sigma_epoch), (31, -16.0, 15));
        assert_eq!((ssc.tau_steps, ssc.sigma_decay), (1.5000000001, 0.7569068549637135));
        let gsc = Config::preset(Dataset::Gsc).derived();
        assert_eq!((gsc.final_sigma_epoch, gsc.sigma_decay, gsc.neuron_mask_size), (25, 0.8461073409690958, 28));
    }

    #[test]
    fn non_delay_models_derive_fixed_kernels() {
        let lr0 = load(Dataset::Shd, &["model_type=snn_delays_lr0"]).unwrap().derived();
        assert_eq!((lr0.kernel_version, lr0.sigma_init, lr0.lr_pos), (KernelVersion::Max, 0.0, 0.0));
        assert_eq!((lr0.final_sigma_epoch, lr0.scheduler_pos), (0, Scheduler::None));
    }

    #[test]
    fn overrides_apply_and_bad_values_name_their_key() {
        let config = load(Dataset::Ssc, &["seed=7", "dropout_p=0.5", "lr_w=1"]).unwrap();
        assert_eq!((config.seed, config.dropout_p, config.lr_w), (7, 0.5, 1.0));
        let cases = [
            ("init_tau_ms=5", "init_tau_ms"),
            ("n_bins=3", "n_bins"),
            ("dropout_p=1", "dropout_p"),
            ("model_type=cnn", "model_type"),
            ("loss=hinge", "loss"),
            ("colour=red", "colour"),
            ("seed=-1", "seed"),
        ];
        for (assignment, key) in cases {
            let message = format!("{:#}", load(Dataset::Shd, &[assignment]).unwrap_err());
            assert!(message.contains(key), "{assignment}: {message}");
        }
    }

    #[test]
    fn printed_config_round_trips_and_contradictions_are_refused() {
        let dir = std::env::temp_dir().join(format!("snn-delays-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.json");
        let config = load(Dataset::Gsc, &["epochs=8"]).unwrap();
        std::fs::write(&path, config.to_json().to_string()).unwrap();
        let source = ConfigSource { preset: None, file: Some(&path), overrides: &[] };
        assert_eq!(source.load().unwrap(), config);
        let overrides = ["epochs=1".to_string()];
        let overridden = ConfigSource { preset: None, file: Some(&path), overrides: &overrides }.load().unwrap();
        assert_eq!((overridden.epochs, overridden.derived().final_sigma_epoch), (1, 0));
        let mut edited = config.to_json();
        edited["derived"]["kernel_size"] = Value::from(7);
        std::fs::write(&path, edited.to_string()).unwrap();
        let message = format!("{:#}", source.load().unwrap_err());
        assert!(message.contains("kernel_size"), "{message}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
