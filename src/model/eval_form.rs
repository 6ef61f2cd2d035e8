//! The evaluation form of a trained network, as plain data (docs/method.md §4.7 and
//! "Deployment"). It is what `eval` runs and what `export` writes.
//!
//! Per layer:
//! - every tap's integer delay `d = K//2 − round(P)` (rounded half to even, clamped);
//! - its weight as the eval kernel holds it, `W·fl32(1/(1 + 1e-7))`, so that the layer computes
//!   `y[o, t] = Σ_i Σ_j w[o,i,j] · x[i, t − d[o,i,j]]` for `t < T + (K−1)//2`;
//! - BatchNorm folded into `scale = γ/sqrt(σ² + 1e-5)` and `shift = β − μ·scale`, in float32 as
//!   libtorch's CPU eval kernel computes them;
//! - the neuron's eval charge and threshold.
//!
//! When two taps of a synapse share a delay, the kernel holds their sum once: the first tap
//! carries it and the other's weight is 0.

use super::network::{Network, Synapse};
use super::neuron::Charge;
use crate::config::Loss;
use tch::{Device, Kind, Tensor};

/// One layer's synapses: `(C_out, C_in, taps)` delays and weights, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalSynapse {
    pub out_channels: usize,
    pub in_channels: usize,
    pub taps: usize,
    /// The dense kernel's length (1 for the delay-free `snn` model).
    pub kernel_size: usize,
    pub delays: Vec<u16>,
    pub weights: Vec<f32>,
}

impl EvalSynapse {
    /// Extra output steps: the right padding `(K−1)//2`.
    pub fn extra_steps(&self) -> usize {
        (self.kernel_size - 1) / 2
    }

    /// The `(C_out, C_in, K)` dense kernel with each tap at index `K−1−d`.
    pub fn dense_kernel(&self, device: Device) -> Tensor {
        let k = self.kernel_size;
        let mut dense = vec![0f32; self.out_channels * self.in_channels * k];
        for (index, (&delay, &weight)) in self.delays.iter().zip(&self.weights).enumerate() {
            let synapse = index / self.taps;
            dense[synapse * k + k - 1 - delay as usize] += weight;
        }
        Tensor::from_slice(&dense).reshape([self.out_channels as i64, self.in_channels as i64, k as i64]).to_device(device)
    }
}

/// BatchNorm in eval mode as `x·scale + shift`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedNorm {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl FoldedNorm {
    /// Channel `c` of `x`, rounded once as libtorch's fused multiply-add rounds it.
    #[inline(always)]
    pub fn apply(&self, x: f32, c: usize) -> f32 {
        x.mul_add(self.scale[c], self.shift[c])
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalLayer {
    pub synapse: EvalSynapse,
    /// Hidden layers only.
    pub norm: Option<FoldedNorm>,
    pub charge: Charge,
    pub threshold: f32,
}

/// The whole network in eval form.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalNetwork {
    pub layers: Vec<EvalLayer>,
    /// The loss, which fixes the readout (spikes for `spike_count`, else the membrane) and the
    /// class scores.
    pub loss: Loss,
    pub time_step_ms: f64,
}

impl EvalNetwork {
    /// The eval form of `network` (its variables are read, not changed).
    pub fn of(network: &Network, time_step_ms: f64) -> EvalNetwork {
        tch::no_grad(|| {
            let mut layers: Vec<EvalLayer> = network
                .hidden
                .iter()
                .map(|block| EvalLayer {
                    synapse: eval_synapse(&block.synapse),
                    norm: Some(fold(&block.norm)),
                    charge: block.neuron.eval_charge(),
                    threshold: block.neuron.v_threshold as f32,
                })
                .collect();
            layers.push(EvalLayer {
                synapse: eval_synapse(&network.output.synapse),
                norm: None,
                charge: network.output.neuron.eval_charge(),
                threshold: network.output.neuron.v_threshold as f32,
            });
            EvalNetwork { layers, loss: network.loss, time_step_ms }
        })
    }

    pub fn n_inputs(&self) -> usize {
        self.layers[0].synapse.in_channels
    }

    pub fn n_outputs(&self) -> usize {
        self.layers.last().expect("a network has an output layer").synapse.out_channels
    }

    /// Output steps for `steps` input steps.
    pub fn output_steps(&self, steps: usize) -> usize {
        steps + self.tail_steps()
    }

    /// The steps the layers' right padding adds after a recording: `Σ_l (K_l − 1)//2`.
    pub fn tail_steps(&self) -> usize {
        self.layers.iter().map(|layer| layer.synapse.extra_steps()).sum()
    }

    /// The readout is the output layer's spikes (`spike_count`), else its membrane.
    pub fn reads_spikes(&self) -> bool {
        self.loss == Loss::SpikeCount
    }
}

/// The dense kernels of the eval form on `device`, one per layer (`None` for linear synapses).
pub struct EvalKernels(pub Vec<Option<Tensor>>);

