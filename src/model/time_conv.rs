//! The time convolution of a DCLS synapse (docs/method.md, "Time convolution"): a `(T, B, C_in)`
//! sequence, zero-padded by `P` steps on the left and `R` on the right, cross-correlated with a
//! `(C_out, C_in, K)` kernel, giving `(T + P + R − K + 1, B, C_out)`:
//! `y[t, b, o] = Σ_i Σ_k x_pad[t + k, b, i] · W[o, i, k]`.
//!
//! Two ways, chosen by the config key `convolution`:
//! - [`Convolution::Direct`]: libtorch's `conv1d`, the reference's op, bitwise equal to it;
//! - [`Convolution::Fft`]: the same correlation through the FFT along time. With
//!   `N ≥ T + max(P, R)` and the kernel reversed in time and laid out circularly (tap `k` at
//!   `(P − k) mod N`, whose spectrum is the conjugate of the kernel's),
//!   `y = irfft(rfft(x) · rfft(w̃))[0 .. T_out]`, one complex matrix product per frequency
//!   (`(B, C_in) @ (C_in, C_out)`, on spectra laid out frequency-major, its gradient made
//!   contiguous in the backward so that the backward is two batched products, where libtorch's
//!   CPU backward would loop over frequencies):
//!   `K·T_out / (4·(N/2+1))` times fewer real multiply-adds than
//!   the direct form (about 10× at the SHD preset; 2.5–3× faster measured), in the `(T, B, C)`
//!   layout the neurons use. It agrees with the direct form to float32 rounding: within
//!   `1e-5 · max|y|` (tested; typically 5e-7), gradients likewise.
//!
//! In a training pass the FFT form's middle product leaves autograd ([`SpectralCut`]): its
//! backward recomputes the kernel's spectrum instead of keeping it, and carries the spectrum's
//! gradient to the kernel by an inverse transform.

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// How a DCLS synapse computes its time convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convolution {
    /// Through the FFT along time: faster, equal to the direct form within float32 rounding.
    Fft,
    /// libtorch's `conv1d`, as the reference computes it (bitwise on the CPU).
    Direct,
}

/// Why `how` would be slow on `device` with cuDNN on or off, if it would: libtorch's `conv1d` on
/// CUDA without cuDNN is its fallback convolution, one set of kernel launches per sample.
pub fn slow_on(how: Convolution, device: Device, cudnn: bool) -> Option<String> {
    (how == Convolution::Direct && device.is_cuda() && !cudnn).then(|| {
        "convolution=direct on CUDA without cuDNN runs libtorch's fallback convolution, one launch set per sample: \
         add --cudnn, or use convolution=fft"
            .to_string()
    })
}

/// Cross-correlates `(T, B, C_in)` with `(C_out, C_in, K)` after padding time by `[left, right]`.
pub fn correlate(x: &Tensor, kernel: &Tensor, padding: [i64; 2], how: Convolution) -> Tensor {
    match how {
        Convolution::Direct => direct(x, kernel, padding),
        Convolution::Fft => through_fft(x, kernel, padding),
    }
}

fn direct(x: &Tensor, kernel: &Tensor, padding: [i64; 2]) -> Tensor {
    let padded = x.permute([1, 2, 0]).constant_pad_nd(padding);
    padded.conv1d(kernel, None::<Tensor>, [1], [0], [1], 1).permute([2, 0, 1])
}

/// The most bytes of kernel spectrum built at once in a training pass: the kernel is taken in
/// pieces of output channels below that, so that its spectrum and the FFT's temporaries (three or
/// four times its size) stay small beside what the step keeps.
const SPECTRUM_PIECE_BYTES: i64 = 64 << 20;

/// The sizes of one FFT correlation: the transform length `N`, the output's steps, where the
/// time-reversed kernel's first tap sits in the circular layout, and the output channels of the
/// kernel's pieces.
#[derive(Clone, Copy, Debug)]
struct Plan {
    length: i64,
    out_steps: i64,
    shift: i64,
    size: i64,
    out_channels: i64,
    piece: i64,
}

impl Plan {
    fn of(x: &Tensor, kernel: &Tensor, padding: [i64; 2]) -> Plan {
        Plan::in_pieces(x, kernel, padding, i64::MAX)
    }

