//! `snn-delays train`: runs the paper's training procedure into a run directory, in one process
//! or, under torchrun, Slurm or `snn-delays launch`, as one rank of a data-parallel run.

use super::{ConfigArgs, RunFlags};
use crate::config::name_of;
use crate::distributed::{timeout_from, Group, World};
use crate::train::run::{train, Outcome, RunOptions};
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
    /// Rank 0's host for a multi-process run whose launcher sets no MASTER_ADDR (Slurm)
    #[arg(long, value_name = "HOST")]
    master_addr: Option<String>,
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
    let world = World::from_env(|name| std::env::var(name).ok(), args.master_addr.as_deref())?;
    let mut options = args.run.options(run_dir.clone(), args.resume, args.stop_after)?;
    if let Some(world) = world {
        options = join(world, options)?;
    }
    let data = args.data.clone().unwrap_or_else(|| PathBuf::from(&config.data_dir));
    let outcome = train(&config, &data, &options)?;
    if options.group.as_ref().is_some_and(|group| !group.is_leader()) {
        return match outcome {
            Outcome::Interrupted { .. } => Err(crate::train::run::Interrupted.into()),
            _ => Ok(()),
        };
    }
    match outcome {
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

/// Joins the other ranks: on CUDA each local rank takes one of the GPUs visible to it
/// ([`World::gpu`]) and NCCL, on the CPU Gloo.
fn join(world: World, options: RunOptions) -> Result<RunOptions> {
    let device = match options.device {
        tch::Device::Cuda(_) => {
            anyhow::ensure!(crate::distributed::c10d::has_nccl(), "this binary was built without NCCL, which CUDA runs over several processes need; rebuild against a CUDA libtorch (see libtorch.md)");
            tch::Device::Cuda(world.gpu(tch::Cuda::device_count() as usize)?)
        }
        device => device,
    };
    let timeout = timeout_from(|name| std::env::var(name).ok())?;
    let group = Group::join(world, device, timeout)?;
    Ok(RunOptions { device, group: Some(std::rc::Rc::new(group)), ..options })
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
