//! What the daemon's process asks of the kernel: no transparent huge pages,
//! whose first touch zeroes 2 MiB inside a page fault and stalls the thread
//! that touched it (see `main.rs`); and async runtime threads that do not
//! preempt the journal writer when they wake (see `not_preempting_on_wake`).

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

/// Each thread of process `pid`: its name and its scheduling policy, the
/// 41st field of `/proc/<pid>/task/<tid>/stat` (0 `SCHED_OTHER`, 3
/// `SCHED_BATCH`).
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut threads = Vec::new();
    for task in tasks {
        let dir = task.unwrap().path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // The name in the stat line is in parentheses and may hold spaces:
        // the fields are counted after its closing one, from the 3rd.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let policy = after_name.split_whitespace().nth(41 - 3).unwrap();
        threads.push((name.trim().to_string(), policy.parse().unwrap()));
    }
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn the_async_runtime_threads_yield_to_the_journal_writer() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    let ws = Workspace::new(&[], "");
    let daemon = ws.start();
    // A thread takes its name once it first runs, which on a busy machine
    // can come after the daemon already listens, and a runtime thread its
    // policy just after its name: read again until both could be seen.
    let settled = |threads: &[(String, u32)]| {
        let named = |name: &str| threads.iter().any(|(n, _)| n == name);
        named("converge-journa")
            && named("converge-proces")
            && named("tokio-rt-worker")
            && threads
                .iter()
                .all(|(n, policy)| n != "tokio-rt-worker" || *policy == SCHED_BATCH)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut threads = thread_policies(daemon.child.id());
    while !settled(&threads) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        threads = thread_policies(daemon.child.id());
    }
    let policies_of = |prefix: &str| -> Vec<u32> {
        threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, policy)| *policy)
            .collect()
    };
    let workers = policies_of("tokio-rt-worker");
    assert!(!workers.is_empty(), "no runtime thread among {threads:?}");
    assert!(
        workers.iter().all(|p| *p == SCHED_BATCH),
        "{threads:?}\n{}",
        daemon.log()
    );
    // The threads every event goes through keep the usual policy.
    assert_eq!(policies_of("converge-journa"), [SCHED_OTHER], "{threads:?}");
    assert_eq!(policies_of("converge-proces"), [SCHED_OTHER], "{threads:?}");
}
