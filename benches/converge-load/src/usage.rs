//! What the daemons used, read from `/proc`: CPU time in all and by
//! thread, so a run shows which stage (intake and plugins on the tokio
//! workers, the journal writer, the processor) an event's CPU went to, and
//! the bytes they wrote to storage. A stage's share is far less noisy than
//! requests per second on a busy machine, so comparing two builds by it
//! needs fewer runs. The bytes written (WAL frames, checkpoints, logs) are
//! what the kernel then spends CPU writing back, outside the daemon's time.

use std::collections::BTreeMap;

/// CPU time used so far, in milliseconds, and bytes written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// The whole process, threads that ended included.
    pub total_ms: f64,
    /// The part of `total_ms` spent in the kernel for the process (system
    /// time): the loopback TCP, the WAL's writes and fsyncs, the wake-ups
    /// between threads. What a leaner userland cannot save.
    pub system_ms: f64,
    /// Threads alive when read, summed by stage (see [`stage`]).
    pub by_stage: BTreeMap<&'static str, f64>,
    /// Bytes the process sent toward storage (`write_bytes` of
    /// `/proc/<pid>/io`); `None` where the kernel does not account them.
    pub written_bytes: Option<f64>,
}

impl Usage {
    /// What a process (`/proc/<pid>`) has used so far; `None` without `/proc`.
    pub fn of_process(pid: u32) -> Option<Usage> {
        let (user_ms, system_ms) =
            stat_cpu_ms(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        let mut by_stage = BTreeMap::new();
        // A thread may end between listing and reading: it is skipped, and
        // its time stays in the total.
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let (Some(name), Some((user, system))) = (stat_name(&stat), stat_cpu_ms(&stat)) {
                *by_stage.entry(stage(name)).or_insert(0.0) += user + system;
            }
        }
        let written_bytes = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| io_written_bytes(&io));
        Some(Usage {
            total_ms: user_ms + system_ms,
            system_ms,
            by_stage,
            written_bytes,
        })
    }

    /// Several daemons' use added up.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Usage>) -> Usage {
        let mut sum = Usage {
            written_bytes: Some(0.0),
            ..Usage::default()
        };
        for one in all {
            sum.total_ms += one.total_ms;
            sum.system_ms += one.system_ms;
            for (stage, ms) in &one.by_stage {
                *sum.by_stage.entry(stage).or_insert(0.0) += ms;
            }
            sum.written_bytes = sum.written_bytes.zip(one.written_bytes).map(|(a, b)| a + b);
        }
        sum
    }

    /// What was used between `before` and `self`. A stage whose threads
    /// started during the run counts from zero.
    pub fn since(&self, before: &Usage) -> Usage {
        Usage {
            total_ms: self.total_ms - before.total_ms,
            system_ms: self.system_ms - before.system_ms,
            by_stage: self
                .by_stage
                .iter()
                .map(|(stage, ms)| (*stage, ms - before.by_stage.get(stage).unwrap_or(&0.0)))
                .collect(),
            written_bytes: self
                .written_bytes
                .zip(before.written_bytes)
                .map(|(after, before)| after - before),
        }
    }

    /// The report lines: the CPU per event, each stage's, the bytes written.
    pub fn lines(&self, events: usize) -> String {
        let per_event = |ms: f64| ms / events.max(1) as f64;
        let staged: f64 = self.by_stage.values().sum();
        // Threads that ended during the run (the blocking pool's), and rounding.
        let ended = ("ended threads", self.total_ms - staged);
        let stages: Vec<String> = self
            .by_stage
            .iter()
            .map(|(stage, ms)| (*stage, *ms))
            .chain([ended])
            // What would print as 0.000 says nothing.
            .filter(|(_, ms)| per_event(*ms).abs() >= 0.0005)
            .map(|(stage, ms)| format!("{stage} {:.3}", per_event(ms)))
            .collect();
        let written = match self.written_bytes {
            Some(bytes) => format!(
                "{:.1} KB per event ({:.0} MB; the WAL, checkpoints and logs)",
                per_event(bytes) / 1000.0,
                bytes / 1e6
            ),
            None => "unknown (no I/O accounting in /proc)".into(),
        };
        let system = if self.total_ms > 0.0 {
            format!("; {:.0}% system", 100.0 * self.system_ms / self.total_ms)
        } else {
            String::new()
        };
        format!(
            "daemon CPU (user + system, all daemons): {:.3} ms per event ({:.0} ms for {events} events{system})\n\
             daemon CPU by thread, ms per event: {}\n\
             daemon writes to storage: {written}",
            per_event(self.total_ms),
            self.total_ms,
            stages.join(", ")
        )
    }
}

