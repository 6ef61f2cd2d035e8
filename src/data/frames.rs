//! Event-to-frame integration by fixed duration, then channel binning (docs/method.md §5.2–§5.3).
//!
//! Times are ms, `t = fp(1000·time)` from seconds in the file's float type `fp`, and every step
//! below is rounded to that type, as NumPy does for float16 arrays.
//! - `grid` (SpikingJelly 2.0): `t ← t − t₀`; `n = ceil(t_last / Δ)`; frame `min(t // Δ, n−1)`,
//!   so the last frame also takes events at exactly `n·Δ`. As times are sorted, `t // Δ` is only
//!   recomputed when `t` passes the next boundary `(k+1)·Δ` (exact in f64). Where SpikingJelly raises (all events
//!   at one time, so `n = 0`), we return one frame holding every event.
//! - `paper2023`: windows anchored at events: a window starting at `s` takes the consecutive
//!   events with `fp(t − s) ≤ Δ`; the next starts at the first event left. No empty frames.
//!
//! - `digitize` (DelRec's SSC loader): from the times in seconds, as stored; `np.digitize` against
//!   the 250 edges `np.linspace(0, 1.4, 250)`: frame = the number of edges `≤ t`, so frame 0 stays
//!   empty and every sample has 250 frames. A time at or after 1.4 s (frame 250, which the
//!   original cannot hold) goes to the last frame.
//!
//! Binning sums `n_bins` adjacent channels: input `i` counts the events of units
//! `n_bins·i .. n_bins·i + n_bins − 1`. Inputs are spike counts, not binary.

pub use crate::config::Integration;
use half::f16;

/// The float type of a file's spike times; arithmetic on them rounds to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimePrecision {
    Half,
    Single,
}

impl TimePrecision {
    /// Rounds to the file's float type (round-to-nearest-even for float16, as NumPy does).
    #[inline(always)]
    pub fn round(self, x: f32) -> f32 {
        match self {
            TimePrecision::Half => round_to_half(x),
            TimePrecision::Single => x,
        }
    }
}

/// `f32 → f16 → f32` rounding, with a bit-level fast path for the normal float16 range.
#[inline(always)]
fn round_to_half(x: f32) -> f32 {
    if (6.103_515_6e-5..65504.0).contains(&x.abs()) {
        let bits = x.to_bits();
        f32::from_bits(bits.wrapping_add(0x0fff + ((bits >> 13) & 1)) & !0x1fff)
    } else {
        round_to_half_slow(x)
    }
}

#[cold]
fn round_to_half_slow(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Integers below 2048 are exact in float16, so frame indices only need rounding above that.
#[inline(always)]
fn round_index(precision: TimePrecision, index: f32) -> usize {
    if index < 2048.0 {
        index as usize
    } else {
        precision.round(index) as usize
    }
}

/// A dense `(steps, channels)` frame sequence, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Frames {
    pub steps: usize,
    pub channels: usize,
    pub values: Vec<f32>,
}

/// How a sample's events become frames.
#[derive(Clone, Copy, Debug)]
pub struct Framing {
    pub integration: Integration,
    pub duration_ms: f32,
    pub n_bins: usize,
    pub channels: usize,
}

/// The number of edges of the `digitize` integration, and so its frames.
pub const DIGITIZE_EDGES: usize = 250;
/// The last edge of the `digitize` integration, in seconds.
pub const DIGITIZE_SPAN_S: f64 = 1.4;

impl Framing {
    /// Integrates sorted events, given as times in ms and units, into binned frames of a fixed
    /// duration (`grid`, `paper2023`; a `digitize` framing goes through [`Framing::digitized`]).
    pub fn frames(&self, ms: &[f32], units: &[u16], precision: TimePrecision) -> Frames {
        let inputs = self.channels / self.n_bins;
        let Some((&first, &last)) = ms.first().zip(ms.last()) else {
            return Frames { steps: 0, channels: inputs, values: Vec::new() };
        };
        let duration = self.duration_ms;
        let paper = self.integration == Integration::Paper2023;
        let steps = if paper {
            windows(ms, duration, precision).last().map_or(1, |last| last + 1)
        } else {
            (precision.round(precision.round(last - first) / duration).ceil() as usize).max(1)
        };
        let mut values = vec![0.0f32; steps * inputs];
        let mut add = |frame: usize, unit: u16| values[frame * inputs + unit as usize / self.n_bins] += 1.0;
        if paper {
            windows(ms, duration, precision).zip(units).for_each(|(frame, &unit)| add(frame, unit));
        } else {
            let mut frame = 0;
            let mut boundary = duration as f64;
            for (&t, &unit) in ms.iter().zip(units) {
                let shifted = precision.round(t - first) as f64;
                if shifted >= boundary {
                    frame = round_index(precision, floor_divide(shifted as f32, duration));
                    boundary = (frame + 1) as f64 * duration as f64;
                }
                add(frame.min(steps - 1), unit);
            }
        }
        Frames { steps, channels: inputs, values }
    }

