//! Generated datasets in the exact SHD layout (float16 seconds in `spikes/times`, uint16
//! `spikes/units`, uint8 `labels`, string `extra/keys`), for offline runs and tests.
//!
//! The 700 channels form `groups` bands. Every sample holds one burst per band plus uniform
//! background noise, so all classes have the same spike counts per band. A class is a pattern of
//! burst onsets: band g fires at `start + offset_c[g]`, with `start` random per sample and
//! every spike jittered. Only the *relative* timing across bands tells the classes apart, so
//! nearly memoryless neurons (SHD's τ ≈ 1 step) need synaptic delays to bring the bursts into
//! coincidence. The same seed gives the same files.

use super::rng::SplitMix64;
use crate::atomic;
use crate::config::RAW_CHANNELS;
use anyhow::{ensure, Context, Result};
use half::f16;
use hdf5::types::{VarLenArray, VarLenUnicode};
use std::path::Path;

const CLASS_STREAM: u64 = 3;
const SAMPLE_STREAM: u64 = 4;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub classes: usize,
    pub train: usize,
    pub test: usize,
    pub seed: u64,
    /// Channel bands, one burst each.
    pub groups: usize,
    /// Burst onsets of a class lie in `0..=max_offset_ms`, on a 20 ms grid.
    pub max_offset_ms: f64,
    /// Spikes per burst.
    pub burst_spikes: usize,
    /// Standard deviation of each spike's time around its burst onset.
    pub jitter_ms: f64,
    /// Background spikes per second, over all channels.
    pub noise_rate_hz: f64,
    pub duration_ms: f64,
    /// Each recording ends at a time drawn uniformly in `[min_length_ms, duration_ms)`, its later
    /// spikes dropped (recordings of different lengths); `None` keeps every recording whole.
    pub min_length_ms: Option<f64>,
}

impl Default for SynthSpec {
    fn default() -> SynthSpec {
        SynthSpec {
            classes: 10,
            train: 2000,
            test: 500,
            seed: 0,
            groups: 4,
            max_offset_ms: 160.0,
            burst_spikes: 60,
            jitter_ms: 2.0,
            noise_rate_hz: 1500.0,
            duration_ms: 600.0,
            min_length_ms: None,
        }
    }
}

/// One sample: sorted times in seconds and their units.
struct Sample {
    times: Vec<f16>,
    units: Vec<u16>,
}

impl SynthSpec {
    fn check(&self) -> Result<()> {
        ensure!(self.classes >= 2 && self.classes <= 255, "--classes must be in 2..=255, got {}", self.classes);
        ensure!(self.train > 0 && self.test > 0, "--train and --test must be positive");
        ensure!(self.groups >= 2 && RAW_CHANNELS.is_multiple_of(self.groups), "groups must divide {RAW_CHANNELS}");
        ensure!(
            self.max_offset_ms.is_finite() && self.max_offset_ms >= 20.0,
            "--max-offset-ms must be at least 20 (one step of the onset grid), got {}",
            self.max_offset_ms
        );
        ensure!(
            self.duration_ms.is_finite() && self.duration_ms >= self.max_offset_ms + 80.0,
            "--duration-ms must be at least --max-offset-ms + 80 ({} ms), got {}",
            self.max_offset_ms + 80.0,
            self.duration_ms
        );
        let grid = (self.max_offset_ms / 20.0) as usize + 1;
        ensure!(grid.pow(self.groups as u32 - 1) >= self.classes, "too many classes for the onset grid");
        ensure!(
            self.noise_rate_hz.is_finite() && self.noise_rate_hz >= 0.0,
            "--noise-rate must be a finite number of spikes per second, at least 0, got {}",
            self.noise_rate_hz
        );
        if let Some(min) = self.min_length_ms {
            ensure!(
                min.is_finite() && (1.0..=self.duration_ms).contains(&min),
                "--min-length-ms must be between 1 and {} ms, got {min}",
                self.duration_ms
            );
        }
        let events = (self.noise_rate_hz * self.duration_ms / 1000.0) as u64 + (self.groups * self.burst_spikes) as u64;
        let samples = (self.train + self.test) as u64;
        crate::memory::Budget::machine().check(
            &format!("generating {samples} samples of {events} spikes"),
            &[("spikes", samples.saturating_mul(events).saturating_mul(4)), ("one sample's sort", events.saturating_mul(24))],
        )
    }

