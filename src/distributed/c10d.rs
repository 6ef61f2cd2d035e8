//! The binding to libtorch's own c10d through the C++ shim in `csrc/` (compiled by `build.rs`):
//! a TCPStore rendezvous at `MASTER_ADDR:MASTER_PORT` (rank 0 serves it), a Gloo (CPU) or NCCL
//! (CUDA) process group, and in-place sums (all-reduce) and broadcasts of tch tensors. Every failure of
//! libtorch, a timeout included, comes back as an error carrying its message.
//!
//! A collective returns once it is queued (NCCL: on the current CUDA stream; Gloo: done); one that
//! fails on the device later is reported by [`ProcessGroup::check`], which the caller runs after
//! reading the results. Dropping the group shuts it down, or aborts it after an error.

use anyhow::{bail, Result};
use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;
use tch::Tensor;

extern "C" {
    fn snn_c10d_has_gloo() -> c_int;
    fn snn_c10d_has_nccl() -> c_int;
    fn snn_c10d_new(
        backend: *const c_char,
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        error: *mut c_char,
        capacity: usize,
    ) -> *mut c_void;
    fn snn_c10d_free(group: *mut c_void);
    fn snn_c10d_check(group: *mut c_void, error: *mut c_char, capacity: usize) -> c_int;
    fn snn_c10d_all_reduce_sum(group: *mut c_void, tensor: *mut c_void, error: *mut c_char, capacity: usize) -> c_int;
    fn snn_c10d_broadcast(group: *mut c_void, tensor: *mut c_void, root: c_int, error: *mut c_char, capacity: usize) -> c_int;
}

const ERROR_CAPACITY: usize = 4096;

/// Which c10d backend carries the collectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// Whether this binary was built with Gloo.
pub fn has_gloo() -> bool {
    // SAFETY: a constant query of the shim.
    unsafe { snn_c10d_has_gloo() != 0 }
}

/// Whether this binary was built with NCCL.
pub fn has_nccl() -> bool {
    // SAFETY: a constant query of the shim.
    unsafe { snn_c10d_has_nccl() != 0 }
}

/// A joined process group; left when dropped.
pub struct ProcessGroup {
    handle: *mut c_void,
}

/// Where and how to join.
pub struct Rendezvous<'a> {
    pub backend: Backend,
    pub host: &'a str,
    pub port: u16,
    pub rank: usize,
    pub world_size: usize,
    pub timeout: Duration,
}

impl ProcessGroup {
    /// Joins the group; fails when the other ranks do not all arrive within the timeout.
    pub fn join(rendezvous: &Rendezvous) -> Result<ProcessGroup> {
        let backend = CString::new(rendezvous.backend.name())?;
        let host = CString::new(rendezvous.host)?;
        let mut error = vec![0 as c_char; ERROR_CAPACITY];
        // SAFETY: the strings outlive the call; the error buffer's capacity is passed.
        let handle = unsafe {
            snn_c10d_new(
                backend.as_ptr(),
                host.as_ptr(),
                c_int::from(rendezvous.port),
                rendezvous.rank as c_int,
                rendezvous.world_size as c_int,
                rendezvous.timeout.as_millis() as i64,
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if handle.is_null() {
            bail!("{}", message(&error));
        }
        Ok(ProcessGroup { handle })
    }

    /// Sums `tensor` in place over every rank.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<()> {
        // SAFETY: the handle is live; the tensor pointer is tch's `at::Tensor*`.
        self.call(|error, capacity| unsafe {
            snn_c10d_all_reduce_sum(self.handle, tensor.as_ptr() as *mut c_void, error, capacity)
        })
    }

    /// Overwrites `tensor` on every rank with rank `root`'s.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        // SAFETY: as for `all_reduce`.
        self.call(|error, capacity| unsafe {
            snn_c10d_broadcast(self.handle, tensor.as_ptr() as *mut c_void, root as c_int, error, capacity)
        })
    }

    /// Fails if a collective issued since the last check has finished with an error (a timeout
    /// or a lost peer). Run it after reading the collectives' results.
    pub fn check(&self) -> Result<()> {
        // SAFETY: the handle is live.
        self.call(|error, capacity| unsafe { snn_c10d_check(self.handle, error, capacity) })
    }

    fn call(&self, collective: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
        let mut error = vec![0 as c_char; ERROR_CAPACITY];
        if collective(error.as_mut_ptr(), error.len()) != 0 {
            bail!("{}", message(&error));
        }
        Ok(())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from `snn_c10d_new` and is freed once.
        unsafe { snn_c10d_free(self.handle) }
    }
}

/// The shim's NUL-terminated message.
fn message(buffer: &[c_char]) -> String {
    let bytes: Vec<u8> = buffer.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `make` installs gloo's headers, and the torch wheel is a CUDA build with NCCL's: both
    /// backends must be compiled in.
    #[test]
    fn gloo_is_built_and_nccl_wherever_libtorch_has_cuda() {
        assert!(has_gloo(), "built without gloo's headers (scripts/ensure_gloo.sh installs them)");
        assert_eq!(has_nccl(), tch::utils::has_cudart(), "NCCL must be built exactly when libtorch has CUDA");
    }

    #[test]
    fn a_group_of_one_sums_and_broadcasts_in_place() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let rendezvous = Rendezvous {
            backend: Backend::Gloo,
            host: "127.0.0.1",
            port,
            rank: 0,
            world_size: 1,
            timeout: Duration::from_secs(20),
        };
        let group = ProcessGroup::join(&rendezvous).unwrap();
        let tensor = Tensor::from_slice(&[1.5f64, -2.0]);
        group.all_reduce_sum(&tensor).unwrap();
        group.broadcast(&tensor, 0).unwrap();
        assert_eq!(Vec::<f64>::try_from(&tensor).unwrap(), vec![1.5, -2.0]);
        group.check().unwrap();
        let error = format!("{:#}", group.broadcast(&tensor, 3).unwrap_err());
        assert!(!error.is_empty());
    }
}
