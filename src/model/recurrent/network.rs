//! DelRec's two networks (docs/method.md "Recurrent delays", architectures), on `(T, B, C)`:
//!
//! - `ssc`: three blocks of Linear (bias) → dropout on the current (0.1 in the preset) →
//!   recurrent-delay LIF layer (soft reset, τ = 2, triangle surrogate, a learned spread per
//!   neuron); then a Linear readout at every step, scored as `Σ_t out(t)` (logits).
//! - `shd`: Linear → BatchNorm → plain LIF → dropout on the spikes (0.4), then Linear → BatchNorm
//!   → recurrent-delay LIF layer (hard reset, τ = 1.05, detached reset, ATan α = 5, a shared
//!   width) → dropout; then Linear → a LIF that never fires (threshold 1e8), scored as
//!   `Σ_t softmax(v(t))`.
//!
//! Every recurrent layer has recurrent dropout on its recurrent current (0.3 `ssc`, 0.2 `shd` in
//! the presets). A fused layer ([`super::fused`]) leaves a cut in the pass, which
//! [`RecurrentPass::backward`] runs after autograd.
//! A training pass takes one `(B, C)` mask per dropout in [`RecurrentNetwork::mask_plan`] order,
//! or draws them in that order. Initialisation (from the seed): Linear layers as PyTorch's
//! defaults (`ssc`) or Kaiming-uniform for ReLU weights (`shd`); W orthogonal; delays
//! `|N(0,1)|·12` (`ssc`) or `U(10, 30)` (`shd`), clamped at 0; spread logits 0.

use super::fused::RecurrentCut;
use super::RecurrentDelays;
use crate::checkpoint::{self, keys};
pub use crate::config::RecurrentArchitecture as Architecture;
use crate::config::{ChargeFormula, Config, NeuronBackend, RecurrentBuffer};
use crate::model::global_norm::{GlobalNormCut, GlobalSum};
use crate::model::layers::{Linear, MultiStepDropout, TimeBatchNorm};
use crate::model::loss::{cross_entropy, Scoring};
use crate::model::neuron::step::{Reset, StepLif, Surrogate, Triangle};
use crate::model::neuron::{ATan, Leak, MultiStepLif, Readout};
use anyhow::{ensure, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// The widths of a network: input channels, hidden neurons per layer and classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widths {
    pub inputs: i64,
    pub hidden: i64,
    pub outputs: i64,
}

/// Everything that fixes a network's structure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecurrentShape {
    pub architecture: Architecture,
    pub widths: Widths,
    /// The blocks' dropout: on the current (`ssc`) or on the spikes (`shd`).
    pub dropout: f64,
    pub recurrent_dropout: f64,
    pub buffer: RecurrentBuffer,
    /// `false`: delays (and spreads) are 0 and not trained.
    pub learn_delays: bool,
}

impl RecurrentShape {
    /// The shape a `delrec` configuration describes.
    pub fn of(config: &Config) -> Result<RecurrentShape> {
        let recurrent = config.recurrent_settings()?;
        let derived = config.derived();
        Ok(RecurrentShape {
            architecture: recurrent.architecture,
            widths: Widths {
                inputs: derived.n_inputs as i64,
                hidden: config.n_hidden_neurons as i64,
                outputs: derived.n_outputs as i64,
            },
            dropout: config.dropout_p,
            recurrent_dropout: recurrent.recurrent_dropout,
            buffer: recurrent.buffer,
            learn_delays: recurrent.learn_delays,
        })
    }
}

/// What a block's neurons are.
#[derive(Debug)]
pub enum Cell {
    /// Recurrent-delay LIF neurons, with the recurrent dropout's rate.
    Recurrent { layer: RecurrentDelays, dropout: MultiStepDropout },
    /// Plain LIF neurons without recurrence.
    Plain(MultiStepLif),
}