    /// Distinct onset patterns, one per class, each with its earliest band at 0 ms.
    fn patterns(&self) -> Vec<Vec<f64>> {
        let mut rng = SplitMix64::derived(self.seed, CLASS_STREAM, 0);
        let slots = (self.max_offset_ms / 20.0) as usize + 1;
        let mut patterns: Vec<Vec<f64>> = Vec::new();
        while patterns.len() < self.classes {
            let raw: Vec<usize> = (0..self.groups).map(|_| rng.below(slots)).collect();
            let earliest = *raw.iter().min().expect("groups > 0");
            let pattern: Vec<f64> = raw.iter().map(|&s| (s - earliest) as f64 * 20.0).collect();
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        patterns
    }

    fn sample(&self, pattern: &[f64], rng: &mut SplitMix64) -> Sample {
        let band = RAW_CHANNELS / self.groups;
        let span = pattern.iter().cloned().fold(0.0, f64::max);
        let start = 20.0 + rng.uniform() * (self.duration_ms - span - 60.0);
        let mut events: Vec<(f64, u16)> = Vec::new();
        for (group, offset) in pattern.iter().enumerate() {
            for _ in 0..self.burst_spikes {
                let time = start + offset + rng.normal() * self.jitter_ms;
                events.push((time.max(0.0), (group * band + rng.below(band)) as u16));
            }
        }
        let noise = (self.noise_rate_hz * self.duration_ms / 1000.0) as usize;
        for _ in 0..noise {
            events.push((rng.uniform() * self.duration_ms, rng.below(RAW_CHANNELS) as u16));
        }
        if let Some(min) = self.min_length_ms {
            let end = min + rng.uniform() * (self.duration_ms - min);
            events.retain(|&(ms, _)| ms < end);
            if events.is_empty() {
                events.push((0.0, rng.below(RAW_CHANNELS) as u16));
            }
        }
        let mut quantised: Vec<(f16, u16)> = events.into_iter().map(|(ms, unit)| (f16::from_f64(ms / 1000.0), unit)).collect();
        quantised.sort_by(|a, b| a.0.total_cmp(&b.0));
        Sample { times: quantised.iter().map(|e| e.0).collect(), units: quantised.iter().map(|e| e.1).collect() }
    }

    /// Writes `shd_train.h5` and `shd_test.h5` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.check()?;
        let patterns = self.patterns();
        for (split, count, stream_index) in [("train", self.train, 0u64), ("test", self.test, 1)] {
            let mut rng = SplitMix64::derived(self.seed, SAMPLE_STREAM, stream_index);
            let labels: Vec<u8> = (0..count).map(|_| rng.below(self.classes) as u8).collect();
            let samples: Vec<Sample> = labels.iter().map(|&l| self.sample(&patterns[l as usize], &mut rng)).collect();
            let path = dir.join(format!("shd_{split}.h5"));
            atomic::write_with(&path, |temporary| write_h5(temporary, &samples, &labels, self.classes))?;
        }
        Ok(())
    }
}

fn write_h5(path: &Path, samples: &[Sample], labels: &[u8], classes: usize) -> Result<()> {
    let file = hdf5::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let spikes = file.create_group("spikes")?;
    let times: Vec<VarLenArray<f16>> = samples.iter().map(|s| VarLenArray::from_slice(&s.times)).collect();
    let units: Vec<VarLenArray<u16>> = samples.iter().map(|s| VarLenArray::from_slice(&s.units)).collect();
    spikes.new_dataset_builder().with_data(&times).create("times")?;
    spikes.new_dataset_builder().with_data(&units).create("units")?;
    file.new_dataset_builder().with_data(labels).create("labels")?;
    let keys: Vec<VarLenUnicode> = (0..classes).map(|c| format!("pattern_{c:02}").parse()).collect::<Result<_, _>>()?;
    file.create_group("extra")?.new_dataset_builder().with_data(&keys).create("keys")?;
    file.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_distinct_and_anchored_at_zero() {
        let spec = SynthSpec { classes: 20, ..SynthSpec::default() };
        let patterns = spec.patterns();
        assert_eq!(patterns.len(), 20);
        assert!(patterns.iter().all(|p| p.iter().cloned().fold(f64::MAX, f64::min) == 0.0));
    }
}
