//! `snn-delays train`: runs the paper's training procedure into a run directory.

use super::{ConfigArgs, RunFlags};
use crate::config::name_of;
use crate::train::run::{train, Outcome};
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Dataset folder [default: the config's data_dir]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Number of epochs (same as --set epochs=N)
    #[arg(long)]
    epochs: Option<usize>,
    /// Random seed (same as --set seed=S)
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory [default: runs/<dataset>-<model_type>-<UTC time>]
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its last.safetensors, with the run's own config.json
    /// unless --preset or --config is given (--set may repeat the run's values, not change them)
    #[arg(long)]
    resume: bool,
    /// Stop after this many epochs in total, leaving the run resumable
    #[arg(long, value_name = "N")]
    stop_after: Option<usize>,
    #[command(flatten)]
    run: RunFlags,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let config = load_config(args)?;
    anyhow::ensure!(args.stop_after != Some(0), "--stop-after must be at least 1 (epochs to run before pausing)");
    let run_dir = match (&args.run_dir, args.resume) {
        (Some(dir), _) => dir.clone(),
        (None, true) => bail!("--resume needs --run-dir"),
        (None, false) => {
            PathBuf::from("runs").join(format!("{}-{}-{}", name_of(&config.dataset), name_of(&config.model_type), utc_stamp()))
        }
    };
    let options = args.run.options(run_dir.clone(), args.resume, args.stop_after)?;
    let data = args.data.clone().unwrap_or_else(|| PathBuf::from(&config.data_dir));
    match train(&config, &data, &options)? {
        Outcome::Finished(summary) => {
            println!(
                "best valid accuracy {:.2}% at epoch {} (test accuracy there: {}); summary in {}",
                100.0 * summary["best_valid_acc"].as_f64().unwrap_or(0.0),
                summary["best_valid_epoch"].as_u64().unwrap_or(0),
                summary["test_acc_at_best_valid"].as_f64().map_or("n/a".to_string(), |a| format!("{:.2}%", 100.0 * a)),
                run_dir.join("summary.json").display()
            );
            let parent = run_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            println!("TensorBoard: tensorboard --logdir {}", parent.display());
        }
        Outcome::Interrupted { .. } => return Err(crate::train::run::Interrupted.into()),
        Outcome::Paused { epochs_done } => {
            println!("paused after {epochs_done} epochs; continue with --resume --run-dir {}", run_dir.display())
        }
    }
    Ok(())
}

/// The preset or config file of the flags, or, when `--resume` is given with neither, the run's
/// own `config.json`; then `--set`, `--epochs` and `--seed` on top.
fn load_config(args: &TrainArgs) -> Result<crate::config::Config> {
    let mut config_args = args.config.clone();
    if let (true, Some(dir), None, None) = (args.resume, &args.run_dir, config_args.preset, &config_args.config) {
        let own = dir.join("config.json");
        if own.exists() {
            config_args.config = Some(own);
        }
    }
    config_args.set.extend(args.epochs.map(|n| format!("epochs={n}")));
    config_args.set.extend(args.seed.map(|s| format!("seed={s}")));
    config_args.load()
}

/// `YYYYMMDD-HHMMSS` in UTC, from the system clock.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_787), (2026, 11, 30));
    }
}
