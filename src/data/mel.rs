//! Speech Commands features, as the reference's transform chain (docs/method.md §5.5), batched:
//! 1. pad or truncate to 1 s at 16 kHz;
//! 2. resample 16 → 8 kHz with torchaudio's windowed sinc (Hann, width 6, rolloff 0.99): a
//!    28-tap kernel computed in f64, padding (13, 15), stride 2, first 8000 samples;
//! 3. power spectrogram: n_fft 256, hop 80, periodic Hann, centred reflect padding → 129 × 101;
//! 4. 140 HTK mel bands from 50 to 14000 Hz, no normalisation (bands above 4 kHz are all-zero);
//! 5. `10·log10(max(x, 1e-10))` dB, so dead bands are exactly −100;
//!
//! giving `(101, 140)` per clip.

use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

pub const SAMPLE_RATE: i64 = 16_000;
const RESAMPLED_RATE: i64 = 8_000;
const N_FFT: i64 = 256;
const HOP: i64 = 80;
pub const N_MELS: i64 = 140;
/// Frames per one-second clip (hop 80 at 8 kHz, centred).
pub const FRAMES: usize = 101;
const F_MIN: f64 = 50.0;
const F_MAX: f64 = 14_000.0;
const LOWPASS_WIDTH: f64 = 6.0;
const ROLLOFF: f64 = 0.99;

/// `(B, N)` waveforms at 16 kHz → `(B, 101, 140)` dB mel features.
pub fn features(waveforms: &Tensor) -> Tensor {
    let device = waveforms.device();
    let fixed = pad_or_truncate(waveforms, SAMPLE_RATE);
    let resampled = resample_by_two(&fixed);
    let window = Tensor::hann_window_periodic(N_FFT, true, (Kind::Float, device));
    let centred = resampled.unsqueeze(0).reflection_pad1d([N_FFT / 2, N_FFT / 2]).squeeze_dim(0);
    let spectrum = centred.stft(N_FFT, HOP, N_FFT, Some(&window), false, true, true, false).abs().pow_tensor_scalar(2.0);
    let mel = spectrum.transpose(-1, -2).matmul(&mel_filterbank(device)).transpose(-1, -2);
    (mel.clamp_min(1e-10).log10() * 10.0).transpose(1, 2)
}

/// Zero-pads on the right or cuts to `length` samples.
pub fn pad_or_truncate(waveforms: &Tensor, length: i64) -> Tensor {
    let current = waveforms.size()[1];
    waveforms.constant_pad_nd([0, length - current])
}

/// torchaudio's `Resample(16000, 8000)` with its defaults.
fn resample_by_two(waveforms: &Tensor) -> Tensor {
    let (kernel, width) = sinc_kernel(waveforms.device());
    let (batch, length) = (waveforms.size()[0], waveforms.size()[1]);
    let padded = waveforms.constant_pad_nd([width, width + 2]).unsqueeze(1);
    let out = padded.conv1d(&kernel, None::<Tensor>, [2], [0], [1], 1).transpose(1, 2).reshape([batch, -1]);
    out.narrow(1, 0, (length * RESAMPLED_RATE + SAMPLE_RATE - 1) / SAMPLE_RATE)
}

/// The Hann-windowed sinc kernel for orig 2 → new 1, computed in f64 and stored as f32.
fn sinc_kernel(device: Device) -> (Tensor, i64) {
    let (orig, base) = (2.0, ROLLOFF);
    let width = (LOWPASS_WIDTH * orig / base).ceil() as i64;
    let opts = (Kind::Double, Device::Cpu);
    let index = Tensor::arange_start(-width, width + 2, opts).unsqueeze(0).unsqueeze(0) / orig;
    let t = (Tensor::arange_start_step(0, -1, -1, opts).unsqueeze(1).unsqueeze(2) / 1.0 + index) * base;
    let t = t.clamp(-LOWPASS_WIDTH, LOWPASS_WIDTH);
    let window = (&t * PI / LOWPASS_WIDTH / 2.0).cos().pow_tensor_scalar(2);
    let t = t * PI;
    let sinc = Tensor::ones_like(&t).where_self(&t.eq(0.0), &(t.sin() / &t));
    let kernel = sinc * (window * (base / orig));
    (kernel.to_kind(Kind::Float).to_device(device), width)
}

/// torchaudio's `melscale_fbanks(129, 50, 14000, 140, 8000, norm=None, mel_scale="htk")`.
fn mel_filterbank(device: Device) -> Tensor {
    let opts = (Kind::Float, Device::Cpu);
    let all_freqs = Tensor::linspace(0.0, (RESAMPLED_RATE / 2) as f64, N_FFT / 2 + 1, opts);
    let hz_to_mel = |f: f64| 2595.0 * (1.0 + f / 700.0).log10();
    let mels = Tensor::linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2, opts);
    let f_pts = (Tensor::pow_scalar(10.0, &(mels / 2595.0)) - 1.0) * 700.0;
    let f_diff = f_pts.narrow(0, 1, N_MELS + 1) - f_pts.narrow(0, 0, N_MELS + 1);
    let slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1);
    let down = (slopes.narrow(1, 0, N_MELS) * -1.0) / f_diff.narrow(0, 0, N_MELS);
    let up = slopes.narrow(1, 2, N_MELS) / f_diff.narrow(0, 1, N_MELS);
    down.minimum(&up).clamp_min(0.0).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_gives_101_frames_with_53_dead_bands() {
        let noise = Tensor::randn([2, 16_000], (Kind::Float, Device::Cpu)) * 0.1;
        let out = features(&noise);
        assert_eq!(out.size(), [2, 101, 140]);
        let dead = out.narrow(2, 87, 53);
        assert!(dead.eq(-100.0).all().int64_value(&[]) == 1);
        assert!(out.narrow(2, 0, 87).gt(-100.0).all().int64_value(&[]) == 1);
    }
}
