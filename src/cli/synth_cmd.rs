//! `snn-delays synth`: writes a generated delay-task dataset in the SHD layout.

use crate::data::synth::SynthSpec;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Folder to write shd_train.h5 and shd_test.h5 into
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long, default_value_t = SynthSpec::default().classes)]
    classes: usize,
    /// Training samples
    #[arg(long, default_value_t = SynthSpec::default().train)]
    train: usize,
    /// Test samples
    #[arg(long, default_value_t = SynthSpec::default().test)]
    test: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Background spikes per second over all 700 channels
    #[arg(long, default_value_t = SynthSpec::default().noise_rate_hz)]
    noise_rate: f64,
    /// Cut each recording at a random time between this and its length (recordings of
    /// different lengths, as real ones are) [default: every recording whole]
    #[arg(long, value_name = "MS")]
    min_length_ms: Option<f64>,
    /// Burst onsets of a class lie in 0..=MS after the first, on a 20 ms grid
    #[arg(long, value_name = "MS", default_value_t = SynthSpec::default().max_offset_ms)]
    max_offset_ms: f64,
    /// Length of each recording
    #[arg(long, value_name = "MS", default_value_t = SynthSpec::default().duration_ms)]
    duration_ms: f64,
    /// Replace the dataset files if --out already holds them
    #[arg(long)]
    force: bool,
}

pub fn run(args: &SynthArgs) -> Result<()> {
    for name in ["shd_train.h5", "shd_test.h5"] {
        let path = args.out.join(name);
        anyhow::ensure!(args.force || !path.exists(), "{} already exists; pass --force to replace it", path.display());
    }
    let spec = SynthSpec {
        classes: args.classes,
        train: args.train,
        test: args.test,
        seed: args.seed,
        noise_rate_hz: args.noise_rate,
        min_length_ms: args.min_length_ms,
        max_offset_ms: args.max_offset_ms,
        duration_ms: args.duration_ms,
        ..SynthSpec::default()
    };
    spec.write(&args.out)?;
    println!("wrote {} train and {} test samples of {} classes to {}", spec.train, spec.test, spec.classes, args.out.display());
    Ok(())
}
