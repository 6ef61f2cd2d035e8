//! `snn-delays launch --nproc N -- train …`: starts N local ranks of a data-parallel run, as
//! torchrun does for one machine. Each child gets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1` and `MASTER_PORT`, plus an even share of the
//! cores (`OMP_NUM_THREADS`, `RAYON_NUM_THREADS`) unless those are set. When one rank fails the
//! others are stopped and `launch` exits with the failing rank's status.

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Number of processes (ranks) to start on this machine
    #[arg(long, value_name = "N")]
    nproc: usize,
    /// Port of rank 0's rendezvous [default: a free port]
    #[arg(long, value_name = "PORT")]
    master_port: Option<u16>,
    /// The command each rank runs: `train` and its flags, after `--`
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "train ARGS")]
    command: Vec<String>,
}

pub fn run(args: &LaunchArgs) -> Result<()> {
    ensure!((1..=1024).contains(&args.nproc), "--nproc must be between 1 and 1024, got {}", args.nproc);
    ensure!(
        args.command.first().map(String::as_str) == Some("train"),
        "launch runs `train` on every rank: `snn-delays launch --nproc {} -- train …`",
        args.nproc
    );
    let port = match args.master_port {
        Some(port) => port,
        None => free_port()?,
    };
    let exe = std::env::current_exe().context("cannot locate the snn-delays executable")?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = (cores / args.nproc).max(1).to_string();
    let _ = ctrlc::set_handler(|| {});
    let mut children = Vec::with_capacity(args.nproc);
    for rank in 0..args.nproc {
        let mut command = Command::new(&exe);
        command
            .args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", args.nproc.to_string())
            .env("LOCAL_WORLD_SIZE", args.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        for variable in ["OMP_NUM_THREADS", "RAYON_NUM_THREADS"] {
            if std::env::var_os(variable).is_none() {
                command.env(variable, &threads);
            }
        }
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(error) => {
                stop_all(&mut children);
                bail!("cannot start rank {rank} ({}): {error}", exe.display());
            }
        }
    }
    supervise(children)
}

/// Waits for every rank; the first to fail stops the others and decides the result.
fn supervise(mut children: Vec<Child>) -> Result<()> {
    let mut done = vec![false; children.len()];
    while done.iter().any(|d| !d) {
        for (rank, child) in children.iter_mut().enumerate() {
            if done[rank] {
                continue;
            }
            if let Some(status) = child.try_wait().with_context(|| format!("cannot wait for rank {rank}"))? {
                done[rank] = true;
                if !status.success() {
                    stop_all(&mut children);
                    return Err(failure(rank, status));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn failure(rank: usize, status: ExitStatus) -> anyhow::Error {
    if status.code() == Some(130) {
        return crate::train::run::Interrupted.into();
    }
    RankFailed::new(rank, status).into()
}

/// A rank that failed, and the status `launch` exits with: the rank's own exit status, or
/// `128 + n` for a rank ended by signal `n`, as a shell reports it.
#[derive(Debug)]
pub struct RankFailed {
    rank: usize,
    how: String,
    pub exit_code: u8,
}

impl RankFailed {
    fn new(rank: usize, status: ExitStatus) -> RankFailed {
        let (how, code) = match (status.code(), status.signal()) {
            (Some(code), _) => (format!("exit status {code}"), code),
            (None, Some(signal)) => (format!("signal {signal}"), 128 + signal),
            (None, None) => ("an unknown status".to_string(), 1),
        };
        let exit_code = u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1);
        RankFailed { rank, how, exit_code }
    }
}

impl std::fmt::Display for RankFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} ended with {}; the other ranks were stopped", self.rank, self.how)
    }
}

impl std::error::Error for RankFailed {}

/// Kills the ranks still running and reaps them.
fn stop_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// A port the system reports free on the loopback interface.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port for the rendezvous")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rank_gives_its_status_or_128_plus_its_signal() {
        let exited = RankFailed::new(1, ExitStatus::from_raw(3 << 8));
        assert_eq!(
            (exited.exit_code, exited.to_string().as_str()),
            (3, "rank 1 ended with exit status 3; the other ranks were stopped")
        );
        let killed = RankFailed::new(0, ExitStatus::from_raw(9));
        assert_eq!(
            (killed.exit_code, killed.to_string().as_str()),
            (137, "rank 0 ended with signal 9; the other ranks were stopped")
        );
    }
}
