//! How the process allocates while it trains.
//!
//! Every tensor operation allocates its output, and a training step frees the same sizes it
//! allocates again in the next step. glibc serves large blocks with fresh `mmap`s and gives
//! freed heap back to the kernel, so each step paid a page fault per 4 KiB of every large
//! tensor (a third of a ConvNet step). Keeping freed memory in the heap makes the next step
//! reuse it: about 1.5x more steps per second for the MLP and the ConvNet, at the price of a
//! resident size that stays at its peak.

use std::sync::Once;

/// Blocks up to this size come from the heap, which keeps them for reuse when freed (glibc's
/// largest allowed threshold).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// The heap grows by this much at a time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 64 << 20;

/// Tell the allocator to keep freed memory for reuse; once per process, idempotent.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        }
    });
}
