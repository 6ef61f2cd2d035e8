//! Datasets, read as the reference reads them (docs/method.md §5), and batched for the network.
//!
//! - [`spikes`]: SHD/SSC HDF5 files; [`frames`]: event-to-frame integration and binning;
//! - [`speech`] and [`mel`]: Google Speech Commands clips and their mel features;
//! - [`batches`]: zero-padded `(T_max, B, C)` batches built in parallel, shuffled per epoch;
//! - [`augment`]: TimeNeurons mask, CutMix and RNoise; [`triple`]: DelRec's SHD augmentation;
//!   [`synth`]: generated SHD-format files;
//! - [`download`]: the datasets from their official locations, verified by checksum.

pub mod augment;
pub mod batches;
pub mod download;
pub mod frames;
pub mod mel;
pub mod prefetch;
pub mod rng;
pub mod speech;
pub mod spikes;
pub mod synth;
pub mod triple;

use crate::config::{Config, Dataset, Validation};
use anyhow::{ensure, Context, Result};
use frames::{Frames, Framing};
use speech::SpeechCommands;
use spikes::SpikeFile;
use std::path::Path;
use std::sync::Arc;
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Train,
    Valid,
    Test,
}

/// The most frames a sample may have (SHD at the preset's 10 ms has about 140).
pub const MAX_STEPS: usize = 100_000;

/// Where a split's samples come from.
#[derive(Debug)]
pub enum Source {
    Spikes { file: SpikeFile, framing: Framing },
    Speech(SpeechCommands),
}

impl Source {
    /// Opens one split of the configured dataset under `dir`.
    pub fn open(config: &Config, dir: &Path, split: Split) -> Result<Source> {
        check_folder(dir)?;
        let classes = config.derived().n_outputs;
        let framing = Framing {
            integration: config.integration,
            duration_ms: config.time_step_ms as f32,
            n_bins: config.n_bins,
            channels: crate::config::RAW_CHANNELS,
        };
        let name = |split_name: &str| format!("{}_{split_name}", if config.dataset == Dataset::Shd { "shd" } else { "ssc" });
        let source = match (config.dataset, split) {
            (Dataset::Gsc, split) => Source::Speech(SpeechCommands::open(dir, split, classes)?),
            (Dataset::Shd, Split::Valid) => anyhow::bail!("SHD has no validation file"),
            (_, Split::Train) => Source::Spikes { file: SpikeFile::open_split(dir, &name("train"), classes)?, framing },
            (_, Split::Valid) => Source::Spikes { file: SpikeFile::open_split(dir, &name("valid"), classes)?, framing },
            (_, Split::Test) => Source::Spikes { file: SpikeFile::open_split(dir, &name("test"), classes)?, framing },
        };
        ensure!(!source.is_empty(), "{}: the {} split has no samples", source.describe(dir), format!("{split:?}").to_lowercase());
        source.max_steps()?;
        Ok(source)
    }

    /// The file or folder the samples come from, for messages.
    fn describe(&self, dir: &Path) -> String {
        match self {
            Source::Spikes { file, .. } => file.path.display().to_string(),
            Source::Speech(_) => dir.display().to_string(),
        }
    }

    /// The most frames a sample can have; an error when the longest sample at `time_step_ms`
    /// would exceed [`MAX_STEPS`].
    pub fn max_steps(&self) -> Result<usize> {
        match self {
            Source::Spikes { file, framing } => {
                let (sample, seconds) = file.latest;
                let steps = (1000.0 * f64::from(seconds) / f64::from(framing.duration_ms)).ceil() + 1.0;
                ensure!(
                    steps <= MAX_STEPS as f64,
                    "{} sample {sample}: its last spike at {seconds} s makes {steps:.0} frames of time_step_ms = {} \
                     (at most {MAX_STEPS}); use a larger time_step_ms",
                    file.path.display(),
                    framing.duration_ms
                );
                Ok(steps as usize)
            }
            Source::Speech(_) => Ok(mel::FRAMES),
        }
    }

    pub fn len(&self) -> usize {
        self.labels().len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels().is_empty()
    }

    pub fn labels(&self) -> &[i64] {
        match self {
            Source::Spikes { file, .. } => &file.labels,
            Source::Speech(speech) => &speech.labels,
        }
    }

    /// The network input of each listed sample, `(T_i, n_inputs)`, before padding.
    pub fn frames(&self, indices: &[usize]) -> Result<Vec<Frames>> {
        use rayon::prelude::*;
        match self {
            Source::Spikes { file, framing } => Ok(indices.par_iter().map(|&i| file.frames(i, framing)).collect()),
            Source::Speech(speech) => {
                let clips = indices.par_iter().map(|&i| speech::read_wav(&speech.files[i])).collect::<Result<Vec<_>>>()?;
                let waveforms: Vec<Tensor> = clips
                    .iter()
                    .map(|clip| mel::pad_or_truncate(&Tensor::from_slice(clip).unsqueeze(0), mel::SAMPLE_RATE))
                    .collect();
                let features = mel::features(&Tensor::cat(&waveforms, 0)).to_kind(Kind::Float).contiguous();
                let (steps, channels) = (features.size()[1] as usize, features.size()[2] as usize);
                let values = Vec::<f32>::try_from(features.flatten(0, -1))?;
                Ok(values.chunks(steps * channels).map(|clip| Frames { steps, channels, values: clip.to_vec() }).collect())
            }
        }
    }
}