    /// With the kernel's spectrum built at most `piece_bytes` (complex64) at a time.
    fn in_pieces(x: &Tensor, kernel: &Tensor, [left, right]: [i64; 2], piece_bytes: i64) -> Plan {
        let (steps, shape) = (x.size()[0], kernel.size());
        let (out_channels, in_channels, size) = (shape[0], shape[1], shape[2]);
        let length = smooth_length(steps + left.max(right));
        let channel_bytes = (length / 2 + 1) * in_channels * 8;
        let piece = (piece_bytes / channel_bytes.max(1)).clamp(1, out_channels.max(1));
        Plan { length, out_steps: steps + left + right - size + 1, shift: left - (size - 1), size, out_channels, piece }
    }

    /// `(first output channel, count)` of each piece of the kernel.
    fn pieces(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        (0..self.out_channels).step_by(self.piece as usize).map(|start| (start, self.piece.min(self.out_channels - start)))
    }

    /// `X̂·K̂`, `(N/2+1, B, C_out)`, the kernel's spectrum built piece by piece.
    fn product(&self, spectrum: &Tensor, kernel: &Tensor) -> Tensor {
        let mut parts: Vec<Tensor> =
            self.pieces().map(|(start, count)| spectrum.matmul(&self.kernel_spectrum(&kernel.narrow(0, start, count)))).collect();
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 2)
        }
    }

    /// `rfft(x)` along time, `(N/2+1, B, C_in)`, frequency-major.
    fn input_spectrum(&self, x: &Tensor) -> Tensor {
        x.fft_rfft(Some(self.length), 0, "backward").contiguous()
    }

    /// The spectrum of the time-reversed kernel laid out circularly, `(N/2+1, C_in, C_out)`.
    fn kernel_spectrum(&self, kernel: &Tensor) -> Tensor {
        let reversed = kernel.flip([2]).permute([2, 1, 0]);
        if self.shift == 0 {
            reversed.fft_rfft(Some(self.length), 0, "backward")
        } else {
            reversed
                .constant_pad_nd([0, 0, 0, 0, 0, self.length - self.size])
                .roll([self.shift], [0])
                .fft_rfft(None, 0, "backward")
        }
        .contiguous()
    }

    /// The output `(T_out, B, C_out)` from the spectrum of the product.
    fn output(&self, product: &Tensor) -> Tensor {
        product.fft_irfft(Some(self.length), 0, "backward").narrow(0, 0, self.out_steps)
    }

    /// The gradient of the `(C_out, C_in, K)` kernel from the gradient `G` of its spectrum (taken
    /// over). The spectrum is `K_f = Σ_n a_n e^{−2πi·fn/N}` of the circular layout `a`, so
    /// `∂L/∂a_n = Re Σ_f G_f e^{2πi·fn/N}`: an unnormalised inverse transform of the half
    /// spectrum, which `irfft` computes once the bins it counts twice (all but the first and, for
    /// even `N`, the last) are halved.
    fn kernel_gradient(&self, spectrum_grad: Tensor) -> Tensor {
        let twice = (self.length - 1) / 2;
        let _ = spectrum_grad.narrow(0, 1, twice).g_mul_scalar_(0.5);
        spectrum_grad
            .fft_irfft(Some(self.length), 0, "forward")
            .roll([-self.shift], [0])
            .narrow(0, 0, self.size)
            .permute([2, 1, 0])
            .flip([2])
    }
}

fn through_fft(x: &Tensor, kernel: &Tensor, padding: [i64; 2]) -> Tensor {
    let plan = Plan::of(x, kernel, padding);
    let product = plan.product(&plan.input_spectrum(x), kernel);
    plan.output(&batch_major_in_backward(&product))
}

/// `spectrum` itself, through a view whose backward makes the incoming gradient contiguous: the
/// irfft's backward leaves frequencies innermost, and libtorch's CPU backward of a batched complex
/// product takes such a gradient one frequency at a time (about 10 dispatched ops per frequency)
/// where one copy lets it call one batched product. Values and gradients are unchanged.
fn batch_major_in_backward(spectrum: &Tensor) -> Tensor {
    spectrum.view_as_real().view_as_complex()
}

/// The FFT correlation of a training pass, whose middle product is left out of autograd and
/// differentiated by hand when its gradient is known (docs/method.md, "Time convolution"). Autograd
/// would keep the kernel's spectrum and its zero-padded layout (two tensors of `(N, C_in, C_out)`,
/// about 270 MiB per 512×512 layer at the SSC preset) from the forward to the backward; the cut
/// keeps only the input's spectrum and recomputes the kernel's spectrum, one FFT, when needed,
/// in pieces of at most 64 MiB.
#[derive(Debug)]
pub struct SpectralCut {
    /// `rfft(x)`, in the graph of `x`.
    input_spectrum: Tensor,
    /// The product's spectrum, a leaf whose gradient the output's backward fills.
    product: Tensor,
    plan: Plan,
}

