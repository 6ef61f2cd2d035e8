//! DCLS-1d: a temporal convolution whose taps sit at learnable positions (docs/method.md §1).
//!
//! Kernel construction, per synapse (o, i) and tap j, with centre `c = P + K//2` and k = 0..K−1:
//! - `gauss`: `s = |σ| + 0.27`, `g_k = exp(−½((k−c)/s)²)`;
//! - `max`:   `s = |σ| + 1`,    `g_k = relu(s − |k−c|)`;
//! - `v1`:    `g_k = relu(1 − |k−c|)`;
//!
//! then `X_k = g_k / (Σ g + 1e-7)` and `kernel[o,i,k] = Σ_j X_k·W[o,i,j]`. The ops and tensor
//! layouts follow the reference so that values and gradients agree bitwise on CPU.
//! Kernel index k delays its input by `K−1−k` steps, so the delay is `K//2 − P` (§2.1).
//!
//! In training the dense kernel is built without a graph and its backward rebuilt when its
//! gradient is known ([`KernelCut`]): the construction's intermediates (about six tensors of the
//! kernel's size per layer) then live for one layer at a time, not for the whole step, and the
//! gradients are bitwise those of one autograd pass (the rebuilt kernel is the same values, and
//! `Σ kernel·g` passes `g` on exactly).
//!
//! With `flush_subnormal_taps`, kernel values below float32's smallest normal (1.18e-38) in
//! magnitude become zero: a Gaussian tap far from its centre underflows there once sigma is
//! small, and each product with a subnormal costs the CPU a slow microcode path in the
//! convolution, its backward and everything downstream. Such a value's contribution to any
//! output is below that output's float32 resolution (docs/method.md, "Subnormal taps").

use super::time_conv::{correlate, correlate_cut, Convolution, SpectralCut};
use crate::checkpoint::keys;
use crate::config::KernelVersion;
use tch::{nn, Device, Kind, Tensor};

/// Builds the dense `(C_out, C_in, K)` kernel from weights `(C_out, C_in, kc)`, positions and
/// sigmas `(1, C_out, C_in, kc)`.
pub fn construct_kernel(weight: &Tensor, positions: &Tensor, sigma: &Tensor, kernel_size: i64, version: KernelVersion) -> Tensor {
    let index = index_grid(weight.size(), kernel_size, weight.device());
    let centre = positions + (kernel_size / 2) as f64;
    let taps = match version {
        KernelVersion::Gauss => {
            let spread = sigma.abs() + 0.27;
            let distance = ((&index - &centre) / spread).norm_scalaropt_dim(2.0, [1i64], false);
            (distance.pow_tensor_scalar(2) * -0.5).exp()
        }
        KernelVersion::Max => triangle(&(sigma.abs() + 1.0), &index, &centre),
        KernelVersion::V1 => triangle(&Tensor::ones([], (Kind::Float, weight.device())), &index, &centre),
    };
    let normalised = &taps / (taps.sum_dim_intlist(0, false, None::<Kind>) + 1e-7);
    (normalised * weight).sum_dim_intlist(-1, false, None::<Kind>).permute([1, 2, 0])
}

/// `relu(half_width − |k − c|)`, reduced over the size-1 spatial axis as the reference does.
fn triangle(half_width: &Tensor, index: &Tensor, centre: &Tensor) -> Tensor {
    (half_width - (index - centre).abs()).relu().prod_dim_int(1, false, None::<Kind>)
}

/// The int64 tap index k, shaped `(K, 1, C_out, C_in, kc)` as an expanded view.
fn index_grid(weight_shape: Vec<i64>, kernel_size: i64, device: tch::Device) -> Tensor {
    let (c_out, c_in, count) = (weight_shape[0], weight_shape[1], weight_shape[2]);
    Tensor::arange(kernel_size, (Kind::Int64, device))
        .unsqueeze(0)
        .expand([c_out, c_in, count, -1, -1], false)
        .permute([4, 3, 0, 1, 2])
}