/// A view of a source through a list of sample indices.
#[derive(Clone, Debug)]
pub struct Subset {
    pub source: Arc<Source>,
    pub indices: Vec<usize>,
}

impl Subset {
    pub fn whole(source: Arc<Source>) -> Subset {
        let indices = (0..source.len()).collect();
        Subset { source, indices }
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn labels(&self) -> Vec<i64> {
        let labels = self.source.labels();
        self.indices.iter().map(|&i| labels[i]).collect()
    }
}

/// The splits a run uses: train, the split that selects the best epoch, and test if separate.
#[derive(Debug)]
pub struct DataSplits {
    pub train: Subset,
    pub valid: Subset,
    pub test: Option<Subset>,
    /// True when the test split doubles as validation (the paper's SHD protocol).
    pub valid_is_test: bool,
}

impl DataSplits {
    pub fn open(config: &Config, dir: &Path) -> Result<DataSplits> {
        let open = |split| Source::open(config, dir, split).map(Arc::new);
        let train = Subset::whole(open(Split::Train)?);
        let test = Subset::whole(open(Split::Test)?);
        Ok(match config.validation {
            Validation::Test => DataSplits { train, valid: test, test: None, valid_is_test: true },
            Validation::File => {
                DataSplits { train, valid: Subset::whole(open(Split::Valid)?), test: Some(test), valid_is_test: false }
            }
            Validation::Holdout => {
                let (train, valid) = hold_out(train, config.valid_fraction, config.seed);
                DataSplits { train, valid, test: Some(test), valid_is_test: false }
            }
        })
    }

    /// One split as training sees it, opening only the files it needs: `valid` and `train`
    /// follow the configured validation (a hold-out is taken from the train file).
    pub fn subset(config: &Config, dir: &Path, split: Split) -> Result<Subset> {
        let whole = |split| Source::open(config, dir, split).map(|source| Subset::whole(Arc::new(source)));
        let held_out = || whole(Split::Train).map(|train| hold_out(train, config.valid_fraction, config.seed));
        match (split, config.validation) {
            (Split::Test, _) | (Split::Valid, Validation::Test) => whole(Split::Test),
            (Split::Valid, Validation::File) => whole(Split::Valid),
            (Split::Train, Validation::Holdout) => Ok(held_out()?.0),
            (Split::Valid, Validation::Holdout) => Ok(held_out()?.1),
            (Split::Train, _) => whole(Split::Train),
        }
    }

    /// The most frames a sample of any split can have.
    pub fn max_steps(&self) -> Result<usize> {
        let test = self.test.as_ref().map(|t| t.source.max_steps()).transpose()?.unwrap_or(0);
        Ok(self.train.source.max_steps()?.max(self.valid.source.max_steps()?).max(test))
    }

    /// A one-line description of the protocol, for logs.
    pub fn protocol(&self) -> String {
        if self.valid_is_test {
            format!(
                "validation = TEST split ({} samples): the paper's protocol, which selects the best epoch on test",
                self.valid.len()
            )
        } else {
            format!("validation: {} samples, test: {} samples", self.valid.len(), self.test.as_ref().map_or(0, Subset::len))
        }
    }
}

/// A dataset folder that exists, is a folder and can be listed; the error gives the real reason.
fn check_folder(dir: &Path) -> Result<()> {
    let metadata = std::fs::metadata(dir).with_context(|| format!("dataset folder {}", dir.display()))?;
    ensure!(metadata.is_dir(), "{} is a file, not a dataset folder", dir.display());
    std::fs::read_dir(dir).with_context(|| format!("cannot list dataset folder {}", dir.display()))?;
    Ok(())
}

/// Splits off `fraction` of `subset`, chosen by `seed`, as validation.
pub fn hold_out(subset: Subset, fraction: f64, seed: u64) -> (Subset, Subset) {
    let mut order = subset.indices.clone();
    rng::SplitMix64::new(seed ^ 0x05ee_d0f0_a11d).shuffle(&mut order);
    let held = ((subset.len() as f64) * fraction).round() as usize;
    let mut valid = order[..held].to_vec();
    let mut train = order[held..].to_vec();
    valid.sort_unstable();
    train.sort_unstable();
    (Subset { source: subset.source.clone(), indices: train }, Subset { source: subset.source, indices: valid })
}