/// What a [`SpectralCut`] hands back: the kernel's gradient, and a scalar whose backward carries
/// the input's gradient into the graph of `x`.
pub struct SpectralGrads {
    pub kernel: Option<Tensor>,
    pub input: Option<Tensor>,
}

/// [`correlate`] through the FFT for a training pass; `kernel` carries no graph.
pub fn correlate_cut(x: &Tensor, kernel: &Tensor, padding: [i64; 2]) -> (Tensor, SpectralCut) {
    cut_in_pieces(x, kernel, padding, SPECTRUM_PIECE_BYTES)
}

fn cut_in_pieces(x: &Tensor, kernel: &Tensor, padding: [i64; 2], piece_bytes: i64) -> (Tensor, SpectralCut) {
    let plan = Plan::in_pieces(x, kernel, padding, piece_bytes);
    let input_spectrum = plan.input_spectrum(x);
    let product = tch::no_grad(|| plan.product(&input_spectrum, kernel)).set_requires_grad(true);
    (plan.output(&product), SpectralCut { input_spectrum, product, plan })
}

impl SpectralCut {
    /// With the product's gradient `G` known: the input spectrum's gradient `G·K^H` and the
    /// kernel spectrum's `X^H·G` (as autograd computes a complex matrix product's), the latter
    /// carried back to the kernel when `kernel_wanted`. `None` when no gradient reached the cut.
    pub fn backward(&self, kernel: &Tensor, kernel_wanted: bool) -> Option<SpectralGrads> {
        let grad = self.product.grad();
        if !grad.defined() {
            return None;
        }
        let grad = grad.contiguous();
        let input_wanted = self.input_spectrum.requires_grad();
        let (mut input_grad, mut kernel_grads): (Option<Tensor>, Vec<Tensor>) = (None, Vec::new());
        tch::no_grad(|| {
            let spectrum_adjoint = self.input_spectrum.detach().mh();
            for (start, count) in self.plan.pieces() {
                let piece_grad = grad.narrow(2, start, count);
                if input_wanted {
                    let spectrum = self.plan.kernel_spectrum(&kernel.narrow(0, start, count));
                    let part = piece_grad.matmul(&spectrum.mh());
                    match &mut input_grad {
                        Some(sum) => *sum += part,
                        None => input_grad = Some(part),
                    }
                }
                if kernel_wanted {
                    kernel_grads.push(self.plan.kernel_gradient(spectrum_adjoint.matmul(&piece_grad)));
                }
            }
        });
        let kernel_grad = kernel_wanted.then(|| Tensor::cat(&kernel_grads, 0));
        let input = input_grad.map(|g| (self.input_spectrum.view_as_real() * g.view_as_real()).sum(tch::Kind::Float));
        Some(SpectralGrads { kernel: kernel_grad, input })
    }
}

