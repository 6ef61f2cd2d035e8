//! Data-parallel training over several processes (docs/method.md, "Data-parallel training").
//!
//! [`World`] reads where this process stands from the environment, as torchrun sets it (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) or as Slurm's `srun` does
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, with the master address from a flag or
//! `MASTER_ADDR`); with none set, the run is one process. [`Group`] joins the others through
//! libtorch's c10d ([`c10d`]): Gloo on the CPU, NCCL on CUDA with one GPU per local rank.
//!
//! Each global batch of `B` samples is split into contiguous shards, rank `r` taking samples
//! `⌊B·r/N⌋ .. ⌊B·(r+1)/N⌋`, so that N processes together compute what one computes.

pub mod c10d;

use anyhow::{bail, ensure, Context, Result};
use c10d::{Backend, ProcessGroup, Rendezvous};
use std::ops::Range;
use std::time::Duration;
use tch::{Device, Tensor};

/// torch.distributed's default port.
pub const DEFAULT_PORT: u16 = 29500;
/// How long a rank waits for the others, at start-up and at every collective, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The environment variable that sets that timeout in seconds.
pub const TIMEOUT_VARIABLE: &str = "SNN_DELAYS_DIST_TIMEOUT";

/// This process's place among the processes of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank among the processes of this machine (its GPU on CUDA).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// Which launcher's variables were read, for messages.
    pub launcher: &'static str,
}

impl World {
    /// The world described by `variable` (the process environment, or a map in tests);
    /// `None` for a single process. `master_addr` (a flag) overrides `MASTER_ADDR`.
    pub fn from_env(variable: impl Fn(&str) -> Option<String>, master_addr: Option<&str>) -> Result<Option<World>> {
        let read = |name: &str| -> Result<Option<usize>> {
            variable(name)
                .map(|text| {
                    text.trim()
                        .parse::<usize>()
                        .with_context(|| format!("environment variable {name}={text:?} is not a non-negative integer"))
                })
                .transpose()
        };
        let (launcher, rank, size, local_rank) = if let (Some(rank), Some(size)) = (read("RANK")?, read("WORLD_SIZE")?) {
            ("torchrun", rank, size, read("LOCAL_RANK")?.unwrap_or(0))
        } else if let (Some(rank), Some(size)) = (read("SLURM_PROCID")?, read("SLURM_NTASKS")?) {
            ("slurm", rank, size, read("SLURM_LOCALID")?.unwrap_or(0))
        } else {
            return Ok(None);
        };
        ensure!(size >= 1, "{launcher}: the world size is 0");
        ensure!(rank < size, "{launcher}: rank {rank} is not below the world size {size}");
        if size == 1 {
            return Ok(None);
        }
        let master_addr = match master_addr.map(str::to_string).or_else(|| variable("MASTER_ADDR")) {
            Some(address) if !address.trim().is_empty() => address.trim().to_string(),
            _ => bail!(
                "{launcher} started {size} processes but gave no master address: set MASTER_ADDR to rank 0's host (under Slurm, e.g. `export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)`) or pass --master-addr"
            ),
        };
        let master_port = match variable("MASTER_PORT") {
            Some(text) => text
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&port| port > 0)
                .with_context(|| format!("environment variable MASTER_PORT={text:?} is not a port number (1–65535)"))?,
            None => DEFAULT_PORT,
        };
        Ok(Some(World { rank, size, local_rank, master_addr, master_port, launcher }))
    }

    /// This rank's share of `len` samples.
    pub fn shard(&self, len: usize) -> Range<usize> {
        shard(len, self.rank, self.size)
    }

    /// The CUDA device this rank uses among the `visible` ones: `local_rank mod visible`. With
    /// one GPU per process (Slurm's `--gpus-per-task=1` or `--gpu-bind`) every rank sees its own as
    /// device 0; with all of a node's GPUs visible, local rank `r` takes device `r`.
    pub fn gpu(&self, visible: usize) -> Result<usize> {
        ensure!(visible > 0, "rank {} of {}: no CUDA device is visible to this process", self.rank, self.size);
        Ok(self.local_rank % visible)
    }
}

/// Rank `rank`'s contiguous share of `len` items split evenly over `size` ranks.
pub fn shard(len: usize, rank: usize, size: usize) -> Range<usize> {
    len * rank / size..len * (rank + 1) / size
}

/// The timeout from `SNN_DELAYS_DIST_TIMEOUT` (seconds), or the default.
pub fn timeout_from(variable: impl Fn(&str) -> Option<String>) -> Result<Duration> {
    let Some(text) = variable(TIMEOUT_VARIABLE) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let seconds = text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .with_context(|| format!("environment variable {TIMEOUT_VARIABLE}={text:?} is not a positive number of seconds"))?;
    Ok(Duration::from_secs_f64(seconds))
}

/// A joined group of training processes.
pub struct Group {
    pub world: World,
    pub device: Device,
    pub timeout: Duration,
    process_group: ProcessGroup,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Group(rank {} of {})", self.world.rank, self.world.size)
    }
}