/// One hidden block: Linear → [BatchNorm] → [dropout on the current] → neurons → [dropout on
/// the spikes].
#[derive(Debug)]
pub struct Block {
    pub linear: Linear,
    pub norm: Option<TimeBatchNorm>,
    pub current_dropout: Option<MultiStepDropout>,
    pub cell: Cell,
    pub spike_dropout: Option<MultiStepDropout>,
}

/// The readout: a Linear at every step, then (for `shd`) a LIF whose membrane is the output.
#[derive(Debug)]
pub struct ReadoutBlock {
    pub linear: Linear,
    pub neuron: Option<MultiStepLif>,
}

/// A recurrent-delay network and its variables.
pub struct RecurrentNetwork {
    pub vs: nn::VarStore,
    pub architecture: Architecture,
    pub blocks: Vec<Block>,
    pub readout: ReadoutBlock,
    /// In a data-parallel run, the sum over processes that BatchNorm's training statistics use.
    pub global_sum: Option<Rc<dyn GlobalSum>>,
}

/// Where a training pass leaves autograd: a fused recurrent layer, or a BatchNorm over the
/// global batch.
enum Cut {
    Recurrent(RecurrentCut),
    GlobalNorm(GlobalNormCut),
}

/// A pass's output `(T, B, n_out)`, with its cuts in forward order.
pub struct RecurrentPass {
    pub output: Tensor,
    cuts: Vec<Cut>,
}

impl RecurrentPass {
    /// Backpropagates `loss` (computed from the output) to every parameter: autograd down to
    /// the last cut, then each cut's backward, last to first, each carrying on into the graph
    /// below it.
    pub fn backward(&self, loss: &Tensor) -> Result<()> {
        loss.backward();
        self.cuts.iter().rev().try_for_each(|cut| match cut {
            Cut::Recurrent(cut) => cut.backward(),
            Cut::GlobalNorm(cut) => cut.backward(),
        })
    }
}

/// A dropout of a training pass, in the order masks are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskSlot {
    Current(usize),
    Recurrent(usize),
    Spikes(usize),
}

/// The trainable parameters by optimizer group (spec §7).
#[derive(Debug, Default)]
pub struct RecurrentGroups {
    /// Linear weights and biases, and the recurrent weights.
    pub weights: Vec<Tensor>,
    /// BatchNorm's weights and biases.
    pub norm: Vec<Tensor>,
    /// The delays, and the spread logits when the widths are learned.
    pub positions: Vec<Tensor>,
}

const SHD_TAU: f64 = 1.05;
/// The `nn.Sequential` of DelRec's networks.
const DELREC_ROOT: &str = "layers";
const SILENT_THRESHOLD: f64 = 1e8;

impl Architecture {
    /// The single-step neuron of the recurrent layers (spec §2).
    pub fn recurrent_neuron(self) -> StepLif {
        match self {
            Architecture::Ssc => StepLif {
                tau: 2.0,
                threshold: 1.0,
                reset: Reset::Soft,
                detach_reset: false,
                surrogate: Surrogate::Triangle(Triangle { gamma: 1.0 }),
            },
            Architecture::Shd => StepLif {
                tau: SHD_TAU,
                threshold: 1.0,
                reset: Reset::Hard,
                detach_reset: true,
                surrogate: Surrogate::ATan(ATan { alpha: 5.0 }),
            },
        }
    }

    /// How the output becomes class scores (spec §5): `Σ_t out(t)` (`ssc`) or
    /// `Σ_t softmax(out(t))` (`shd`).
    pub fn scoring(self) -> Scoring {
        match self {
            Architecture::Ssc => Scoring::Sum,
            Architecture::Shd => Scoring::SoftmaxSum,
        }
    }

    /// A multi-step hard-reset LIF at `threshold` with `shd`'s constants, computed op by op.
    fn plain_neuron(threshold: f64) -> MultiStepLif {
        MultiStepLif {
            leak: Leak::Fixed { tau: SHD_TAU },
            v_threshold: threshold,
            surrogate: ATan { alpha: 5.0 },
            charge_formula: ChargeFormula::Paper2023,
            backend: NeuronBackend::Ops,
        }
    }
}

