//! The paper's feed-forward SNN (docs/method.md §2.1–§2.2) and its seeded initialisation (§1.6).
//!
//! Hidden block l: synapse → BatchNorm over T·B → LIF → dropout; output block: synapse → LIF with
//! threshold 1e9 (2.0 for `spike_count`). A DCLS synapse pads time by `K−1` on the left and
//! `(K−1)//2` on the right, so each layer lengthens the sequence: `T_out = T + (L+1)·(K−1)//2`.
//! The network returns the output neurons' post-reset membrane (their spikes for `spike_count`).
//!
//! Training goes through [`Network::forward_train`], whose [`TrainPass::backward`] runs the
//! fused neurons' segments after autograd; evaluation through [`Network::forward_eval`] with the
//! kernels of the eval form ([`super::eval_form`]), which computes no surrogate and keeps no
//! graph and leaves the network as it was. In a data-parallel run ([`Network::global_sum`] set)
//! BatchNorm uses the global batch's statistics ([`super::global_norm`]).

use super::dcls::{Dcls1d, DclsCompute, DclsShape, KernelCut};
use super::eval_form::EvalKernels;
use super::global_norm::{GlobalNormCut, GlobalSum};
use super::layers::{Linear, MultiStepDropout, TimeBatchNorm};
use super::neuron::{ATan, MultiStepLif, Readout, Segment};
use crate::checkpoint::keys;
use crate::config::{Config, Loss, NeuronBackend};
use anyhow::{ensure, Result};
use std::rc::Rc;
use tch::{nn, Device, Kind, Tensor};

/// A block's synapse: DCLS delays, or a plain linear map for the `snn` model.
#[derive(Debug)]
pub enum Synapse {
    Dcls(Dcls1d),
    Linear(Linear),
}

impl Synapse {
    pub fn weight(&self) -> &Tensor {
        match self {
            Synapse::Dcls(layer) => &layer.weight,
            Synapse::Linear(layer) => &layer.weight,
        }
    }

    /// `(T, B, C_in) → (T', B, C_out)`.
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Synapse::Dcls(layer) => layer.forward(x),
            Synapse::Linear(layer) => layer.forward(x),
        }
    }

    /// [`Synapse::forward`] in a training pass, with the DCLS kernel's cut.
    fn forward_train(&self, x: &Tensor, cuts: &mut Vec<Cut>) -> Tensor {
        match self {
            Synapse::Dcls(layer) => {
                let (y, cut) = layer.forward_train(x);
                cuts.push(Cut::Kernel(cut));
                y
            }
            Synapse::Linear(layer) => layer.forward(x),
        }
    }

    fn fan_in(&self) -> i64 {
        let shape = self.weight().size();
        shape[1..].iter().product()
    }
}

#[derive(Debug)]
pub struct HiddenBlock {
    pub synapse: Synapse,
    pub norm: TimeBatchNorm,
    pub neuron: MultiStepLif,
    pub dropout: MultiStepDropout,
}

#[derive(Debug)]
pub struct OutputBlock {
    pub synapse: Synapse,
    pub neuron: MultiStepLif,
}

/// Dropout masks for a training forward pass, one optional `(B, H)` mask per hidden layer:
/// a given mask is used as is, a missing one is drawn from the global generator in layer order,
/// as the reference does. `DropoutMasks::DRAW` draws them all.
#[derive(Clone, Copy, Debug)]
pub struct DropoutMasks<'a>(pub &'a [Option<Tensor>]);

impl DropoutMasks<'_> {
    pub const DRAW: DropoutMasks<'static> = DropoutMasks(&[]);
}

/// The trainable parameters by optimizer group (§4.2).
#[derive(Debug, Default)]
pub struct ParameterGroups {
    pub weights: Vec<Tensor>,
    pub plif_w: Vec<Tensor>,
    pub norm: Vec<Tensor>,
    pub positions: Vec<Tensor>,
}

