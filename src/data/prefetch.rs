//! Batches made one step ahead: a helper thread frames and collates the next batch (in parallel,
//! see [`super::batches`]) while the caller trains on the current one. For a CUDA run the batch
//! is put in pinned host memory there, so that its copy to the device can be non-blocking.
//! Batches arrive in order; nothing random is drawn on the helper thread.

use super::batches::{Batch, Batches};
use anyhow::Result;
use std::ops::ControlFlow;
use tch::{Device, Kind};

/// Feeds `batches` to `consume` in order, making each on a helper thread while the previous one
/// is consumed. `consume` can stop early with `ControlFlow::Break`; `Ok(false)` then.
pub fn prefetched<F>(batches: Batches<'_>, device: Device, mut consume: F) -> Result<bool>
where
    F: FnMut(usize, Batch) -> Result<ControlFlow<()>>,
{
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            for batch in batches {
                let batch = batch.map(|batch| if device.is_cuda() { pinned(batch, device) } else { batch });
                if sender.send(batch).is_err() {
                    break;
                }
            }
        });
        for (index, batch) in receiver.iter().enumerate() {
            if consume(index, batch?)?.is_break() {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// The batch in page-locked memory for `device`'s copies; as it was if pinning fails.
fn pinned(batch: Batch, device: Device) -> Batch {
    let pin = |t: tch::Tensor| t.f_pin_memory(device).unwrap_or(t);
    Batch { x: pin(batch.x), targets: pin(batch.targets), ..batch }
}

/// Moves a batch tensor to `device`, without blocking the host when it is pinned.
pub fn to_device(tensor: &tch::Tensor, device: Device) -> tch::Tensor {
    tensor.to_device_(device, Kind::Float, device.is_cuda(), false)
}