impl RecurrentNetwork {
    /// The network of `shape`, initialised from `seed` on the CPU generator, then moved to
    /// `device`.
    pub fn new(shape: &RecurrentShape, seed: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root() / keys::MODEL;
        let blocks = match shape.architecture {
            Architecture::Ssc => (0..3).map(|l| Self::ssc_block(&(&root / "blocks" / l), shape, l)).collect(),
            Architecture::Shd => Self::shd_blocks(&(&root / "blocks"), shape),
        };
        let readout = ReadoutBlock {
            linear: Linear::with_bias(&(&root / "readout"), shape.widths.hidden, shape.widths.outputs),
            neuron: (shape.architecture == Architecture::Shd).then(|| Architecture::plain_neuron(SILENT_THRESHOLD)),
        };
        let mut network = RecurrentNetwork { vs, architecture: shape.architecture, blocks, readout, global_sum: None };
        network.initialise(seed);
        if !shape.learn_delays {
            network.freeze_delays();
        }
        network.vs.set_device(device);
        network
    }

    fn recurrent_cell(path: &nn::Path, shape: &RecurrentShape, learns_spread: bool) -> Cell {
        let neuron = shape.architecture.recurrent_neuron();
        Cell::Recurrent {
            layer: RecurrentDelays::new(&(path / "recurrent"), shape.widths.hidden, learns_spread, neuron, shape.buffer),
            dropout: MultiStepDropout { p: shape.recurrent_dropout },
        }
    }

    fn ssc_block(path: &nn::Path, shape: &RecurrentShape, l: i64) -> Block {
        let inputs = if l == 0 { shape.widths.inputs } else { shape.widths.hidden };
        Block {
            linear: Linear::with_bias(&(path / "linear"), inputs, shape.widths.hidden),
            norm: None,
            current_dropout: Some(MultiStepDropout { p: shape.dropout }),
            cell: Self::recurrent_cell(path, shape, true),
            spike_dropout: None,
        }
    }

    fn shd_blocks(path: &nn::Path, shape: &RecurrentShape) -> Vec<Block> {
        let hidden = shape.widths.hidden;
        let block = |l: i64, inputs: i64, cell: Cell| Block {
            linear: Linear::with_bias(&(path / l / "linear"), inputs, hidden),
            norm: Some(TimeBatchNorm::new(&(path / l / "norm"), hidden)),
            current_dropout: None,
            cell,
            spike_dropout: Some(MultiStepDropout { p: shape.dropout }),
        };
        vec![
            block(0, shape.widths.inputs, Cell::Plain(Architecture::plain_neuron(1.0))),
            block(1, hidden, Self::recurrent_cell(&(path / 1), shape, false)),
        ]
    }

    /// Draws every parameter from `seed`, block by block, then the readout.
    fn initialise(&mut self, seed: i64) {
        tch::manual_seed(seed);
        let architecture = self.architecture;
        tch::no_grad(|| {
            for block in &self.blocks {
                initialise_linear(&block.linear, architecture);
                if let Cell::Recurrent { layer, .. } = &block.cell {
                    layer.weight.shallow_clone().copy_(&orthogonal(layer.weight.size()[0]));
                    let mut delays = layer.delays.shallow_clone();
                    match architecture {
                        Architecture::Ssc => delays.copy_(&(delays.randn_like().abs() * 12.0)),
                        Architecture::Shd => {
                            let _ = delays.uniform_(10.0, 30.0);
                        }
                    }
                    let _ = delays.clamp_min_(0.0);
                }
            }
            initialise_linear(&self.readout.linear, architecture);
        });
    }

    /// Sets every delay to 0 and stops training delays and spreads.
    fn freeze_delays(&mut self) {
        for layer in self.recurrent_layers() {
            let _ = tch::no_grad(|| layer.delays.shallow_clone().zero_());
            for frozen in std::iter::once(&layer.delays).chain(layer.spread.as_ref()) {
                let _ = frozen.shallow_clone().set_requires_grad(false);
            }
        }
    }