impl EvalKernels {
    pub fn new(form: &EvalNetwork, device: Device) -> EvalKernels {
        EvalKernels(form.layers.iter().map(|layer| dense_kernel(&layer.synapse, device)).collect())
    }

    /// The kernels of `network`'s eval form, without building the rest of the form.
    pub fn of(network: &Network) -> EvalKernels {
        let device = network.device();
        tch::no_grad(|| EvalKernels(network.synapses().map(|synapse| dense_kernel(&eval_synapse(synapse), device)).collect()))
    }
}

/// A DCLS synapse's dense kernel; `None` for a linear one.
fn dense_kernel(synapse: &EvalSynapse, device: Device) -> Option<Tensor> {
    (synapse.kernel_size > 1).then(|| synapse.dense_kernel(device))
}

fn eval_synapse(synapse: &Synapse) -> EvalSynapse {
    match synapse {
        Synapse::Dcls(layer) => {
            let kernel = to_vec_f32(&layer.eval_kernel());
            let delays =
                Vec::<i64>::try_from(layer.tap_delays().flatten(0, -1).to_device(Device::Cpu)).expect("int64 delays convert");
            let shape = &layer.shape;
            let (taps, k) = (shape.kernel_count as usize, shape.kernel_size as usize);
            let weights = delays
                .iter()
                .enumerate()
                .map(|(index, &delay)| {
                    let (synapse, tap) = (index / taps, index % taps);
                    let first = (0..tap).all(|other| delays[synapse * taps + other] != delay);
                    if first {
                        kernel[synapse * k + k - 1 - delay as usize]
                    } else {
                        0.0
                    }
                })
                .collect();
            EvalSynapse {
                out_channels: shape.out_channels as usize,
                in_channels: shape.in_channels as usize,
                taps,
                kernel_size: k,
                delays: delays.iter().map(|&d| d as u16).collect(),
                weights,
            }
        }
        Synapse::Linear(layer) => {
            let size = layer.weight.size();
            let weights = to_vec_f32(&layer.weight);
            EvalSynapse {
                out_channels: size[0] as usize,
                in_channels: size[1] as usize,
                taps: 1,
                kernel_size: 1,
                delays: vec![0; weights.len()],
                weights,
            }
        }
    }
}

/// libtorch's eval BatchNorm on the CPU: `invstd = 1/sqrt(var + eps)`, `α = invstd·γ`,
/// `β' = β − μ·α`, all in float32.
pub(crate) fn fold(norm: &super::layers::TimeBatchNorm) -> FoldedNorm {
    let [gamma, beta, mean, var] = [&norm.weight, &norm.bias, &norm.running_mean, &norm.running_var].map(to_vec_f32);
    let eps = super::layers::BN_EPS as f32;
    let scale: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| (1.0 / (v + eps).sqrt()) * g).collect();
    let shift = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    FoldedNorm { scale, shift }
}

pub(crate) fn to_vec_f32(tensor: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(tensor.detach().to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1)).expect("float32 converts")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Dataset};

    fn trained_like(config: &Config) -> Network {
        let network = Network::new(config, Device::Cpu);
        tch::no_grad(|| {
            for block in &network.hidden {
                let _ = block.norm.running_mean.shallow_clone().uniform_(-0.5, 0.5);
                let _ = block.norm.running_var.shallow_clone().uniform_(0.5, 2.0);
                let _ = block.norm.weight.shallow_clone().uniform_(0.5, 1.5);
            }
        });
        network
    }

    #[test]
    fn dense_kernels_rebuilt_from_the_form_equal_the_eval_kernels_bitwise() {
        for taps in [1, 2] {
            let mut config = Config::preset(Dataset::Shd);
            config.n_hidden_neurons = 24;
            config.kernel_count = taps;
            let network = trained_like(&config);
            let form = EvalNetwork::of(&network, config.time_step_ms);
            let kernels = EvalKernels::new(&form, Device::Cpu);
            for (layer, kernel) in network.dcls_layers().zip(&kernels.0) {
                assert!(layer.eval_kernel().equal(kernel.as_ref().unwrap()), "{taps} taps");
            }
            assert_eq!(form.output_steps(10), 10 + 3 * 12);
        }
    }

    #[test]
    fn folded_batch_norm_equals_libtorch_eval_bitwise() {
        let mut config = Config::preset(Dataset::Shd);
        config.n_hidden_neurons = 40;
        let network = trained_like(&config);
        let norm = &network.hidden[0].norm;
        let x = Tensor::randn([7, 3, 40], (Kind::Float, Device::Cpu)) * 3.0;
        let expected = to_vec_f32(&norm.forward(&x, false));
        let folded = fold(norm);
        let got: Vec<f32> = to_vec_f32(&x).iter().enumerate().map(|(i, v)| folded.apply(*v, i % 40)).collect();
        let differing = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{differing} of {} values differ", got.len());
    }
}
