//! The `converge` binary: see the library's [`converge::main`].

use std::process::ExitCode;

/// Every event allocates on four threads at once (intake, journal,
/// processor, dispatcher); mimalloc's per-thread heaps measured about 10%
/// more events per second than the system allocator under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
    converge::main()
}

/// mimalloc asks the kernel for transparent huge pages for its arenas
/// (`MADV_HUGEPAGE`), and the kernel then zeroes a whole 2 MiB page in the
/// fault of its first touch. On a VM that stalled whichever thread touched
/// it (the journal writer in a commit, a tokio worker) for tens of
/// milliseconds while the daemon's memory grew, and every request waiting on
/// it: the gate race's p99 was 15-83 ms with them, 6-8 ms without. With huge
/// pages off for the process, memory comes 4 KiB at a time.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integers only and reads or writes
    // no memory of this process; a kernel without it answers EINVAL, and
    // then huge pages stay as the system has them.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
