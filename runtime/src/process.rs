//! Process-wide settings for training, made once, before the first training step.
//!
//! - The allocator keeps freed memory. Every tensor operation allocates its output, and a
//!   training step frees the same sizes it allocates again in the next step. glibc serves
//!   large blocks with fresh `mmap`s and gives freed heap back to the kernel, so each step
//!   paid a page fault per 4 KiB of every large tensor (a third of a ConvNet step). Keeping
//!   freed memory in the heap makes the next step reuse it: about 1.5x more steps per second
//!   for the MLP and the ConvNet, at the price of a resident size that stays at its peak.
//! - candle's element-wise worker threads spin for a shorter while after each operation
//!   before they sleep (`CANDLE_BARRIER_POOL_SPIN_LIMIT`, unless the user set it): with the
//!   default they spun through the GEMMs that run on the other threads, and on two cores took
//!   a core from them (MLP at batch 256 on 2 threads: 566 -> 658 steps/s).

use std::sync::Once;

/// Blocks up to this size come from the heap, which keeps them for reuse when freed (glibc's
/// largest allowed threshold).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// The heap grows by this much at a time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 64 << 20;
/// Spins of an idle candle worker before it sleeps (candle's default: 25,000).
const SPIN_LIMIT: &str = "3000";

/// Make the settings above; once per process, idempotent. Called by the trainer before its
/// first step and by `notebook::attach` when a kernel session starts, before candle has
/// started its workers.
pub fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        }
        const SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
        if std::env::var_os(SPIN).is_none() {
            std::env::set_var(SPIN, SPIN_LIMIT);
        }
    });
}

/// The number of threads training splits its work over (candle's count: `RAYON_NUM_THREADS`,
/// else the physical cores), read once: candle reads `/proc/cpuinfo` every time it is asked,
/// which cost more than the small GEMMs of a convolution on 8x8 images.
pub fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

/// Run `f` on one of the worker threads of the pool that the GEMMs and convolutions split
/// their work over, when there are several: the calling thread would otherwise sit idle
/// beside them while the pool's threads did the work (ConvNet on 2 threads: 38 -> 52 steps
/// per second). With one thread, `f` runs here, with no hand-over.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if threads() > 1 && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}