/// What a pass can record per layer for the parity tools: each neuron layer's input current
/// `(T, B, C)` (hidden layers first, then the output layer) and each hidden layer's spikes.
/// The default recording records nothing.
#[derive(Debug, Default)]
pub struct Recording {
    pub on: bool,
    pub currents: Vec<Tensor>,
    pub spikes: Vec<Tensor>,
}

impl Recording {
    fn current(&mut self, current: &Tensor) {
        if self.on {
            self.currents.push(current.detach().copy());
        }
    }

    fn spikes(&mut self, spikes: &Tensor) {
        if self.on {
            self.spikes.push(spikes.detach().copy());
        }
    }
}

/// The whole network, its variables named as the reference's `state_dict`.
pub struct Network {
    pub vs: nn::VarStore,
    pub hidden: Vec<HiddenBlock>,
    pub output: OutputBlock,
    pub loss: Loss,
    /// Why the neurons do not run on the configured backend, if they do not.
    pub backend_note: Option<String>,
    /// Sums over the processes of a data-parallel run; BatchNorm then normalises with the
    /// global batch's statistics. `None` in a single process.
    pub global_sum: Option<Rc<dyn GlobalSum>>,
}

/// A place where autograd stops and the backward continues by hand.
enum Cut {
    /// A DCLS kernel built without a graph.
    Kernel(KernelCut),
    /// A fused neuron layer.
    Neuron(Segment),
    /// A BatchNorm over the global batch.
    GlobalNorm(GlobalNormCut),
}

/// The output of a training forward pass, with what its backward needs.
pub struct TrainPass {
    pub output: Tensor,
    /// The cuts, first to last.
    cuts: Vec<Cut>,
}

impl TrainPass {
    /// Backpropagates `loss` (computed from `output`) to every parameter: autograd down to the
    /// last cut, then each cut (a fused layer's segment, a global BatchNorm, a DCLS kernel) from
    /// the last to the first, each dropped (with what it kept for its backward) once it has run.
    pub fn backward(self, loss: &Tensor) -> Result<()> {
        loss.backward();
        for cut in self.cuts.into_iter().rev() {
            match cut {
                Cut::Kernel(kernel) => kernel.backward(),
                Cut::Neuron(segment) => segment.backward()?,
                Cut::GlobalNorm(norm) => norm.backward()?,
            }
        }
        Ok(())
    }
}

impl Network {
    /// Builds the network for `config` on `device`, initialised from `config.seed` as the
    /// reference does (on the CPU generator, then moved).
    pub fn new(config: &Config, device: Device) -> Network {
        let derived = config.derived();
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root() / keys::MODEL;
        let surrogate = ATan { alpha: config.surrogate_alpha };
        let synapse = |index: i64, in_channels: i64, out_channels: i64| {
            let path = &root / index;
            if config.has_delays() {
                let shape = DclsShape {
                    in_channels,
                    out_channels,
                    kernel_count: config.kernel_count as i64,
                    kernel_size: derived.kernel_size as i64,
                };
                let compute = DclsCompute { flush_subnormal_taps: config.flush_subnormal_taps, convolution: config.convolution };
                Synapse::Dcls(Dcls1d::new(&path, shape, derived.kernel_version, derived.learns_positions, compute))
            } else {
                Synapse::Linear(Linear::new(&path, in_channels, out_channels))
            }
        };
        let (backend, backend_note) = super::neuron::backend_on(config.neuron_backend, device);
        let neuron = |index: i64, threshold: f64| {
            MultiStepLif::new(&(&root / index), config.neuron, derived.tau_steps, threshold, surrogate, config.charge_formula)
                .with_backend(backend)
        };
        let width = config.n_hidden_neurons as i64;
        let hidden = (0..config.n_hidden_layers as i64)
            .map(|layer| {
                let base = layer * keys::HIDDEN_BLOCK_LEN;
                let in_channels = if layer == 0 { derived.n_inputs as i64 } else { width };
                HiddenBlock {
                    synapse: synapse(base, in_channels, width),
                    norm: TimeBatchNorm::new(&(&root / (base + 1)), width),
                    neuron: neuron(base + 2, config.v_threshold),
                    dropout: MultiStepDropout { p: config.dropout_p },
                }
            })
            .collect::<Vec<_>>();
        let base = config.n_hidden_layers as i64 * keys::HIDDEN_BLOCK_LEN;
        let last_width = if hidden.is_empty() { derived.n_inputs as i64 } else { width };
        let output = OutputBlock {
            synapse: synapse(base, last_width, derived.n_outputs as i64),
            neuron: neuron(base + 1, derived.output_v_threshold),
        };
        let mut network = Network { vs, hidden, output, loss: config.loss, backend_note, global_sum: None };
        network.initialise(config);
        network.vs.set_device(device);
        network
    }