/// Geometry of one DCLS layer.
#[derive(Clone, Copy, Debug)]
pub struct DclsShape {
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel_count: i64,
    pub kernel_size: i64,
}

impl DclsShape {
    /// Time padding `[K−1, (K−1)//2]`: every delay fits, and the output is `(K−1)//2` longer.
    pub fn padding(&self) -> [i64; 2] {
        [self.kernel_size - 1, (self.kernel_size - 1) / 2]
    }
}

/// How a layer computes, beyond its parameters: both choices have an exact setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DclsCompute {
    pub flush_subnormal_taps: bool,
    pub convolution: Convolution,
}

impl DclsCompute {
    /// The reference's computation, bit for bit on the CPU.
    pub const EXACT: DclsCompute = DclsCompute { flush_subnormal_taps: false, convolution: Convolution::Direct };
}

/// Smallest positive normal float32: kernel values below it in magnitude are subnormal.
const SMALLEST_NORMAL: f64 = f32::MIN_POSITIVE as f64;

/// Zeroes the subnormal values of a kernel; the gradient of a zeroed value is zero.
pub fn flush_subnormals(kernel: &Tensor) -> Tensor {
    kernel * kernel.abs().ge(SMALLEST_NORMAL)
}

/// A DCLS-1d synaptic layer: `weight`, `positions` (reference `P`) and `sigma` (reference `SIG`).
#[derive(Debug)]
pub struct Dcls1d {
    pub weight: Tensor,
    pub positions: Tensor,
    pub sigma: Tensor,
    pub version: KernelVersion,
    pub shape: DclsShape,
    pub compute: DclsCompute,
}

impl Dcls1d {
    /// Creates the variables under `path` with the reference names (see [`keys`]).
    /// Positions are trainable only when `learn_positions`; sigma never is. A `v1` layer has no
    /// sigma in the reference (no `SIG` key): its sigma is a zero outside the state dict.
    pub fn new(path: &nn::Path, shape: DclsShape, version: KernelVersion, learn_positions: bool, compute: DclsCompute) -> Dcls1d {
        let weight_dims = [shape.out_channels, shape.in_channels, shape.kernel_count];
        let tap_dims = [1, shape.out_channels, shape.in_channels, shape.kernel_count];
        let weight = path.zeros("weight", &weight_dims);
        let positions = if learn_positions {
            path.zeros(keys::POSITIONS, &tap_dims)
        } else {
            path.zeros_no_train(keys::POSITIONS, &tap_dims)
        };
        let sigma = match version {
            KernelVersion::V1 => Tensor::zeros(tap_dims, (Kind::Float, Device::Cpu)),
            _ => path.zeros_no_train(keys::SIGMA, &tap_dims),
        };
        Dcls1d { weight, positions, sigma, version, shape, compute }
    }

    /// Whether the layer has a sigma (every version but `v1`).
    pub fn has_sigma(&self) -> bool {
        self.version != KernelVersion::V1
    }

    /// Positions live in `[−K//2, K//2]`.
    pub fn position_limit(&self) -> f64 {
        (self.shape.kernel_size / 2) as f64
    }

    /// The training-form dense kernel.
    pub fn kernel(&self) -> Tensor {
        self.flushed(construct_kernel(&self.weight, &self.positions, &self.sigma, self.shape.kernel_size, self.version))
    }

    /// The eval transform (§4.7) as a value, the layer untouched: positions rounded half to even
    /// and clamped, sigma 0, version `max`. The kernel is a one-hot of value `W/(1+1e-7)` per
    /// tap, at the integer delay `K//2 − round(P)`.
    pub fn eval_kernel(&self) -> Tensor {
        tch::no_grad(|| {
            let positions = self.rounded_positions();
            self.flushed(construct_kernel(
                &self.weight,
                &positions,
                &self.positions.zeros_like(),
                self.shape.kernel_size,
                KernelVersion::Max,
            ))
        })
    }