/// The smallest `n ≥ at_least` whose only prime factors are 2, 3 and 5 (fast FFT sizes).
fn smooth_length(at_least: i64) -> i64 {
    (at_least.max(1)..)
        .find(|&n| {
            let mut m = n;
            for p in [2, 3, 5] {
                while m % p == 0 {
                    m /= p;
                }
            }
            m == 1
        })
        .expect("smooth numbers are unbounded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }

    #[test]
    fn direct_convolution_on_cuda_without_cudnn_is_flagged() {
        assert!(slow_on(Convolution::Direct, Device::Cuda(0), false).unwrap().contains("--cudnn"));
        assert_eq!(slow_on(Convolution::Fft, Device::Cuda(0), false), None);
        assert_eq!(slow_on(Convolution::Direct, Device::Cpu, false), None);
        assert_eq!(slow_on(Convolution::Direct, Device::Cuda(0), true), None);
    }

    #[test]
    fn smooth_lengths() {
        assert_eq!([1, 7, 136, 149, 250].map(smooth_length), [1, 8, 144, 150, 250]);
    }

    /// Output, input gradient and kernel gradient of `x ⋆ kernel` under `upstream`, by `how`, or
    /// through the training cut (`None`) with the kernel's spectrum in pieces of `piece_bytes`.
    fn correlated(x: &Tensor, kernel: &Tensor, padding: [i64; 2], how: Option<Convolution>, piece_bytes: i64) -> [Tensor; 3] {
        let x = x.copy().set_requires_grad(true);
        let upstream = |y: &Tensor| Tensor::ones_like(y).cumsum(0, Kind::Float).sin();
        match how {
            Some(how) => {
                let kernel = kernel.copy().set_requires_grad(true);
                let y = correlate(&x, &kernel, padding, how);
                (&y * upstream(&y)).sum(Kind::Float).backward();
                [y.detach(), x.grad(), kernel.grad()]
            }
            None => {
                let (y, cut) = cut_in_pieces(&x, kernel, padding, piece_bytes);
                (&y * upstream(&y)).sum(Kind::Float).backward();
                let grads = cut.backward(kernel, true).unwrap();
                grads.input.unwrap().backward();
                [y.detach(), x.grad(), grads.kernel.unwrap()]
            }
        }
    }

    /// Output and both gradients of the FFT form, with autograd and through the training cut (the
    /// kernel's spectrum whole, and in pieces of a few output channels), against the direct form, at the SHD geometry and at odd small shapes (a kernel placed off
    /// its usual circular position among them), within 1e-5 of the largest value.
    #[test]
    fn fft_equals_direct_within_float32_rounding() {
        tch::manual_seed(3);
        for (steps, batch, c_in, c_out, size, padding) in [
            (40, 8, 28, 32, 25, [24, 12]),
            (7, 3, 5, 4, 31, [30, 15]),
            (19, 2, 6, 3, 5, [4, 2]),
            (12, 2, 3, 2, 1, [0, 0]),
            (16, 2, 3, 4, 5, [6, 1]),
            (9, 3, 2, 2, 4, [1, 3]),
        ] {
            let x = Tensor::rand([steps, batch, c_in], (Kind::Float, Device::Cpu)).lt(0.2).to_kind(Kind::Float);
            let kernel = Tensor::randn([c_out, c_in, size], (Kind::Float, Device::Cpu)) * 0.1;
            let direct = correlated(&x, &kernel, padding, Some(Convolution::Direct), 0);
            assert_eq!(direct[0].size(), [steps + padding[0] + padding[1] - size + 1, batch, c_out]);
            let one_channel = (steps + padding[0].max(padding[1])) * c_in * 8;
            for (how, piece_bytes) in [(Some(Convolution::Fft), 0), (None, SPECTRUM_PIECE_BYTES), (None, 2 * one_channel)] {
                let fft = correlated(&x, &kernel, padding, how, piece_bytes);
                for (name, (a, b)) in ["output", "input grad", "kernel grad"].iter().zip(direct.iter().zip(&fft)) {
                    let error = max_abs(&(a - b)) / max_abs(a).max(f64::MIN_POSITIVE);
                    assert!(
                        error <= 1e-5,
                        "{name} ({how:?}, pieces of {piece_bytes} bytes) at T={steps} K={size}: relative error {error:e}"
                    );
                }
            }
        }
    }

    /// The training cut keeps no gradient where none is asked for, and hands back nothing when
    /// no gradient reached it.
    #[test]
    fn spectral_cut_computes_only_the_gradients_wanted() {
        let x = Tensor::rand([10, 2, 3], (Kind::Float, Device::Cpu));
        let kernel = Tensor::randn([4, 3, 5], (Kind::Float, Device::Cpu));
        let (y, cut) = correlate_cut(&x, &kernel, [4, 2]);
        assert!(cut.backward(&kernel, true).is_none());
        y.sum(Kind::Float).backward();
        let grads = cut.backward(&kernel, false).unwrap();
        assert!(grads.kernel.is_none() && grads.input.is_none());
    }

    /// The FFT form's forward and backward dispatch as many ops at 200 steps as at 20: no loop
    /// over frequencies (at products above libtorch's small-product size, which it computes
    /// without dispatching).
    #[test]
    fn fft_backward_does_not_loop_over_frequencies() {
        let ops_at = |steps: i64| {
            let x = Tensor::rand([steps, 8, 12], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let kernel = Tensor::randn([10, 12, 7], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let ((), counts) = crate::op_count::count_here(|| {
                correlate(&x, &kernel, [6, 3], Convolution::Fft).square().sum(Kind::Float).backward()
            });
            counts.ops
        };
        assert_eq!(ops_at(200), ops_at(20));
    }
}
