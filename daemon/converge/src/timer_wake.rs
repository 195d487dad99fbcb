//! How the journal wakes the timer scheduler (`timers`) after a commit
//! that created timers: a type of its own, so the journal, which wakes,
//! and the scheduler, which fires through the journal, do not import each
//! other.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

/// How the journal wakes the scheduler: only for a new timer due before
/// the time the scheduler will look again on its own. Waking it after
/// every commit that created timers cost two queries (due timers, next
/// due time) per commit: with a timer or three per event (the example
/// rules' ladder), due days later, ~7% of the tokio workers' CPU. A cancelled timer needs
/// no wake: the scheduler finds nothing due then and looks again.
#[derive(Debug)]
pub struct TimerWake {
    notify: Notify,
    /// When the scheduler looks again on its own, on its clock, in ms;
    /// [`AWAKE`] while it is reading, so that what is committed meanwhile
    /// wakes it once more.
    planned_ms: AtomicI64,
}

const AWAKE: i64 = i64::MIN;

impl TimerWake {
    pub fn new() -> Arc<TimerWake> {
        Arc::new(TimerWake {
            notify: Notify::new(),
            planned_ms: AtomicI64::new(AWAKE),
        })
    }

    /// After a commit that created timers, the earliest due at `due_ms`.
    pub fn created(&self, due_ms: i64) {
        let planned = self.planned_ms.load(Ordering::SeqCst);
        if planned == AWAKE || due_ms < planned {
            // Kept as a permit if the scheduler is not waiting yet.
            self.notify.notify_one();
        }
    }

    /// The scheduler is about to read the timers.
    pub fn awake(&self) {
        self.planned_ms.store(AWAKE, Ordering::SeqCst);
    }

    /// The scheduler read the timers and looks again at `planned_ms`
    /// unless woken.
    pub fn sleeping_until(&self, planned_ms: i64) {
        self.planned_ms.store(planned_ms, Ordering::SeqCst);
    }

    /// Resolves when the journal wakes the scheduler (or has since its last
    /// wait: one wake is kept).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a wake is waiting for the scheduler (and takes it).
    fn woken(wake: &TimerWake) -> bool {
        let notified = std::pin::pin!(wake.notify.notified());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        notified.poll(&mut context).is_ready()
    }

    #[test]
    fn only_a_timer_due_before_the_planned_look_wakes_the_scheduler() {
        let wake = TimerWake::new();
        wake.sleeping_until(10_000);
        wake.created(10_000);
        wake.created(86_400_000);
        assert!(!woken(&wake), "a later timer woke the scheduler");
        wake.created(9_999);
        assert!(woken(&wake));
        assert!(!woken(&wake), "one wake was taken twice");
    }

    #[test]
    fn a_timer_created_while_the_scheduler_reads_wakes_it_again() {
        let wake = TimerWake::new();
        wake.sleeping_until(10_000);
        wake.awake();
        wake.created(86_400_000);
        assert!(woken(&wake));
    }
}