    /// The `digitize` frames of events given as times in seconds (as stored) and units.
    pub fn digitized(&self, seconds: &[f64], units: &[u16]) -> Frames {
        let inputs = self.channels / self.n_bins;
        let edges = digitize_edges();
        let mut values = vec![0.0f32; DIGITIZE_EDGES * inputs];
        for (&t, &unit) in seconds.iter().zip(units) {
            let frame = edges.partition_point(|&edge| edge <= t).min(DIGITIZE_EDGES - 1);
            values[frame * inputs + unit as usize / self.n_bins] += 1.0;
        }
        Frames { steps: DIGITIZE_EDGES, channels: inputs, values }
    }
}

/// `np.linspace(0, 1.4, 250)`: `k·step` with `step = 1.4/249`, the last edge exactly 1.4.
fn digitize_edges() -> Vec<f64> {
    let step = DIGITIZE_SPAN_S / (DIGITIZE_EDGES - 1) as f64;
    (0..DIGITIZE_EDGES).map(|k| if k == DIGITIZE_EDGES - 1 { DIGITIZE_SPAN_S } else { k as f64 * step }).collect()
}

/// The window of each event in the event-anchored integration: a new window starts at the first
/// event more than `duration` after the current window's start.
fn windows(ms: &[f32], duration: f32, precision: TimePrecision) -> impl Iterator<Item = usize> + '_ {
    let (mut frame, mut start) = (0, ms[0]);
    ms.iter().map(move |&t| {
        if precision.round(t - start) > duration {
            frame += 1;
            start = t;
        }
        frame
    })
}

/// NumPy's `floor_divide` for `a ≥ 0`, `b > 0`: the exact floor of `a/b`. An f64 quotient of two
/// f32 values never rounds across an integer, so truncating it is exact.
fn floor_divide(a: f32, b: f32) -> f32 {
    (a as f64 / b as f64) as u64 as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digitized_frames_start_at_one_and_keep_every_sample_at_250() {
        let framing = Framing { integration: Integration::Digitize, duration_ms: 5.6, n_bins: 5, channels: 700 };
        let step = 1.4 / 249.0;
        let frames = framing.digitized(&[0.0, step * 0.999, step, 1.0, 1.4, 2.0], &[0, 5, 699, 10, 3, 4]);
        assert_eq!((frames.steps, frames.channels), (250, 140));
        let at = |frame: usize, input: usize| frames.values[frame * 140 + input];
        assert_eq!((at(1, 0), at(1, 1), at(2, 139), at(249, 0)), (1.0, 1.0, 1.0, 2.0));
        assert_eq!(at(178, 2), 1.0, "1.0 s is past edge 177 (0.9952 s) and before edge 178 (1.0008 s)");
        assert_eq!(frames.values[..140].iter().sum::<f32>(), 0.0, "frame 0 stays empty");
    }

    fn framing(integration: Integration) -> Framing {
        Framing { integration, duration_ms: 10.0, n_bins: 5, channels: 700 }
    }

    /// Seconds → float16 seconds → `fp16(1000·t)` ms, as the loader stores them.
    fn half_ms(seconds: &[f32]) -> Vec<f32> {
        seconds.iter().map(|&s| TimePrecision::Half.round(f16::from_f32(s).to_f32() * 1000.0)).collect()
    }

    #[test]
    fn worked_example_of_the_spec() {
        let times = half_ms(&[0.0, 0.004, 0.0101, 0.012, 0.0205, 0.06, 0.0651, 0.071]);
        let units = [0u16, 1, 2, 3, 4, 5, 6, 7];
        let paper = framing(Integration::Paper2023).frames(&times, &units, TimePrecision::Half);
        assert_eq!(paper.steps, 5);
        let grid = framing(Integration::Grid).frames(&times, &units, TimePrecision::Half);
        assert_eq!(grid.steps, 8);
        let per_step: Vec<f32> = grid.values.chunks(140).map(|row| row.iter().sum()).collect();
        assert_eq!(per_step, vec![2.0, 2.0, 1.0, 0.0, 0.0, 0.0, 2.0, 1.0]);
    }

    #[test]
    fn counts_are_binned_over_adjacent_channels() {
        let frames = framing(Integration::Grid).frames(&half_ms(&[0.0, 0.0, 0.0, 0.02]), &[0, 4, 5, 699], TimePrecision::Half);
        assert_eq!((frames.steps, frames.channels), (2, 140));
        assert_eq!((frames.values[0], frames.values[1], frames.values[140 + 139]), (2.0, 1.0, 1.0));
    }

    #[test]
    fn events_at_one_time_make_one_frame() {
        let frames = framing(Integration::Grid).frames(&[500.0, 500.0], &[3, 3], TimePrecision::Single);
        assert_eq!((frames.steps, frames.values[0]), (1, 2.0));
    }

    #[test]
    fn fast_half_rounding_matches_the_half_crate() {
        for i in 0..200_000u32 {
            let x = f32::from_bits(0x3800_0000 + i * 2731) * if i % 2 == 0 { 1.0 } else { -1.0 };
            assert_eq!(round_to_half(x), f16::from_f32(x).to_f32(), "{x}");
        }
    }

    #[test]
    fn numpy_floor_divide() {
        assert_eq!(floor_divide(29.999, 10.0), 2.0);
        assert_eq!(floor_divide(1.0, 0.1), 9.0, "NumPy gives 9: 1/0.1f32 is just below 10, though the f32 quotient rounds to 10");
        assert_eq!(floor_divide(30.0, 10.0), 3.0);
        assert_eq!(floor_divide(0.0, 10.0), 0.0);
    }
}
