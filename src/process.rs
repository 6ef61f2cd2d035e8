//! Process-wide settings made once at start-up, before any large allocation or output.
//!
//! - Host memory: a training step allocates and frees tensors of tens of MB. glibc serves those
//!   with fresh `mmap`s, which the kernel faults in and zeroes page by page on every step (15% of
//!   a CPU step at the SHD preset). glibc is told to reuse them instead.
//! - Closed output pipes: Rust ignores SIGPIPE, so printing into a closed pipe (`… | head -1`)
//!   would panic. The default action is restored: the program ends quietly, as other Unix tools
//!   do (exit status 141 in the shell). Files are written atomically, so a run ended this way
//!   resumes from its last completed epoch.

use std::ffi::c_int;

extern "C" {
    fn mallopt(param: c_int, value: c_int) -> c_int;
    fn signal(signum: c_int, handler: usize) -> usize;
}

/// glibc's `M_TRIM_THRESHOLD` and `M_MMAP_MAX` (malloc.h).
const M_TRIM_THRESHOLD: c_int = -1;
const M_MMAP_MAX: c_int = -4;

/// Freed memory kept for reuse before glibc returns the top of the heap to the system.
const KEPT_FREE_BYTES: c_int = 512 << 20;

/// `SIGPIPE` and `SIG_DFL` (signal.h, Linux).
const SIGPIPE: c_int = 13;
const SIG_DFL: usize = 0;

/// Applies both settings.
pub fn configure() {
    keep_freed_host_memory();
    // SAFETY: restores the default action of one signal; no handler code is installed.
    unsafe {
        signal(SIGPIPE, SIG_DFL);
    }
}

/// Serves every allocation from the heap and keeps up to 512 MiB of freed memory there for
/// reuse, so that a step's large temporaries do not page-fault again on the next step. (Keeping
/// more was no faster at the SHD preset and raised the peak resident memory.)
fn keep_freed_host_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before any large allocation.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES);
    }
}
