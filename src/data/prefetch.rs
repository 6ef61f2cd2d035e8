//! Batches made one step ahead: a helper thread frames and collates the next batch (in parallel,
//! see [`super::batches`]) and stages it for the device while the caller computes on the current
//! one. Staging is the caller's: typically this process's shard of the batch, put in pinned host
//! memory for CUDA ([`pin`]) so that its copy to the device ([`to_device`]) does not block the
//! host. Batches arrive in order; nothing is drawn from the torch generator on the helper thread
//! unless the stage does so.

use super::batches::{Batch, Batches};
use anyhow::Result;
use std::ops::ControlFlow;
use tch::{Device, Kind, Tensor};

extern "C" {
    fn snn_pin_memory(tensor: *mut std::ffi::c_void, pinned: *mut *mut std::ffi::c_void) -> std::ffi::c_int;
}

/// Feeds `batches`, each passed through `stage` on a helper thread, to `consume` in order, making
/// each while the previous one is consumed. `consume` can stop early with `ControlFlow::Break`;
/// `Ok(false)` then.
pub fn prefetched<T, S, F>(batches: Batches<'_>, stage: S, mut consume: F) -> Result<bool>
where
    T: Send,
    S: Fn(usize, Batch) -> Result<T> + Send,
    F: FnMut(usize, T) -> Result<ControlFlow<()>>,
{
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            for (index, batch) in batches.enumerate() {
                if sender.send(batch.and_then(|batch| stage(index, batch))).is_err() {
                    break;
                }
            }
        });
        for (index, staged) in receiver.iter().enumerate() {
            if consume(index, staged?)?.is_break() {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// `tensor` in page-locked host memory when it is bound for CUDA (as it was if pinning fails, or
/// for the CPU). libtorch's caching host allocator reuses the pinned blocks from batch to batch.
pub fn pin(tensor: Tensor, device: Device) -> Tensor {
    if !device.is_cuda() {
        return tensor;
    }
    let mut pinned = std::ptr::null_mut();
    // SAFETY: `tensor` is a live tch tensor (`at::Tensor*`); on success the shim returns a new
    // `at::Tensor*` that we own.
    let status = unsafe { snn_pin_memory(tensor.as_ptr() as *mut _, &mut pinned) };
    if status != 0 || pinned.is_null() {
        return tensor;
    }
    // SAFETY: `pinned` is a fresh `at::Tensor*` allocated by the shim, owned by the returned tensor.
    unsafe { Tensor::from_ptr(pinned as *mut torch_sys::C_tensor) }
}

/// A batch staged for the device: the batch's size, and the rows this process computes (all of
/// them in one process) with their sample indices, inputs and targets, pinned for a
/// non-blocking copy on CUDA.
pub struct StagedBatch {
    pub size: usize,
    pub indices: Vec<usize>,
    /// Each staged sample's own number of steps (before the batch's padding).
    pub lengths: Vec<usize>,
    pub x: Tensor,
    pub targets: Tensor,
}

impl StagedBatch {
    /// `batch` cut to `rows` (a data-parallel rank's shard; all of it for `None`) and pinned.
    pub fn of(batch: Batch, rows: Option<std::ops::Range<usize>>, device: Device) -> StagedBatch {
        let size = batch.lengths.len();
        let (indices, lengths, x, targets) = match rows {
            Some(rows) => {
                let (x, targets) = batch.rows(rows.clone());
                (batch.indices[rows.clone()].to_vec(), batch.lengths[rows].to_vec(), x, targets)
            }
            None => (batch.indices, batch.lengths, batch.x, batch.targets),
        };
        StagedBatch { size, indices, lengths, x: pin(x, device), targets: pin(targets, device) }
    }
}

/// Moves a batch tensor to `device` as float32, without blocking the host when it is pinned.
pub fn to_device(tensor: &Tensor, device: Device) -> Tensor {
    tensor.to_device_(device, Kind::Float, device.is_cuda(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_for_the_cpu_changes_nothing() {
        let tensor = Tensor::from_slice(&[1.0f32, 2.0]);
        let pointer = tensor.data_ptr();
        assert_eq!(pin(tensor, Device::Cpu).data_ptr(), pointer);
    }

    /// Pinning needs a CUDA driver; without one the tensor comes back as it was, with its values.
    #[test]
    fn pinning_without_a_driver_keeps_the_values() {
        let pinned = pin(Tensor::from_slice(&[1.0f32, 2.0]), Device::Cuda(0));
        assert_eq!(Vec::<f32>::try_from(&pinned).unwrap(), vec![1.0, 2.0]);
    }
}
