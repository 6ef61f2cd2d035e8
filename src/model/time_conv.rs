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
//!   (`(B, C_in) @ (C_in, C_out)`, on spectra laid out frequency-major; with no conjugated operand
//!   its backward is two batched products, where libtorch would loop over frequencies):
//!   `K·T_out / (4·(N/2+1))` times fewer real multiply-adds than
//!   the direct form (about 10× at the SHD preset; 2.5–3× faster measured), in the `(T, B, C)`
//!   layout the neurons use. It agrees with the direct form to float32 rounding: within
//!   `1e-5 · max|y|` (tested; typically 5e-7), gradients likewise.

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

fn through_fft(x: &Tensor, kernel: &Tensor, [left, right]: [i64; 2]) -> Tensor {
    let (steps, size) = (x.size()[0], kernel.size()[2]);
    let out_steps = steps + left + right - size + 1;
    let length = smooth_length(steps + left.max(right));
    let spectrum = x.fft_rfft(Some(length), 0, "backward").contiguous();
    let reversed = kernel.flip([2]).permute([2, 1, 0]);
    let shift = left - (size - 1);
    let kernel_spectrum = if shift == 0 {
        reversed.fft_rfft(Some(length), 0, "backward")
    } else {
        reversed.constant_pad_nd([0, 0, 0, 0, 0, length - size]).roll([shift], [0]).fft_rfft(None, 0, "backward")
    }
    .contiguous();
    spectrum.matmul(&kernel_spectrum).fft_irfft(Some(length), 0, "backward").narrow(0, 0, out_steps)
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

    /// Output and both gradients of the FFT form against the direct form, at the SHD geometry
    /// and at odd small shapes, within 1e-5 of the largest value.
    #[test]
    fn fft_equals_direct_within_float32_rounding() {
        tch::manual_seed(3);
        for (steps, batch, c_in, c_out, size, padding) in
            [(40, 8, 28, 32, 25, [24, 12]), (7, 3, 5, 4, 31, [30, 15]), (19, 2, 6, 3, 5, [4, 2]), (12, 2, 3, 2, 1, [0, 0])]
        {
            let x = Tensor::rand([steps, batch, c_in], (Kind::Float, Device::Cpu)).lt(0.2).to_kind(Kind::Float);
            let kernel = Tensor::randn([c_out, c_in, size], (Kind::Float, Device::Cpu)) * 0.1;
            let results: Vec<(Tensor, Tensor, Tensor)> = [Convolution::Direct, Convolution::Fft]
                .iter()
                .map(|&how| {
                    let (x, kernel) = (x.copy().set_requires_grad(true), kernel.copy().set_requires_grad(true));
                    let y = correlate(&x, &kernel, padding, how);
                    let upstream = Tensor::ones_like(&y).cumsum(0, Kind::Float).sin();
                    (&y * upstream).sum(Kind::Float).backward();
                    (y.detach(), x.grad(), kernel.grad())
                })
                .collect();
            let (direct, fft) = (&results[0], &results[1]);
            assert_eq!(direct.0.size(), [steps + padding[0] + padding[1] - size + 1, batch, c_out]);
            for (name, a, b) in
                [("output", &direct.0, &fft.0), ("input grad", &direct.1, &fft.1), ("kernel grad", &direct.2, &fft.2)]
            {
                let error = max_abs(&(a - b)) / max_abs(a).max(f64::MIN_POSITIVE);
                assert!(error <= 1e-5, "{name} at T={steps} K={size}: relative error {error:e}");
            }
        }
    }
}