    fn flushed(&self, kernel: Tensor) -> Tensor {
        if self.compute.flush_subnormal_taps {
            flush_subnormals(&kernel)
        } else {
            kernel
        }
    }

    /// `(T, B, C_in) → (T + (K−1)//2, B, C_out)`: the padded input cross-correlated with the kernel.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with(x, &self.kernel())
    }

    /// [`Dcls1d::forward`] for a training pass: the kernel is built without a graph, and the
    /// returned cut carries its gradient into the weights and positions once it is known. Through
    /// the FFT, the convolution's middle product is cut as well ([`SpectralCut`]).
    pub fn forward_train(&self, x: &Tensor) -> (Tensor, KernelCut) {
        let kernel = tch::no_grad(|| self.kernel().contiguous());
        let layer = self.shallow_clone();
        match self.compute.convolution {
            Convolution::Fft => {
                let (y, cut) = correlate_cut(x, &kernel, self.shape.padding());
                (y, KernelCut { layer, through: Through::Spectral { kernel, cut } })
            }
            Convolution::Direct => {
                let kernel = kernel.set_requires_grad(self.learns());
                (self.forward_with(x, &kernel), KernelCut { layer, through: Through::Leaf(kernel) })
            }
        }
    }

    /// Whether training moves the kernel (its weights or positions).
    fn learns(&self) -> bool {
        self.weight.requires_grad() || self.positions.requires_grad()
    }

    /// The same layer, sharing its variables.
    fn shallow_clone(&self) -> Dcls1d {
        Dcls1d {
            weight: self.weight.shallow_clone(),
            positions: self.positions.shallow_clone(),
            sigma: self.sigma.shallow_clone(),
            ..*self
        }
    }

    /// The same with a given `(C_out, C_in, K)` kernel (the eval form's).
    pub fn forward_with(&self, x: &Tensor, kernel: &Tensor) -> Tensor {
        correlate(x, kernel, self.shape.padding(), self.compute.convolution)
    }

    /// Clamps positions in place to `[−K//2, K//2]` (§1.3).
    pub fn clamp_positions(&mut self) {
        let limit = self.position_limit();
        tch::no_grad(|| {
            let _ = self.positions.clamp_(-limit, limit);
        });
    }

    /// Positions rounded half to even and clamped to `[−K//2, K//2]`, detached.
    fn rounded_positions(&self) -> Tensor {
        let limit = self.position_limit();
        tch::no_grad(|| self.positions.round().clamp(-limit, limit))
    }

    /// Integer delays in steps, `K//2 − round(P)`, of every tap: `(C_out, C_in, kc)`, int64.
    pub fn tap_delays(&self) -> Tensor {
        (self.rounded_positions().neg() + self.position_limit()).select(0, 0).to_kind(Kind::Int64)
    }

    /// The first tap's integer delays, `(C_out, C_in)`.
    pub fn delays(&self) -> Tensor {
        self.tap_delays().select(-1, 0)
    }
}

/// Where a training pass's kernel leaves autograd, and the layer that rebuilds it.
#[derive(Debug)]
pub struct KernelCut {
    layer: Dcls1d,
    through: Through,
}

/// How the kernel's gradient is known.
#[derive(Debug)]
enum Through {
    /// The kernel as a contiguous leaf of the convolution's graph (so that its gradient arrives in
    /// the layout the convolution's backward makes, and the construction's backward reduces it in
    /// the same order as one autograd pass would).
    Leaf(Tensor),
    /// The kernel's values and the FFT convolution's own cut, which computes it.
    Spectral { kernel: Tensor, cut: SpectralCut },
}

