//! What the daemon's process asks of the kernel: no transparent huge pages,
//! whose first touch zeroes 2 MiB inside a page fault and stalls the thread
//! that touched it (see `main.rs`).

use crate::support::Workspace;

/// The `THP_enabled` line of `/proc/<pid>/status`: 1 while the process may
/// get transparent huge pages, 0 once it disabled them.
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line in /proc/{pid}/status:\n{status}"))
        .trim()
        .to_string()
}

#[cfg(target_os = "linux")]
#[test]
fn the_daemon_runs_without_transparent_huge_pages() {
    // The test's own process is the control: the system allows them.
    assert_eq!(thp_enabled(std::process::id()), "1");
    let ws = Workspace::new(&[], "");
    let daemon = ws.start();
    assert_eq!(thp_enabled(daemon.child.id()), "0", "{}", daemon.log());
}
