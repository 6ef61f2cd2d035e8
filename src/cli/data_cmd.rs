//! `snn-delays data download|info|export|bench`: fetch a dataset, inspect it, export the network
//! inputs exactly as training sees them (before batching), and time the loader from files to
//! padded batches.

use crate::checkpoint;
use crate::config::{Config, ConfigSource, Dataset, Integration, Validation};
use crate::data::batches::batches;
use crate::data::{DataSplits, Source, Split, Subset};
use crate::progress::{Progress, Unit};
use anyhow::{ensure, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tch::Tensor;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download a dataset from its official location, verify its checksums and unpack it.
    Download(DownloadArgs),
    /// Samples per split and class, the distribution of T, and spike or feature statistics.
    Info(DataArgs),
    /// Write the network input of each sample (`x.<i>`, (T_i, n_inputs) f32) and `labels`.
    Export(ExportArgs),
    /// Samples per second from the files to padded, shuffled batches of the train split.
    Bench(DataArgs),
}

/// Which dataset, where, and the config overrides that shape its frames.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[arg(long, value_enum)]
    dataset: Dataset,
    /// The dataset folder (SHD/SSC: the .h5, .h5.gz or .h5.zip files; GSC: the v0.02 folder)
    #[arg(long, value_name = "PATH")]
    data: PathBuf,
    /// JSON config file whose keys override the dataset's preset
    #[arg(long, value_name = "FILE.json")]
    config: Option<PathBuf>,
    /// Override one config key (repeatable), e.g. `--set time_step_ms=5`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    #[arg(long, value_enum)]
    dataset: Dataset,
    /// Folder to download into (then give it as `--data`)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A mirror holding the same files [default: zenkelab.org/datasets for SHD/SSC,
    /// download.tensorflow.org/data for GSC]
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, value_enum)]
    split: Split,
    #[arg(long, value_name = "OUT.safetensors")]
    out: PathBuf,
    /// Export only the first N samples
    #[arg(long)]
    limit: Option<usize>,
    /// Frame integration for SHD/SSC [default: the config's `integration`]
    #[arg(long, value_enum)]
    integration: Option<Integration>,
}

impl DataArgs {
    fn load(&self, extra: &[String]) -> Result<Config> {
        let overrides: Vec<String> = self.set.iter().chain(extra).cloned().collect();
        ConfigSource { preset: Some(self.dataset.into()), file: self.config.as_deref(), overrides: &overrides }.load()
    }
}

pub fn run(command: &DataCommand) -> Result<()> {
    match command {
        DataCommand::Download(args) => {
            crate::data::download::download(args.dataset, &args.out, args.base_url.as_deref(), args.quiet)
        }
        DataCommand::Info(args) => info(args),
        DataCommand::Export(args) => export(args),
        DataCommand::Bench(args) => bench(args),
    }
}

