//! `snn-delays reproduce`: the dataset's preset (or `--preset`, e.g. DelRec's) over several seeds
//! under each of its selection protocols (`train::protocols`), then `results.md` and
//! `results.json` beside the published figures.
//! A run that finished earlier with the same configuration is reused; an interrupted one resumes.

use super::RunFlags;
use crate::atomic;
use crate::config::{name_of, Config, ConfigSource, Dataset, Preset};
use crate::train::protocols::{markdown, preset_protocols, Protocol, ProtocolResult, SeedResult};
use crate::train::run::{finished_summary, train, Interrupted, Outcome, RunOptions};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    #[arg(long, value_enum)]
    dataset: Dataset,
    /// The preset to run [default: the dataset's]; delrec-ssc (with --dataset ssc) and
    /// delrec-shd (with --dataset shd) run DelRec's recurrent delays under DelRec's protocol
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Dataset folder [default: the preset's data_dir]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Seeds 0..N for each protocol
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Epochs per run [default: the preset's]
    #[arg(long)]
    epochs: Option<usize>,
    /// Override one config key of every run (repeatable), e.g. `--set batch_size=64`
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Folder for the runs and the results [default: runs/reproduce-<dataset>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    run: RunFlags,
}

pub fn run(args: &ReproduceArgs) -> Result<()> {
    anyhow::ensure!(args.seeds >= 1, "--seeds must be at least 1, got 0");
    let preset = preset_of(args)?;
    let name = preset_name(preset);
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("reproduce-{name}")));
    let options = args.run.options(out.clone(), false, None)?;
    let mut results = Vec::new();
    for protocol in preset_protocols(preset) {
        let runs = (0..args.seeds).map(|seed| run_seed(args, protocol, seed, &out, &options)).collect::<Result<Vec<_>>>()?;
        results.push(ProtocolResult::new(protocol, runs));
    }
    let table = markdown(&name.to_uppercase(), &results);
    let json = serde_json::json!({"dataset": args.dataset, "preset": name, "seeds": args.seeds, "protocols": results});
    atomic::write_bytes(&out.join("results.md"), table.as_bytes())?;
    atomic::write_bytes(&out.join("results.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("{table}\nresults in {} and results.json", out.join("results.md").display());
    Ok(())
}

/// `--preset`, which must be one of `--dataset`'s, or the dataset's own.
fn preset_of(args: &ReproduceArgs) -> Result<Preset> {
    let Some(preset) = args.preset else {
        return Ok(args.dataset.into());
    };
    let dataset = Config::of_preset(preset).dataset;
    anyhow::ensure!(
        dataset == args.dataset,
        "--preset {} trains on {}, not on --dataset {}",
        preset_name(preset),
        name_of(&dataset),
        name_of(&args.dataset)
    );
    Ok(preset)
}

/// The preset as `--preset` spells it.
fn preset_name(preset: Preset) -> String {
    preset.to_possible_value().map_or_else(String::new, |value| value.get_name().to_string())
}

/// The configuration of one run: the preset, `--set`, `--epochs`, then the seed and protocol.
fn run_config(args: &ReproduceArgs, protocol: Protocol, seed: u64) -> Result<Config> {
    let mut overrides = args.set.clone();
    overrides.extend(args.epochs.map(|n| format!("epochs={n}")));
    overrides.push(format!("seed={seed}"));
    overrides.push(format!("validation={}", name_of(&protocol.validation)));
    ConfigSource { preset: Some(preset_of(args)?), file: None, overrides: &overrides }.load()
}

/// Runs (or reuses, or resumes) one seed of one protocol and reads its result.
fn run_seed(args: &ReproduceArgs, protocol: Protocol, seed: u64, out: &Path, options: &RunOptions) -> Result<SeedResult> {
    let config = run_config(args, protocol, seed)?;
    let run_dir = out.join(format!("{}-seed{seed}", protocol.name));
    let what = format!("{} protocol, seed {seed} ({})", protocol.name, run_dir.display());
    let summary = match finished_summary(&config, &run_dir)? {
        Some(summary) => {
            println!("{what}: finished earlier, reused");
            summary
        }
        None => {
            let resume = run_dir.join("config.json").exists();
            println!("{what}: {}", if resume { "resuming" } else { "training" });
            let data = args.data.clone().unwrap_or_else(|| PathBuf::from(&config.data_dir));
            let options = RunOptions { run_dir: run_dir.clone(), resume, ..options.clone() };
            match train(&config, &data, &options).with_context(|| what.clone())? {
                Outcome::Finished(summary) => summary,
                Outcome::Interrupted { .. } => return Err(Interrupted.into()),
                Outcome::Paused { epochs_done } => bail!("{what}: paused after {epochs_done} epochs"),
            }
        }
    };
    SeedResult::from_summary(seed, run_dir.display().to_string(), &summary)
        .with_context(|| format!("{}: summary.json lacks the test accuracy at the best epoch", run_dir.display()))
}