/// The stage a thread belongs to, by the name the daemon gave it (the
/// kernel keeps its first 15 bytes).
pub fn stage(thread: &str) -> &'static str {
    const STAGES: &[(&str, &str)] = &[
        ("tokio-rt-worker", "tokio workers"),
        ("converge-journa", "journal writer"),
        ("converge-proces", "processor"),
        ("converge-checkp", "checkpointer"),
    ];
    STAGES
        .iter()
        .find(|(prefix, _)| thread.starts_with(prefix))
        .map_or("other threads", |(_, stage)| stage)
}

/// `write_bytes` of a `/proc/<pid>/io` text.
fn io_written_bytes(io: &str) -> Option<f64> {
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(|bytes| bytes as f64)
}

/// The thread's name: the second field of `stat`, in parentheses, which
/// may itself hold spaces and parentheses.
fn stat_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// utime and stime of a `stat` line, in milliseconds.
fn stat_cpu_ms(stat: &str) -> Option<(f64, f64)> {
    // Count fields after the name, which may hold spaces.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5), utime and stime; the first after ")" is field 3.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ms = |ticks: u64| ticks as f64 * 1000.0 / per_second as f64;
    (per_second > 0).then(|| (ms(user), ms(system)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_is_read() {
        // proc(5): pid (comm) state ppid ... utime (14) stime (15) ...
        let stat = "4242 (odd) name (x)) S 1 2 3 4 5 6 7 8 9 10 300 200 0 0 20 0 3 0";
        assert_eq!(stat_name(stat), Some("odd) name (x)"));
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(
            stat_cpu_ms(stat),
            Some((300.0 * 1000.0 / per_second, 200.0 * 1000.0 / per_second))
        );
        assert_eq!(stat_cpu_ms("4242 (cut"), None);
    }

    #[test]
    fn threads_are_grouped_by_the_daemons_names() {
        assert_eq!(stage("tokio-rt-worker"), "tokio workers");
        assert_eq!(stage("converge-journa"), "journal writer");
        assert_eq!(stage("converge-proces"), "processor");
        assert_eq!(stage("converge-checkp"), "checkpointer");
        assert_eq!(stage("converge-epoch"), "other threads");
    }

    #[test]
    fn a_run_is_the_difference_and_ended_threads_are_the_rest() {
        let before = Usage {
            total_ms: 100.0,
            system_ms: 30.0,
            by_stage: BTreeMap::from([("processor", 40.0), ("tokio workers", 60.0)]),
            written_bytes: Some(1_000_000.0),
        };
        let after = Usage {
            total_ms: 400.0,
            system_ms: 120.0,
            by_stage: BTreeMap::from([
                ("processor", 140.0),
                ("tokio workers", 160.0),
                ("journal writer", 50.0),
                ("other threads", 0.1),
            ]),
            written_bytes: Some(17_400_000.0),
        };
        let run = after.since(&before);
        assert_eq!(run.total_ms, 300.0);
        assert_eq!(run.by_stage["other threads"], 0.1);
        assert_eq!(run.by_stage["journal writer"], 50.0);
        assert_eq!(
            run.lines(1000),
            "daemon CPU (user + system, all daemons): 0.300 ms per event (300 ms for 1000 events; 30% system)\n\
             daemon CPU by thread, ms per event: journal writer 0.050, processor 0.100, \
             tokio workers 0.100, ended threads 0.050\n\
             daemon writes to storage: 16.4 KB per event (16 MB; the WAL, checkpoints and logs)"
        );
        let both = Usage::sum([&run, &run]);
        assert_eq!(both.total_ms, 600.0);
        assert_eq!(both.system_ms, 180.0);
        assert_eq!(both.written_bytes, Some(32_800_000.0));
        let unaccounted = Usage {
            written_bytes: None,
            ..run.clone()
        };
        assert_eq!(Usage::sum([&run, &unaccounted]).written_bytes, None);
        assert!(
            unaccounted
                .lines(1000)
                .ends_with("daemon writes to storage: unknown (no I/O accounting in /proc)")
        );
    }

    #[test]
    fn the_bytes_written_are_read_from_the_io_file() {
        let io = "rchar: 6976\nwchar: 120\nsyscr: 10\nsyscw: 2\nread_bytes: 0\n\
                  write_bytes: 40960\ncancelled_write_bytes: 0\n";
        assert_eq!(io_written_bytes(io), Some(40960.0));
        assert_eq!(io_written_bytes("rchar: 1\n"), None);
    }

    #[test]
    fn this_process_is_read() {
        let me = Usage::of_process(std::process::id()).expect("/proc on Linux");
        assert!(me.total_ms >= 0.0);
        assert!(!me.by_stage.is_empty(), "at least this thread is listed");
    }
}