    /// Each variable's key beside DelRec's (`layers.N.…`, N the index of its module in DelRec's
    /// `nn.Sequential`: per block the Linear, the BatchNorm if any, the dropout on the current
    /// if any, the neurons, a spike recorder, the dropout on the spikes if any; then the readout
    /// Linear and, for `shd`, its LIF).
    pub fn delrec_names(&self) -> Vec<(String, String)> {
        let mut names = Vec::new();
        let mut add = |ours: String, index: usize, fields: &[&str]| {
            names.extend(fields.iter().map(|f| (format!("{ours}.{f}"), format!("{DELREC_ROOT}.{index}.{f}"))));
        };
        let mut index = 0;
        for (l, block) in self.blocks.iter().enumerate() {
            let ours = format!("{}.blocks.{l}", keys::MODEL);
            add(format!("{ours}.linear"), index, &["weight", "bias"]);
            index += 1;
            if block.norm.is_some() {
                add(format!("{ours}.norm"), index, &["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]);
                index += 1;
            }
            index += usize::from(block.current_dropout.is_some());
            if let Cell::Recurrent { layer, .. } = &block.cell {
                let fields: &[&str] = if layer.spread.is_some() {
                    &["recurrent_weights", "recurrent_delays", "p_spread"]
                } else {
                    &["recurrent_weights", "recurrent_delays"]
                };
                add(format!("{ours}.recurrent"), index, fields);
            }
            index += 2 + usize::from(block.spike_dropout.is_some());
        }
        add(format!("{}.readout", keys::MODEL), index, &["weight", "bias"]);
        names
    }

    /// Loads the weights of `path` (its tensors): one of our checkpoints (the `model.*` keys), or
    /// a DelRec state dict (`layers.N.…`, [`Self::delrec_names`]), strictly either way.
    pub fn load_weights(&self, path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        if !tensors.keys().any(|key| key.starts_with(&format!("{DELREC_ROOT}."))) {
            return checkpoint::load_model_part(&self.vs, path, tensors);
        }
        let names = self.delrec_names();
        let variables = self.vs.variables();
        let mut problems: Vec<String> = names
            .iter()
            .filter_map(|(ours, theirs)| match tensors.get(theirs) {
                None => Some(format!("missing key `{theirs}`")),
                Some(value) if value.size() != variables[ours].size() => Some(format!(
                    "key `{theirs}` has shape {:?} in the file but {:?} in the model",
                    value.size(),
                    variables[ours].size()
                )),
                Some(_) => None,
            })
            .collect();
        let theirs: HashMap<&String, &String> = names.iter().map(|(ours, theirs)| (theirs, ours)).collect();
        problems.extend(tensors.keys().filter(|key| !theirs.contains_key(key)).map(|key| format!("unexpected key `{key}`")));
        ensure!(problems.is_empty(), "{} does not fit this DelRec network: {}", path.display(), problems.join("; "));
        let renamed = tensors.iter().map(|(key, value)| (theirs[key].clone(), value.shallow_clone())).collect();
        checkpoint::load_all(&self.vs, path, renamed)
    }

    /// The variables under DelRec's keys, for `SNN_recurrent_delays.load_state_dict`.
    pub fn delrec_state_dict(&self) -> Vec<(String, Tensor)> {
        let variables = self.vs.variables();
        self.delrec_names().into_iter().map(|(ours, theirs)| (theirs, variables[&ours].shallow_clone())).collect()
    }

    /// The number of trainable parameter values.
    pub fn trainable_parameters(&self) -> i64 {
        self.vs.variables().values().filter(|t| t.requires_grad()).map(|t| t.numel() as i64).sum()
    }

    /// The recurrent layers, first to last.
    pub fn recurrent_layers(&self) -> impl Iterator<Item = &RecurrentDelays> {
        self.blocks.iter().filter_map(|block| match &block.cell {
            Cell::Recurrent { layer, .. } => Some(layer),
            Cell::Plain(_) => None,
        })
    }

    /// The parameters by optimizer group.
    pub fn groups(&self) -> RecurrentGroups {
        let mut groups = RecurrentGroups::default();
        let linear = |groups: &mut RecurrentGroups, linear: &Linear| {
            groups.weights.push(linear.weight.shallow_clone());
            groups.weights.extend(linear.bias.iter().map(Tensor::shallow_clone));
        };
        for block in &self.blocks {
            linear(&mut groups, &block.linear);
            if let Some(norm) = &block.norm {
                groups.norm.extend([norm.weight.shallow_clone(), norm.bias.shallow_clone()]);
            }
            if let Cell::Recurrent { layer, .. } = &block.cell {
                groups.weights.push(layer.weight.shallow_clone());
                let positions = std::iter::once(&layer.delays).chain(layer.spread.as_ref());
                groups.positions.extend(positions.filter(|p| p.requires_grad()).map(Tensor::shallow_clone));
            }
        }
        linear(&mut groups, &self.readout.linear);
        groups
    }

    /// The dropouts of a training pass, in the order their masks are drawn.
    pub fn mask_plan(&self) -> Vec<(MaskSlot, MultiStepDropout)> {
        let mut plan = Vec::new();
        for (l, block) in self.blocks.iter().enumerate() {
            plan.extend(block.current_dropout.map(|d| (MaskSlot::Current(l), d)));
            if let Cell::Recurrent { dropout, .. } = &block.cell {
                plan.push((MaskSlot::Recurrent(l), *dropout));
            }
            plan.extend(block.spike_dropout.map(|d| (MaskSlot::Spikes(l), d)));
        }
        plan
    }

    /// Each recurrent layer's kernel at width σ: from its delays, or (`rounded`) from a rounded
    /// copy clamped at 0, leaving the parameters as they are.
    pub fn kernels(&self, sigma: f64, rounded: bool) -> Vec<Tensor> {
        self.recurrent_layers()
            .map(|layer| {
                if rounded {
                    layer.kernel(&layer.delays.detach().round().clamp_min(0.0), sigma)
                } else {
                    layer.kernel(&layer.delays, sigma)
                }
            })
            .collect()
    }

    /// The output `(T, B, n_out)` for input `(T, B, C_in)` with one kernel per recurrent layer:
    /// in training with the given masks (in [`Self::mask_plan`] order, drawn when `None`).
    pub fn forward(&self, x: &Tensor, kernels: &[Tensor], train: bool, masks: Option<&[Tensor]>) -> Result<RecurrentPass> {
        let plan = self.mask_plan();
        let (batch, device) = (x.size()[1], x.device());
        let masks: Vec<Tensor> = match (train, masks) {
            (false, _) => Vec::new(),
            (true, Some(given)) => {
                ensure!(given.len() == plan.len(), "{} dropout masks given, the network has {}", given.len(), plan.len());
                given.iter().map(Tensor::shallow_clone).collect()
            }
            (true, None) => plan.iter().map(|(_, d)| d.draw_mask(batch, self.mask_width(), device)).collect(),
        };
        let mask_of = |slot: MaskSlot| plan.iter().position(|(s, _)| *s == slot).and_then(|i| masks.get(i));
        let mut kernels = kernels.iter();
        let mut cuts = Vec::new();
        let mut h = x.shallow_clone();
        for (l, block) in self.blocks.iter().enumerate() {
            h = block.linear.forward(&h);
            if let Some(norm) = &block.norm {
                h = match (&self.global_sum, train) {
                    (Some(sum), true) => {
                        let (normalised, cut) = norm.forward_global(&h, sum.clone())?;
                        cuts.push(Cut::GlobalNorm(cut));
                        normalised
                    }
                    _ => norm.forward(&h, train),
                };
            }
            if let Some(mask) = mask_of(MaskSlot::Current(l)) {
                h = &h * mask;
            }
            h = match &block.cell {
                Cell::Recurrent { layer, .. } => {
                    let kernel = kernels.next().expect("one kernel per recurrent layer");
                    let mask = mask_of(MaskSlot::Recurrent(l));
                    if layer.buffer == RecurrentBuffer::Fused {
                        let (spikes, cut) = layer.forward_fused(&h, kernel, train, mask)?;
                        cuts.extend(cut.map(Cut::Recurrent));
                        spikes
                    } else {
                        layer.forward(&h, kernel, train, mask).spikes
                    }
                }
                Cell::Plain(neuron) => neuron.forward(&h, train, Readout::SPIKES)?.spikes.expect("spikes were asked for"),
            };
            if let Some(mask) = mask_of(MaskSlot::Spikes(l)) {
                h = &h * mask;
            }
        }
        let out = self.readout.linear.forward(&h);
        let output = match &self.readout.neuron {
            Some(neuron) => neuron.forward(&out, train, Readout::MEMBRANE)?.membrane.expect("the membrane was asked for"),
            None => out,
        };
        Ok(RecurrentPass { output, cuts })
    }

    /// Takes part in a data-parallel training pass without samples (an empty shard of a small
    /// last batch): the global BatchNorms' sums in the order of a pass with samples, adding
    /// nothing to them.
    pub fn idle_train_pass(&self) -> Result<()> {
        let Some(sum) = &self.global_sum else {
            return Ok(());
        };
        let mut cuts = Vec::new();
        for norm in self.blocks.iter().filter_map(|block| block.norm.as_ref()) {
            let empty = Tensor::zeros([1, 0, norm.weight.size()[0]], (Kind::Float, self.vs.device()));
            cuts.push(norm.forward_global(&empty, sum.clone())?.1);
        }
        cuts.iter().rev().try_for_each(GlobalNormCut::backward)
    }

    /// The width of every mask: the hidden layers all have the same number of neurons.
    fn mask_width(&self) -> i64 {
        self.readout.linear.weight.size()[1]
    }

    /// The class scores `(B, n_out)`: `Σ_t out(t)` (`ssc`) or `Σ_t softmax(out(t))` (`shd`).
    pub fn class_scores(&self, output: &Tensor) -> Tensor {
        match self.architecture {
            Architecture::Ssc => output.sum_dim_intlist(0, false, None::<Kind>),
            Architecture::Shd => output.softmax(2, None::<Kind>).sum_dim_intlist(0, false, None::<Kind>),
        }
    }

    /// The batch's mean cross-entropy of the class scores for one-hot `targets (B, n_out)`:
    /// against the class indices (`ssc`) or the one-hot float targets (`shd`), as each original
    /// computes it.
    pub fn loss(&self, output: &Tensor, targets: &Tensor) -> Tensor {
        let scores = self.class_scores(output);
        match self.architecture {
            Architecture::Ssc => scores.cross_entropy_loss::<Tensor>(&targets.argmax(1, false), None, Reduction::Mean, -100, 0.0),
            Architecture::Shd => cross_entropy(&scores, targets),
        }
    }
}

/// PyTorch's default Linear init (`ssc`) or Kaiming-uniform for ReLU weights (`shd`); the bias
/// is `U(±1/√fan_in)` in both.
fn initialise_linear(linear: &Linear, architecture: Architecture) {
    let fan_in = linear.weight.size()[1] as f64;
    let weight_bound = match architecture {
        Architecture::Ssc => 1.0 / fan_in.sqrt(),
        Architecture::Shd => (6.0 / fan_in).sqrt(),
    };
    let _ = linear.weight.shallow_clone().uniform_(-weight_bound, weight_bound);
    if let Some(bias) = &linear.bias {
        let _ = bias.shallow_clone().uniform_(-1.0 / fan_in.sqrt(), 1.0 / fan_in.sqrt());
    }
}

/// An `n×n` orthogonal matrix as `torch.nn.init.orthogonal_` draws one (gain 1): the Q of a
/// standard normal matrix's QR, its columns signed by R's diagonal.
fn orthogonal(n: i64) -> Tensor {
    let normal = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let (q, r) = Tensor::linalg_qr(&normal, "reduced");
    q * r.diagonal(0, 0, 1).sign()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(architecture: Architecture, widths: Widths) -> RecurrentNetwork {
        let shape = RecurrentShape {
            architecture,
            widths,
            dropout: 0.1,
            recurrent_dropout: 0.2,
            buffer: RecurrentBuffer::Presynaptic,
            learn_delays: true,
        };
        RecurrentNetwork::new(&shape, 0, Device::Cpu)
    }

    /// The spec's counts at the published widths (140 inputs, 256 hidden, 35 or 20 classes).
    #[test]
    fn the_published_networks_have_the_spec_parameter_counts() {
        assert_eq!(network(Architecture::Ssc, Widths { inputs: 140, hidden: 256, outputs: 35 }).trainable_parameters(), 374_819);
        assert_eq!(network(Architecture::Shd, Widths { inputs: 140, hidden: 256, outputs: 20 }).trainable_parameters(), 173_844);
    }

    /// Every variable has a DelRec key, at the index of its module in DelRec's `nn.Sequential`.
    #[test]
    fn delrec_keys_cover_every_variable_at_its_module_index() {
        let widths = Widths { inputs: 6, hidden: 8, outputs: 3 };
        for (architecture, indices) in
            [(Architecture::Ssc, vec![0, 2, 4, 6, 8, 10, 12]), (Architecture::Shd, vec![0, 1, 5, 6, 7, 10])]
        {
            let network = network(architecture, widths);
            let names = network.delrec_names();
            let mut ours: Vec<&String> = names.iter().map(|(ours, _)| ours).collect();
            ours.sort();
            let variables = checkpoint::state_dict(&network.vs);
            assert_eq!(ours, variables.iter().map(|(key, _)| key).collect::<Vec<_>>(), "{architecture:?}");
            let mut modules: Vec<usize> =
                names.iter().map(|(_, theirs)| theirs.split('.').nth(1).unwrap().parse().unwrap()).collect();
            modules.dedup();
            assert_eq!(modules, indices, "{architecture:?}");
        }
    }

    #[test]
    fn initial_weights_are_orthogonal_and_delays_follow_their_distributions() {
        let ssc = network(Architecture::Ssc, Widths { inputs: 8, hidden: 64, outputs: 5 });
        for layer in ssc.recurrent_layers() {
            let gram = layer.weight.matmul(&layer.weight.tr());
            assert!((gram - Tensor::eye(64, (Kind::Float, Device::Cpu))).abs().max().double_value(&[]) < 1e-5);
            assert!(layer.delays.min().double_value(&[]) >= 0.0);
        }
        let shd = network(Architecture::Shd, Widths { inputs: 8, hidden: 64, outputs: 5 });
        let delays = &shd.recurrent_layers().next().unwrap().delays;
        assert!(delays.min().double_value(&[]) >= 10.0 && delays.max().double_value(&[]) <= 30.0);
        assert_eq!(shd.recurrent_layers().count(), 1);
        assert_eq!(shd.groups().norm.len(), 4);
        assert_eq!(ssc.groups().positions.len(), 6);
    }

    #[test]
    fn masks_follow_the_plan_and_rounded_kernels_leave_the_delays() {
        let shd = network(Architecture::Shd, Widths { inputs: 6, hidden: 10, outputs: 4 });
        assert_eq!(
            shd.mask_plan().iter().map(|(slot, _)| *slot).collect::<Vec<_>>(),
            [MaskSlot::Spikes(0), MaskSlot::Recurrent(1), MaskSlot::Spikes(1)]
        );
        let before = shd.recurrent_layers().next().unwrap().delays.copy();
        let kernels = shd.kernels(0.0, true);
        assert!(before.equal(&shd.recurrent_layers().next().unwrap().delays));
        let x = Tensor::rand([12, 2, 6], (Kind::Float, Device::Cpu));
        let out = shd.forward(&x, &kernels, true, None).unwrap().output;
        assert_eq!(out.size(), [12, 2, 4]);
        let masks = vec![Tensor::ones([2, 10], (Kind::Float, Device::Cpu))];
        assert!(shd.forward(&x, &kernels, true, Some(&masks)).is_err());
    }
}
