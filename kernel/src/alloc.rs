//! The binary's memory allocator: mimalloc in the processes that host evcxr's analyzer
//! (`recipe kernel` and `recipe exec`), the system allocator in every other one.
//!
//! A session's start and its first `let` are mostly rust-analyzer reading the standard
//! library and the runtime: millions of small allocations, which mimalloc serves faster than
//! glibc. Every other process keeps the system allocator, for two reasons:
//! - the process that runs cells (this binary, started by evcxr) loads cells and the runtime
//!   library, which allocate through `libstd.so` and so through the system allocator, and
//!   values move between them and the binary's own code: one allocator must serve both;
//! - `recipe train` must place its buffers as a training cell does, so that a run from the
//!   command line and the same run from a notebook stay comparable.
//!
//! The choice is made once, at the process's first allocation, from its command line (read
//! from `/proc/self/cmdline` into a buffer on the stack: nothing is allocated before it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

/// The allocator every allocation of the binary goes through.
pub struct Allocator;

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The subcommands whose process hosts the analyzer.
const ANALYZER_HOSTS: [&[u8]; 2] = [b"kernel", b"exec"];

fn choice() -> u8 {
    match CHOICE.load(Ordering::Acquire) {
        UNDECIDED => {
            let decided = if hosts_analyzer() {
                keep_freed_memory_a_while();
                MIMALLOC
            } else {
                SYSTEM
            };
            // Two threads deciding at once decide alike; the first one's answer stays.
            match CHOICE.compare_exchange(UNDECIDED, decided, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => decided,
                Err(earlier) => earlier,
            }
        }
        decided => decided,
    }
}

/// mimalloc's `mi_option_purge_delay` (its number in the pinned version's `mimalloc.h`; the
/// Rust bindings do not name it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory 10 s before giving it back to the system (mimalloc's default: 1 s). The
/// analyzer frees and allocates again in waves; memory given back in between costs a page
/// fault and a zeroed page when it is used again, which took back most of what mimalloc saves
/// (session start to runtime attached, medians of 7: 3.35 s with glibc, 3.33 s with a 1 s
/// delay, 3.00 s with this one; measured before the analyzer read a smaller std, with which
/// peak memory is the same as with glibc).
fn keep_freed_memory_a_while() {
    // SAFETY: sets one option of the C library before its first allocation in this process.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 10_000) };
}

/// Whether this process's first argument names an analyzer host. The process that runs cells
/// never is, whatever its arguments (evcxr passes it those after `--`: `recipe exec -- exec`
/// would name one); anything unreadable answers no (the system allocator, as without this
/// module).
fn hosts_analyzer() -> bool {
    // SAFETY: getenv of a static name; nothing here allocates or sets the environment.
    if unsafe { !libc::getenv(c"EVCXR_IS_RUNTIME".as_ptr()).is_null() } {
        return false;
    }
    let mut buffer = [0u8; 512];
    // SAFETY: a plain read into a buffer we own; the file descriptor is closed below.
    let length = unsafe {
        let fd = libc::open(
            c"/proc/self/cmdline".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let n = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
        libc::close(fd);
        n
    };
    length > 0 && names_analyzer_host(&buffer[..length as usize])
}

/// Whether a command line (NUL-separated, as `/proc` gives it) starts an analyzer host.
fn names_analyzer_host(command_line: &[u8]) -> bool {
    let mut arguments = command_line.split(|&b| b == 0);
    let _program = arguments.next();
    arguments
        .next()
        .is_some_and(|first| ANALYZER_HOSTS.contains(&first))
}

// SAFETY: each call goes to the one allocator chosen for the whole process, so memory is
// always freed or resized by the allocator that gave it out.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if choice() == MIMALLOC {
            MiMalloc.alloc(layout)
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if choice() == MIMALLOC {
            MiMalloc.alloc_zeroed(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if choice() == MIMALLOC {
            MiMalloc.dealloc(ptr, layout)
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if choice() == MIMALLOC {
            MiMalloc.realloc(ptr, layout, new_size)
        } else {
            System.realloc(ptr, layout, new_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kernels_and_exec_host_the_analyzer() {
        assert!(names_analyzer_host(
            b"/bin/recipe\0kernel\0--connection-file\0c.json\0"
        ));
        assert!(names_analyzer_host(b"recipe\0kernel\0--spare\0"));
        assert!(names_analyzer_host(b"recipe\0exec\0nb.ipynb\0"));
        // The process that runs cells (started with no arguments), evcxr's rustc wrapper,
        // the trainer and the archive commands keep the system allocator.
        assert!(!names_analyzer_host(b"/bin/recipe\0"));
        assert!(!names_analyzer_host(b"recipe\0/toolchain/bin/rustc\0-vV\0"));
        assert!(!names_analyzer_host(b"recipe\0train\0--steps\x00100\0"));
        assert!(!names_analyzer_host(b"recipe\0runs\0list\0"));
        assert!(!names_analyzer_host(b"recipe\0kernels\0"));
        assert!(!names_analyzer_host(b""));
    }
}
