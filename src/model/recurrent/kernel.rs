//! The recurrent-delay kernel (docs/method.md "Recurrent delays", the kernel): each presynaptic
//! neuron j has one continuous delay `d_j` and a triangular kernel over taps `k = 0..L−1`,
//! centred `c_j = 1 + d_j` steps after its spike:
//!
//! `K_j[k] = max(0, s_j − |k − c_j|) / s_j²`,
//!
//! with width `s_j = 1 + 2σ·sigmoid(p_j)` (a learned spread per neuron) or `s = 1 + σ` (shared),
//! and window `L = ceil(1 + max d + max s) + 1` (at least 2), recomputed at every pass. Tap 0 is
//! never used, so mass at `k ≤ 0` is lost. The `max(0, ·)` passes no gradient where it is 0.

use tch::{Kind, Tensor};

/// The kernel widths `s`, `(N)`: from the spread logits `p` when each neuron learns one, else
/// `1 + σ` for all `n` neurons (no gradient).
pub fn widths(spread: Option<&Tensor>, sigma: f64, delays: &Tensor) -> Tensor {
    match spread {
        Some(logits) => logits.sigmoid() * (2.0 * sigma) + 1.0,
        None => Tensor::full(delays.size(), 1.0 + sigma, (Kind::Float, delays.device())),
    }
}

/// `L = ceil(1 + max d + max s) + 1`, in float32 as the tensors hold them, and at least 2 (one
/// usable tap) when every delay is so negative that the formula gives less.
pub fn window_length(delays: &Tensor, widths: &Tensor) -> i64 {
    let reach = tch::no_grad(|| (delays.max() + 1.0 + widths.max()).double_value(&[]));
    (reach.ceil() as i64 + 1).max(2)
}

/// The kernel `(N, L)` for `delays` and `widths`, with autograd to both.
pub fn triangle_kernel(delays: &Tensor, widths: &Tensor) -> Tensor {
    let length = window_length(delays, widths);
    let taps = Tensor::arange(length, (Kind::Float, delays.device())).unsqueeze(0);
    let centres = (delays + 1.0).unsqueeze(1);
    let width = widths.unsqueeze(1);
    (&width - (taps - centres).abs()).relu() / width.square()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kernel: &Tensor, j: i64) -> Vec<f32> {
        Vec::<f32>::try_from(kernel.get(j)).unwrap()
    }

    #[test]
    fn an_integer_delay_of_width_one_is_a_single_tap_one_step_later() {
        let delays = Tensor::from_slice(&[0.0f32, 3.0]);
        let kernel = triangle_kernel(&delays, &widths(None, 0.0, &delays));
        assert_eq!(kernel.size(), [2, 6]);
        assert_eq!(row(&kernel, 0), vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(row(&kernel, 1), vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn a_fractional_delay_interpolates_between_its_neighbours() {
        let delays = Tensor::from_slice(&[1.25f32]);
        assert_eq!(row(&triangle_kernel(&delays, &widths(None, 0.0, &delays)), 0), vec![0.0, 0.0, 0.75, 0.25, 0.0]);
    }

    #[test]
    fn a_wide_kernel_loses_its_mass_left_of_tap_one() {
        let delays = Tensor::from_slice(&[0.0f32]);
        let kernel = triangle_kernel(&delays, &widths(None, 1.0, &delays));
        assert_eq!(row(&kernel, 0), vec![0.25, 0.5, 0.25, 0.0]);
        let spread = Tensor::from_slice(&[0.0f32]);
        assert_eq!(widths(Some(&spread), 1.0, &delays).double_value(&[0]), 2.0);
    }

    #[test]
    fn the_window_covers_the_widest_kernel_and_keeps_one_tap() {
        let delays = Tensor::from_slice(&[2.5f32, -1.0]);
        assert_eq!(window_length(&delays, &Tensor::from_slice(&[1.2f32, 3.0])), 8);
        assert_eq!(window_length(&Tensor::from_slice(&[-9.0f32]), &Tensor::from_slice(&[1.0f32])), 2);
    }
}
