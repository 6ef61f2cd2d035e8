//! How many libtorch ops a piece of work dispatches, and how often it reads a value back to the
//! host (docs/method.md, "Lean by construction"). On a GPU each dispatched op is about one kernel
//! launch and each host read stalls the pipeline until the device catches up; both can be counted
//! on the CPU. The counts come from a RecordFunction observer in `csrc/libtorch_extras.cpp`: every
//! aten op (nested ones included), the leaves among them, and the host reads (`item()` and moves
//! to the CPU, `to_device(Device::Cpu)`, which is how our code reads values out of a tensor that
//! may live on the device; tch's `Vec::try_from` of a CPU tensor dispatches nothing). Our own
//! kernel launches (the fused neurons') are counted beside them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

extern "C" {
    fn snn_ops_begin(this_thread_only: i32);
    fn snn_ops_end(counts: *mut i64);
    fn snn_ops_by_name(reads: i32, out: *mut std::ffi::c_char, capacity: usize) -> usize;
}

/// Fused kernel launches (CPU or CUDA) since the process started.
static KERNEL_LAUNCHES: AtomicU64 = AtomicU64::new(0);
/// One counter at a time: the observer is process-wide.
static COUNTING: Mutex<()> = Mutex::new(());

/// Records one launch of one of our own kernels.
pub fn kernel_launched() {
    KERNEL_LAUNCHES.fetch_add(1, Ordering::Relaxed);
}

/// What a piece of work dispatched.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    /// libtorch ops, nested ones included.
    pub ops: u64,
    /// libtorch ops with no op inside them.
    pub leaf_ops: u64,
    /// Reads of a tensor's values by the host.
    pub host_reads: u64,
    /// Launches of our own kernels.
    pub kernels: u64,
    /// The libtorch ops by name, most frequent first.
    pub by_name: Vec<(String, u64)>,
    /// The host reads by the op that made them.
    pub reads_by_name: Vec<(String, u64)>,
}

/// Runs `work`, counting what it dispatches on every thread.
pub fn count<T>(work: impl FnOnce() -> T) -> (T, OpCounts) {
    counting(false, work)
}

/// Runs `work`, counting what it dispatches on the calling thread only, where a CPU backward runs
/// too: what other threads of the process (other tests) dispatch meanwhile is left out, and so are
/// our kernel launches, which are counted process-wide.
pub fn count_here<T>(work: impl FnOnce() -> T) -> (T, OpCounts) {
    let (result, counts) = counting(true, work);
    (result, OpCounts { kernels: 0, ..counts })
}

fn counting<T>(this_thread_only: bool, work: impl FnOnce() -> T) -> (T, OpCounts) {
    let _only = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let launches = KERNEL_LAUNCHES.load(Ordering::Relaxed);
    // SAFETY: registers (once) and resets the shim's process-wide observer.
    unsafe { snn_ops_begin(i32::from(this_thread_only)) };
    let result = work();
    let mut counts = [0i64; 3];
    // SAFETY: `counts` has room for the three counts the shim writes.
    unsafe { snn_ops_end(counts.as_mut_ptr()) };
    let kernels = KERNEL_LAUNCHES.load(Ordering::Relaxed) - launches;
    let counts = OpCounts {
        ops: counts[0] as u64,
        leaf_ops: counts[1] as u64,
        host_reads: counts[2] as u64,
        kernels,
        by_name: names(0),
        reads_by_name: names(1),
    };
    (result, counts)
}

/// The shim's counts of ops (`reads` 0) or host reads (1) by name, most frequent first.
fn names(reads: i32) -> Vec<(String, u64)> {
    // SAFETY: a null buffer of capacity 0 asks only for the length.
    let length = unsafe { snn_ops_by_name(reads, std::ptr::null_mut(), 0) };
    let mut buffer = vec![0 as std::ffi::c_char; length + 1];
    // SAFETY: the buffer holds `length + 1` bytes, as passed.
    unsafe { snn_ops_by_name(reads, buffer.as_mut_ptr(), buffer.len()) };
    let bytes: Vec<u8> = buffer.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let mut names: Vec<(String, u64)> = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| line.rsplit_once(' ').and_then(|(name, n)| Some((name.to_string(), n.parse().ok()?))))
        .collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn ops_leaves_and_host_reads_are_counted() {
        let x = Tensor::ones([4, 3], (Kind::Float, tch::Device::Cpu));
        let (value, counts) = count_here(|| {
            let y = (&x * 2.0).sum(Kind::Float);
            let _ = Vec::<f32>::try_from((&x + 1.0).flatten(0, -1).to_device(tch::Device::Cpu)).unwrap();
            y.double_value(&[])
        });
        assert_eq!(value, 24.0);
        assert!(counts.ops >= 4 && counts.leaf_ops >= 3 && counts.leaf_ops <= counts.ops, "{counts:?}");
        assert_eq!(counts.host_reads, 2, "{counts:?}");
        assert!(counts.by_name.iter().any(|(name, n)| name == "aten::_local_scalar_dense" && *n == 1), "{counts:?}");
        assert_eq!(counts.by_name.iter().map(|(_, n)| n).sum::<u64>(), counts.ops);
        assert_eq!(counts.reads_by_name.iter().map(|(_, n)| n).sum::<u64>(), counts.host_reads);
        let (_, none) = count_here(|| ());
        assert_eq!(none, OpCounts::default());
    }
}
