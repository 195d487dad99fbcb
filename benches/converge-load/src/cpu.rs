//! The daemons' CPU time, read from `/proc`: in all, and by thread, so a
//! run shows which stage (intake and plugins on the tokio workers, the
//! journal writer, the processor) an event's CPU went to. A stage's share
//! is far less noisy than requests per second on a busy machine, so
//! comparing two builds by it needs fewer runs.

use std::collections::BTreeMap;

/// CPU time used so far, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuUse {
    /// The whole process, threads that ended included.
    pub total_ms: f64,
    /// Threads alive when read, summed by stage (see [`stage`]).
    pub by_stage: BTreeMap<&'static str, f64>,
}

impl CpuUse {
    /// What a process (`/proc/<pid>`) has used so far; `None` without `/proc`.
    pub fn of_process(pid: u32) -> Option<CpuUse> {
        let total_ms = stat_cpu_ms(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
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
            if let (Some(name), Some(ms)) = (stat_name(&stat), stat_cpu_ms(&stat)) {
                *by_stage.entry(stage(name)).or_insert(0.0) += ms;
            }
        }
        Some(CpuUse { total_ms, by_stage })
    }

    /// Several daemons' use added up.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a CpuUse>) -> CpuUse {
        let mut sum = CpuUse::default();
        for one in all {
            sum.total_ms += one.total_ms;
            for (stage, ms) in &one.by_stage {
                *sum.by_stage.entry(stage).or_insert(0.0) += ms;
            }
        }
        sum
    }

    /// What was used between `before` and `self`. A stage whose threads
    /// started during the run counts from zero.
    pub fn since(&self, before: &CpuUse) -> CpuUse {
        CpuUse {
            total_ms: self.total_ms - before.total_ms,
            by_stage: self
                .by_stage
                .iter()
                .map(|(stage, ms)| (*stage, ms - before.by_stage.get(stage).unwrap_or(&0.0)))
                .collect(),
        }
    }

    /// The two report lines: the total per event, then each stage's.
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
        format!(
            "daemon CPU (user + system, all daemons): {:.3} ms per event ({:.0} ms for {events} events)\n\
             daemon CPU by thread, ms per event: {}",
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

/// The thread's name: the second field of `stat`, in parentheses, which
/// may itself hold spaces and parentheses.
fn stat_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// utime + stime of a `stat` line, in milliseconds.
fn stat_cpu_ms(stat: &str) -> Option<f64> {
    // Count fields after the name, which may hold spaces.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5), utime and stime; the first after ")" is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 * 1000.0 / per_second as f64)
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
        assert_eq!(stat_cpu_ms(stat), Some(500.0 * 1000.0 / per_second));
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
        let before = CpuUse {
            total_ms: 100.0,
            by_stage: BTreeMap::from([("processor", 40.0), ("tokio workers", 60.0)]),
        };
        let after = CpuUse {
            total_ms: 400.0,
            by_stage: BTreeMap::from([
                ("processor", 140.0),
                ("tokio workers", 160.0),
                ("journal writer", 50.0),
                ("other threads", 0.1),
            ]),
        };
        let run = after.since(&before);
        assert_eq!(run.total_ms, 300.0);
        assert_eq!(run.by_stage["other threads"], 0.1);
        assert_eq!(run.by_stage["journal writer"], 50.0);
        assert_eq!(
            run.lines(1000),
            "daemon CPU (user + system, all daemons): 0.300 ms per event (300 ms for 1000 events)\n\
             daemon CPU by thread, ms per event: journal writer 0.050, processor 0.100, \
             tokio workers 0.100, ended threads 0.050"
        );
        assert_eq!(CpuUse::sum([&run, &run]).total_ms, 600.0);
    }

    #[test]
    fn this_process_is_read() {
        let me = CpuUse::of_process(std::process::id()).expect("/proc on Linux");
        assert!(me.total_ms >= 0.0);
        assert!(!me.by_stage.is_empty(), "at least this thread is listed");
    }
}