impl KernelCut {
    /// Rebuilds the kernel with its graph and back-propagates its gradient into the weights and
    /// positions (and, through the FFT, the input's into the layers below); nothing when no
    /// gradient reached the cut.
    pub fn backward(&self) {
        let terms: Vec<Tensor> = match &self.through {
            Through::Leaf(kernel) => {
                let grad = kernel.grad();
                grad.defined().then(|| self.through_kernel(grad)).into_iter().collect()
            }
            Through::Spectral { kernel, cut } => match cut.backward(kernel, self.layer.learns()) {
                Some(grads) => grads.kernel.map(|g| self.through_kernel(g)).into_iter().chain(grads.input).collect(),
                None => Vec::new(),
            },
        };
        if let Some(total) = terms.into_iter().reduce(|a, b| a + b) {
            total.backward();
        }
    }

    /// `Σ kernel·grad` over the rebuilt kernel: its backward passes `grad` on exactly.
    fn through_kernel(&self, grad: Tensor) -> Tensor {
        (self.layer.kernel() * grad).sum(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_of(position: f64, sigma: f64, version: KernelVersion) -> Vec<f32> {
        let weight = Tensor::ones([1, 1, 1], (Kind::Float, tch::Device::Cpu));
        let positions = Tensor::from_slice(&[position as f32]).reshape([1, 1, 1, 1]);
        let sigmas = Tensor::from_slice(&[sigma as f32]).reshape([1, 1, 1, 1]);
        let kernel = construct_kernel(&weight, &positions, &sigmas, 5, version);
        Vec::<f32>::try_from(kernel.flatten(0, -1)).unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32]) {
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() <= 1e-7 + 1e-6 * e.abs(), "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn worked_values_of_the_spec() {
        assert_close(&kernel_of(0.3, 0.0, KernelVersion::Max), &[0.0, 0.0, 0.7, 0.29999992, 0.0]);
        assert_close(&kernel_of(0.3, 0.5, KernelVersion::Max), &[0.0, 0.09090911, 0.54545456, 0.36363634, 0.0]);
        assert_close(&kernel_of(0.3, 2.0, KernelVersion::Gauss), &[0.14430386, 0.20463729, 0.23900668, 0.22990781, 0.1821444]);
        assert_close(&kernel_of(0.3, 0.0, KernelVersion::Gauss), &[3.05e-16, 1.6106e-05, 0.93952906, 0.06045468, 4.29e-09]);
    }

    #[test]
    fn flushing_zeroes_exactly_the_subnormal_taps() {
        let tiny = f32::MIN_POSITIVE;
        let kernel = Tensor::from_slice(&[tiny, tiny / 2.0, -tiny / 8.0, -1.0, 0.0, 3e-39, 1e-45]);
        let flushed = Vec::<f32>::try_from(flush_subnormals(&kernel)).unwrap();
        assert_eq!(flushed, vec![tiny, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn eval_kernel_is_a_scaled_one_hot_and_leaves_the_layer_untouched() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let shape = DclsShape { in_channels: 1, out_channels: 1, kernel_count: 1, kernel_size: 5 };
        let layer = Dcls1d::new(&vs.root(), shape, KernelVersion::Gauss, true, DclsCompute::EXACT);
        tch::no_grad(|| {
            let _ = layer.weight.shallow_clone().fill_(1.0);
            let _ = layer.positions.shallow_clone().fill_(-1.5);
            let _ = layer.sigma.shallow_clone().fill_(2.0);
        });
        let one_hot = 1.0f32 / (1.0f32 + 1e-7f32);
        assert_eq!(Vec::<f32>::try_from(layer.eval_kernel().flatten(0, -1)).unwrap(), vec![one_hot, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(layer.delays().int64_value(&[0, 0]), 4);
        assert_eq!((layer.positions.double_value(&[0, 0, 0, 0]), layer.version), (-1.5, KernelVersion::Gauss));
        assert_eq!(layer.sigma.double_value(&[0, 0, 0, 0]), 2.0);
    }
}