    /// §1.6: seed; Kaiming-uniform (relu) weights of every layer; then uniform positions in
    /// `[−K//2 (floor), K//2]`, clamped; then constant sigma. Fixed-delay models round positions.
    fn initialise(&mut self, config: &Config) {
        let derived = config.derived();
        tch::manual_seed(config.seed as i64);
        tch::no_grad(|| {
            for synapse in self.synapses() {
                let bound = 3f64.sqrt() * (2f64.sqrt() / (synapse.fan_in() as f64).sqrt());
                let _ = synapse.weight().shallow_clone().uniform_(-bound, bound);
            }
            for layer in self.dcls_layers_mut() {
                let _ = layer.positions.uniform_(derived.init_pos_low, derived.init_pos_high);
                layer.clamp_positions();
            }
            for layer in self.dcls_layers_mut().filter(|layer| layer.has_sigma()) {
                let _ = layer.sigma.fill_(derived.sigma_init);
                if !derived.learns_positions {
                    let _ = layer.positions.round_();
                    layer.clamp_positions();
                }
            }
        });
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn synapses(&self) -> impl Iterator<Item = &Synapse> {
        self.hidden.iter().map(|block| &block.synapse).chain(std::iter::once(&self.output.synapse))
    }

    fn synapses_mut(&mut self) -> impl Iterator<Item = &mut Synapse> {
        self.hidden.iter_mut().map(|block| &mut block.synapse).chain(std::iter::once(&mut self.output.synapse))
    }

    pub fn dcls_layers(&self) -> impl Iterator<Item = &Dcls1d> {
        self.synapses().filter_map(|s| match s {
            Synapse::Dcls(layer) => Some(layer),
            Synapse::Linear(_) => None,
        })
    }

    pub fn dcls_layers_mut(&mut self) -> impl Iterator<Item = &mut Dcls1d> {
        self.synapses_mut().filter_map(|s| match s {
            Synapse::Dcls(layer) => Some(layer),
            Synapse::Linear(_) => None,
        })
    }

    pub fn neurons(&self) -> impl Iterator<Item = &MultiStepLif> {
        self.hidden.iter().map(|block| &block.neuron).chain(std::iter::once(&self.output.neuron))
    }

    /// The backend the neuron layers run on.
    pub fn neuron_backend(&self) -> NeuronBackend {
        self.output.neuron.backend
    }

    /// Runs `(T, B, n_inputs)` to `(T_out, B, n_outputs)` in training mode: BatchNorm uses batch
    /// statistics and updates its running ones, dropout masks apply.
    pub fn forward_train(&self, x: &Tensor, masks: DropoutMasks) -> Result<TrainPass> {
        self.forward_train_recording(x, masks, &mut Recording::default())
    }

    /// [`Network::forward_train`], recording each layer's current and spikes into `record`.
    pub fn forward_train_recording(&self, x: &Tensor, masks: DropoutMasks, record: &mut Recording) -> Result<TrainPass> {
        ensure!(
            masks.0.len() <= self.hidden.len(),
            "got dropout masks for {} layers but the network has {} hidden layers",
            masks.0.len(),
            self.hidden.len()
        );
        let mut cuts = Vec::new();
        let mut h = x.shallow_clone();
        for (layer, block) in self.hidden.iter().enumerate() {
            let synaptic = block.synapse.forward_train(&h, &mut cuts);
            let current = match &self.global_sum {
                Some(sum) => {
                    let (current, cut) = block.norm.forward_global(&synaptic, sum.clone())?;
                    cuts.push(Cut::GlobalNorm(cut));
                    current
                }
                None => block.norm.forward(&synaptic, true),
            };
            record.current(&current);
            let out = block.neuron.forward(&current, true, Readout::SPIKES)?;
            cuts.extend(out.segment.map(Cut::Neuron));
            let spikes = out.spikes.expect("spikes were asked for");
            record.spikes(&spikes);
            h = block.dropout.apply(&spikes, &self.mask(layer, &spikes, masks)?);
        }
        let current = self.output.synapse.forward_train(&h, &mut cuts);
        record.current(&current);
        let mut out = self.output.neuron.forward(&current, true, self.readout())?;
        cuts.extend(out.segment.take().map(Cut::Neuron));
        Ok(TrainPass { output: self.read(out), cuts })
    }

    /// Takes part in a data-parallel training pass without samples (an empty shard of a small
    /// last batch): the global BatchNorms' sums in the order of a pass with samples, adding
    /// nothing to them, and the same running-statistics updates.
    pub fn idle_train_pass(&self) -> Result<()> {
        let Some(sum) = &self.global_sum else {
            return Ok(());
        };
        let mut cuts = Vec::new();
        for block in &self.hidden {
            let empty = Tensor::zeros([1, 0, block.norm.weight.size()[0]], (Kind::Float, self.device()));
            cuts.push(block.norm.forward_global(&empty, sum.clone())?.1);
        }
        cuts.iter().rev().try_for_each(GlobalNormCut::backward)
    }

    /// Runs `(T, B, n_inputs)` to `(T_out, B, n_outputs)` in eval mode with the eval form's
    /// kernels (integer delays, [`super::eval_form`]), running BatchNorm statistics and no
    /// dropout, without gradients: no graph is kept and no surrogate computed.
    pub fn forward_eval(&self, x: &Tensor, kernels: &EvalKernels) -> Result<Tensor> {
        self.forward_eval_recording(x, kernels, &mut Recording::default())
    }

    /// [`Network::forward_eval`], recording each layer's current and spikes into `record`.
    pub fn forward_eval_recording(&self, x: &Tensor, kernels: &EvalKernels, record: &mut Recording) -> Result<Tensor> {
        let synapse = |layer: usize, synapse: &Synapse, h: &Tensor| match (synapse, &kernels.0[layer]) {
            (Synapse::Dcls(dcls), Some(kernel)) => dcls.forward_with(h, kernel),
            _ => synapse.forward(h),
        };
        tch::no_grad(|| {
            let mut h = x.shallow_clone();
            for (layer, block) in self.hidden.iter().enumerate() {
                let current = block.norm.forward(&synapse(layer, &block.synapse, &h), false);
                record.current(&current);
                h = block.neuron.forward(&current, false, Readout::SPIKES)?.spikes.expect("spikes were asked for");
                record.spikes(&h);
            }
            let current = synapse(self.hidden.len(), &self.output.synapse, &h);
            record.current(&current);
            Ok(self.read(self.output.neuron.forward(&current, false, self.readout())?))
        })
    }

    /// What the loss reads from the output layer.
    fn readout(&self) -> Readout {
        if self.loss == Loss::SpikeCount {
            Readout::SPIKES
        } else {
            Readout::MEMBRANE
        }
    }

    fn read(&self, out: super::neuron::NeuronOutput) -> Tensor {
        let wanted = if self.loss == Loss::SpikeCount { out.spikes } else { out.membrane };
        wanted.expect("the readout was asked for")
    }

    fn mask(&self, layer: usize, spikes: &Tensor, masks: DropoutMasks) -> Result<Tensor> {
        let (batch, channels) = (spikes.size()[1], spikes.size()[2]);
        let Some(mask) = masks.0.get(layer).and_then(Option::as_ref) else {
            return Ok(self.hidden[layer].dropout.draw_mask(batch, channels, spikes.device()));
        };
        ensure!(
            mask.size() == [batch, channels],
            "dropout mask of hidden layer {layer} has shape {:?}, expected [{batch}, {channels}]",
            mask.size()
        );
        Ok(mask.to_kind(Kind::Float).to_device(spikes.device()))
    }

    /// The dense kernels of the eval form (§4.7), built once for a whole evaluation pass.
    pub fn eval_kernels(&self) -> EvalKernels {
        EvalKernels::of(self)
    }

    /// Clamps every layer's positions to `[−K//2, K//2]`, as after each optimizer step.
    pub fn clamp_positions(&mut self) {
        self.dcls_layers_mut().for_each(Dcls1d::clamp_positions);
    }

    /// Trainable parameters split into the reference's optimizer groups.
    pub fn parameter_groups(&self) -> ParameterGroups {
        let mut groups = ParameterGroups::default();
        for synapse in self.synapses() {
            groups.weights.push(synapse.weight().shallow_clone());
            if let Synapse::Dcls(layer) = synapse {
                if layer.positions.requires_grad() {
                    groups.positions.push(layer.positions.shallow_clone());
                }
            }
        }
        for block in &self.hidden {
            groups.norm.extend([block.norm.weight.shallow_clone(), block.norm.bias.shallow_clone()]);
        }
        for neuron in self.neurons() {
            if let super::neuron::Leak::Learned { w } = &neuron.leak {
                groups.plif_w.push(w.shallow_clone());
            }
        }
        groups
    }

    /// The reference's `count_parameters`: weights, trainable positions, BatchNorm affine, PLIF w.
    pub fn trainable_parameter_count(&self) -> i64 {
        self.vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>() as i64
    }

    /// The reference key of a variable of this network.
    pub fn key_of(&self, variable: &Tensor) -> String {
        crate::checkpoint::key_of(&self.vs, variable)
    }

    /// The trainable variables with their reference keys, sorted.
    pub fn named_trainable(&self) -> Vec<(String, Tensor)> {
        crate::checkpoint::state_dict(&self.vs).into_iter().filter(|(_, t)| t.requires_grad()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, Dataset};

    fn config(overrides: &[&str]) -> Config {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        ConfigSource { preset: Some(Dataset::Shd.into()), file: None, overrides: &overrides }.load().unwrap()
    }

    #[test]
    fn parameter_counts_match_the_reference() {
        assert_eq!(Network::new(&config(&[]), Device::Cpu).trainable_parameter_count(), 214_016);
        assert_eq!(Network::new(&config(&["model_type=snn"]), Device::Cpu).trainable_parameter_count(), 107_520);
        let large = ConfigSource { preset: Some(Dataset::Ssc.into()), file: None, overrides: &[] }.load().unwrap();
        assert_eq!(Network::new(&large, Device::Cpu).trainable_parameter_count(), 1_230_848);
    }

    #[test]
    fn keys_follow_the_reference_sequential() {
        let network = Network::new(&config(&["neuron=plif"]), Device::Cpu);
        let names: Vec<String> = crate::checkpoint::state_dict(&network.vs).into_iter().map(|(n, _)| n).collect();
        for key in
            ["model.0.P", "model.0.SIG", "model.1.num_batches_tracked", "model.2.w", "model.4.weight", "model.8.P", "model.9.w"]
        {
            assert!(names.iter().any(|n| n == key), "{key} missing from {names:?}");
        }
    }

    #[test]
    fn output_grows_by_half_a_kernel_per_layer() {
        let network = Network::new(&config(&["n_hidden_neurons=8"]), Device::Cpu);
        let x = Tensor::rand([37, 3, 140], (Kind::Float, Device::Cpu));
        let out = network.forward_train(&x, DropoutMasks::DRAW).unwrap().output;
        assert_eq!(out.size(), [73, 3, 20]);
    }

    #[test]
    fn initial_positions_are_clamped_with_mass_at_the_maximum_delay() {
        let network = Network::new(&config(&[]), Device::Cpu);
        let positions = &network.dcls_layers().next().unwrap().positions;
        assert_eq!(positions.min().double_value(&[]), -12.0);
        assert!(positions.max().double_value(&[]) <= 12.0);
        let at_limit = positions.eq(-12.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((0.02..0.06).contains(&at_limit), "{at_limit}");
    }
}