fn info(args: &DataArgs) -> Result<()> {
    let config = args.load(&[])?;
    let classes = config.derived().n_outputs;
    let splits: &[Split] =
        if config.dataset == Dataset::Shd { &[Split::Train, Split::Test] } else { &[Split::Train, Split::Valid, Split::Test] };
    println!("{}", protocol(&config));
    for &split in splits {
        let source = Source::open(&config, &args.data, split)?;
        let subset = Subset::whole(Arc::new(source));
        let mut per_class = vec![0usize; classes];
        subset.labels().iter().for_each(|&l| per_class[l as usize] += 1);
        println!("{split:?}: {} samples; per class {:?}", subset.len(), per_class);
        let mut steps = Vec::with_capacity(subset.len());
        let (mut total, mut nonzero, mut values) = (0f64, 0usize, 0usize);
        let (mut low, mut high) = (f32::INFINITY, f32::NEG_INFINITY);
        for chunk in subset.indices.chunks(512) {
            for frames in subset.source.frames(chunk)? {
                steps.push(frames.steps);
                total += frames.values.iter().map(|&v| v as f64).sum::<f64>();
                nonzero += frames.values.iter().filter(|&&v| v != 0.0).count();
                values += frames.values.len();
                low = frames.values.iter().cloned().fold(low, f32::min);
                high = frames.values.iter().cloned().fold(high, f32::max);
            }
        }
        steps.sort_unstable();
        let quantile = |q: f64| steps[((steps.len() - 1) as f64 * q).round() as usize];
        println!(
            "  T: min {} | p5 {} | median {} | mean {:.1} | p95 {} | max {}",
            steps[0],
            quantile(0.05),
            quantile(0.5),
            steps.iter().sum::<usize>() as f64 / steps.len() as f64,
            quantile(0.95),
            steps[steps.len() - 1]
        );
        if let Source::Spikes { file, .. } = subset.source.as_ref() {
            let events: usize = (0..file.len()).map(|i| file.event_count(i)).sum();
            println!("  spikes per sample: mean {:.1}; time precision {:?}", events as f64 / file.len() as f64, file.precision());
        }
        println!(
            "  inputs: mean {:.4} per value, {:.2}% non-zero, range [{low}, {high}]",
            total / values as f64,
            100.0 * nonzero as f64 / values as f64
        );
    }
    Ok(())
}

/// How the configured run selects its best epoch.
fn protocol(config: &Config) -> String {
    match config.validation {
        Validation::Test => "validation: the TEST split (the paper's protocol: the best epoch is selected on test)".to_string(),
        Validation::Holdout => {
            format!("validation: {:.0}% of train held out by seed {}", config.valid_fraction * 100.0, config.seed)
        }
        Validation::File => "validation: the dataset's own validation split".to_string(),
    }
}

fn export(args: &ExportArgs) -> Result<()> {
    let extra: Vec<String> = args
        .integration
        .map(|i| format!("integration={}", serde_json::to_value(i).unwrap().as_str().unwrap()))
        .into_iter()
        .collect();
    let config = args.data.load(&extra)?;
    let subset = DataSplits::subset(&config, &args.data.data, args.split)?;
    let count = args.limit.unwrap_or(subset.len()).min(subset.len());
    let indices = &subset.indices[..count];
    let mut named = Vec::with_capacity(count + 1);
    let progress = Progress::new("export", count as u64, Unit::Items, false);
    for (chunk_start, chunk) in indices.chunks(512).enumerate().map(|(c, chunk)| (c * 512, chunk)) {
        progress.advance(chunk.len() as u64);
        for (offset, frames) in subset.source.frames(chunk)?.into_iter().enumerate() {
            let x = Tensor::from_slice(&frames.values).reshape([frames.steps as i64, frames.channels as i64]);
            named.push((format!("x.{}", chunk_start + offset), x));
        }
    }
    named.push(("labels".to_string(), Tensor::from_slice(&subset.labels()[..count])));
    checkpoint::write_tensors(&args.out, &named)?;
    println!("wrote {count} samples of the {:?} split to {}", args.split, args.out.display());
    Ok(())
}

fn bench(args: &DataArgs) -> Result<()> {
    let config = args.load(&[])?;
    let started = Instant::now();
    let source = Source::open(&config, &args.data, Split::Train)?;
    let opened = started.elapsed().as_secs_f64();
    let subset = Subset::whole(Arc::new(source));
    ensure!(!subset.is_empty(), "the train split is empty");
    let classes = config.derived().n_outputs as i64;
    let mut count = 0;
    for batch in batches(&subset, config.batch_size, classes, Some((config.seed, 0))) {
        count += batch?.lengths.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"samples\": {count}, \"seconds\": {seconds:.4}, \"open_seconds\": {opened:.4}, \"samples_per_second\": {:.1}, \"threads\": {}}}",
        count as f64 / seconds,
        rayon::current_num_threads()
    );
    Ok(())
}