impl Group {
    /// Joins the other ranks: Gloo for a CPU run, NCCL for CUDA (the caller has picked this
    /// local rank's GPU as `device`).
    pub fn join(world: World, device: Device, timeout: Duration) -> Result<Group> {
        let backend = if device.is_cuda() { Backend::Nccl } else { Backend::Gloo };
        let rendezvous = Rendezvous {
            backend,
            host: &world.master_addr,
            port: world.master_port,
            rank: world.rank,
            world_size: world.size,
            timeout,
        };
        let process_group = ProcessGroup::join(&rendezvous).with_context(|| {
            format!(
                "rank {} of {} could not join the others at {}:{} within {} s ({backend:?}); are all {} processes started, with the same MASTER_ADDR and MASTER_PORT?",
                world.rank,
                world.size,
                world.master_addr,
                world.master_port,
                timeout.as_secs_f64(),
                world.size
            )
        })?;
        Ok(Group { world, device, timeout, process_group })
    }

    /// Rank 0, the one that logs and saves.
    pub fn is_leader(&self) -> bool {
        self.world.rank == 0
    }

    /// Sums `tensor` in place over every rank.
    pub fn sum(&self, tensor: &Tensor) -> Result<()> {
        self.collective("all-reduce", || self.process_group.all_reduce_sum(tensor))
    }

    /// Overwrites `tensor` with rank 0's.
    pub fn broadcast(&self, tensor: &Tensor) -> Result<()> {
        self.collective("broadcast", || self.process_group.broadcast(tensor, 0))
    }

    /// Rank 0's value of an integer, on every rank.
    pub fn leader_value(&self, value: i64) -> Result<i64> {
        let tensor = Tensor::from_slice(&[value]).to_device(self.device);
        self.broadcast(&tensor)?;
        let value = tensor.int64_value(&[0]);
        self.check()?;
        Ok(value)
    }

    /// Fails if a collective since the last check failed on the device (NCCL reports a timeout or
    /// a lost peer after the fact). Run after reading the collectives' results.
    pub fn check(&self) -> Result<()> {
        self.collective("collective", || self.process_group.check())
    }

    fn collective(&self, what: &str, run: impl FnOnce() -> Result<()>) -> Result<()> {
        run().with_context(|| {
            format!(
                "rank {} of {}: {what} failed; another rank has stopped, or did not answer within {} s",
                self.world.rank,
                self.world.size,
                self.timeout.as_secs_f64()
            )
        })
    }
}

impl crate::model::GlobalSum for Group {
    fn sum(&self, tensor: &Tensor) -> Result<()> {
        Group::sum(self, tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn world(pairs: &[(&str, &str)], flag: Option<&str>) -> Result<Option<World>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        World::from_env(|name| map.get(name).cloned(), flag)
    }

    #[test]
    fn torchrun_and_slurm_variables_describe_the_world() {
        let torchrun =
            [("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node0"), ("MASTER_PORT", "1234")];
        let w = world(&torchrun, None).unwrap().unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.master_addr.as_str(), w.master_port), (1, 4, 1, "node0", 1234));
        let slurm = [("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "3")];
        let w = world(&slurm, Some("head")).unwrap().unwrap();
        assert_eq!((w.rank, w.size, w.local_rank, w.master_addr.as_str(), w.master_port), (3, 8, 3, "head", DEFAULT_PORT));
        assert_eq!(world(&[], None).unwrap(), None);
        assert_eq!(world(&[("RANK", "0"), ("WORLD_SIZE", "1")], None).unwrap(), None);
    }

    #[test]
    fn bad_variables_are_named() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\""),
            (&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")], "rank 2 is not below"),
            (&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")], "MASTER_ADDR"),
            (&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "70000")], "MASTER_PORT"),
        ];
        for (pairs, expected) in cases {
            let error = format!("{:#}", world(pairs, None).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
    }

    /// The usual layouts: torchrun with every GPU visible, Slurm with one GPU bound per task, and
    /// more local ranks than GPUs (ranks then share, round robin).
    #[test]
    fn each_rank_takes_its_visible_gpu() {
        let at = |local_rank: usize| World {
            rank: local_rank,
            size: 8,
            local_rank,
            master_addr: "a".into(),
            master_port: DEFAULT_PORT,
            launcher: "test",
        };
        let all_visible: Vec<usize> = (0..8).map(|r| at(r).gpu(8).unwrap()).collect();
        assert_eq!(all_visible, (0..8).collect::<Vec<_>>());
        let one_per_task: Vec<usize> = (0..8).map(|r| at(r).gpu(1).unwrap()).collect();
        assert_eq!(one_per_task, vec![0; 8]);
        let shared: Vec<usize> = (0..8).map(|r| at(r).gpu(4).unwrap()).collect();
        assert_eq!(shared, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        assert!(format!("{:#}", at(3).gpu(0).unwrap_err()).contains("no CUDA device"));
    }

    #[test]
    fn shards_split_a_batch_evenly_and_disjointly() {
        for (len, size) in [(10, 3), (1, 2), (256, 4), (7, 7)] {
            let shards: Vec<Range<usize>> = (0..size).map(|rank| shard(len, rank, size)).collect();
            assert_eq!(shards.first().unwrap().start, 0);
            assert_eq!(shards.last().unwrap().end, len);
            assert!(shards.windows(2).all(|pair| pair[0].end == pair[1].start));
            assert!(shards.iter().all(|s| s.len() + 1 >= len / size && s.len() <= len.div_ceil(size)));
        }
    }
}
