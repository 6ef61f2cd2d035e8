//! `snn-delays devices`: what this binary will compute on here, as JSON: libtorch and its CUDA
//! version, which NVRTC compiles our kernels, each visible GPU (name, UUID, PCI address, free
//! memory) and whether the fused neuron kernel and the recurrent layer's step kernels passed their
//! self-checks there; with `--collectives`,
//! a one-rank NCCL group on each GPU (an all-reduce and a broadcast), so that the NCCL path runs.

use crate::config::NeuronBackend;
use crate::distributed::c10d::{Backend, ProcessGroup, Rendezvous};
use anyhow::{ensure, Result};
use clap::Args;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Also run a one-rank NCCL group on each GPU: an all-reduce and a broadcast, checked
    #[arg(long)]
    collectives: bool,
}

pub fn run(args: &DevicesArgs) -> Result<()> {
    let count = tch::Cuda::device_count().max(0) as usize;
    let gpus: Vec<Value> = (0..count).map(|index| gpu(index, args.collectives)).collect();
    let report = json!({
        "libtorch_cuda": tch::utils::has_cudart().then(tch::utils::version_cudart),
        "cudnn": tch::Cuda::cudnn_is_available(),
        "nvrtc": crate::device::nvrtc::describe(),
        "nccl_built": crate::distributed::c10d::has_nccl(),
        "gloo_built": crate::distributed::c10d::has_gloo(),
        "cuda_devices": count,
        "gpus": gpus,
    });
    println!("{report}");
    Ok(())
}

fn gpu(index: usize, collectives: bool) -> Value {
    let started = Instant::now();
    let (backend, note) = crate::model::neuron::backend_on(NeuronBackend::Fused, Device::Cuda(index));
    let check_seconds = started.elapsed().as_secs_f64();
    let mut entry = match crate::device::cuda::info(index) {
        Ok(gpu) => json!({
            "device": format!("cuda:{index}"),
            "name": gpu.name,
            "uuid": gpu.uuid,
            "pci": gpu.pci,
            "free_mib": gpu.free_bytes >> 20,
            "total_mib": gpu.total_bytes >> 20,
        }),
        Err(e) => json!({ "device": format!("cuda:{index}"), "error": format!("{e:#}") }),
    };
    entry["fused_kernel"] = json!(backend == NeuronBackend::Fused);
    entry["fused_kernel_note"] = json!(note);
    entry["self_check_seconds"] = json!(check_seconds);
    let recurrent = crate::model::recurrent::cuda_step::verified(index);
    entry["recurrent_step_kernels"] = json!(recurrent.is_ok());
    entry["recurrent_step_kernels_note"] = json!(recurrent.err());
    if collectives {
        entry["nccl_group_of_one"] = json!(nccl_group_of_one(index).map_or_else(|e| format!("failed: {e:#}"), |()| "ok".into()));
    }
    entry
}

/// A one-rank NCCL group on `cuda:index`: sums and broadcasts a tensor and checks both.
fn nccl_group_of_one(index: usize) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let rendezvous =
        Rendezvous { backend: Backend::Nccl, host: "127.0.0.1", port, rank: 0, world_size: 1, timeout: Duration::from_secs(60) };
    let group = ProcessGroup::join(&rendezvous)?;
    let tensor = Tensor::from_slice(&[1.5f32, -2.0]).to_device(Device::Cuda(index));
    group.all_reduce_sum(&tensor)?;
    group.broadcast(&tensor, 0)?;
    let values = Vec::<f32>::try_from(tensor.to_kind(Kind::Float).to_device(Device::Cpu))?;
    group.check()?;
    ensure!(values == [1.5, -2.0], "a one-rank all-reduce and broadcast changed [1.5, -2] into {values:?}");
    Ok(())
}
