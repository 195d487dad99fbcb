//! The daemon's clock: what rules see as `now`, what timers are due against,
//! and what processing times are recorded with.
//!
//! [`Clock::System`] is the wall clock. [`Clock::Manual`] stands still until
//! it is moved (`POST /v1/clock`): a testing aid that makes "48 hours later"
//! instant. Moving it wakes every [`ClockWatch`]: the timer scheduler and the
//! schedule source each hold one.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where a manual clock's time is kept (`source_state`), so a restart
/// continues from it.
pub const MANUAL_CLOCK_KEY: &str = "clock/manual";

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Manual(Arc<ManualClock>),
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    /// Bumped on every move; each waiter holds its own receiver, so no
    /// waiter misses a move another one saw.
    moved: watch::Sender<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    /// Timers and decisions are ordered by time; going back would reorder them.
    #[error("the manual clock only moves forward: it is {now}, not moving to {to}")]
    Backwards { now: String, to: String },
    #[error("moving the clock by this much leaves the representable time range")]
    OutOfRange,
}

impl Clock {
    /// A manual clock that starts at `start`.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock::Manual(Arc::new(ManualClock {
            now: Mutex::new(start),
            moved: watch::Sender::new(0),
        }))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(manual) => *manual.now.lock().expect("clock lock"),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }

    /// The manual clock, when this is one.
    pub fn as_manual(&self) -> Option<&ManualClock> {
        match self {
            Clock::System => None,
            Clock::Manual(manual) => Some(manual),
        }
    }

    /// What a task waiting on this clock holds to learn that it moved.
    pub fn watch(&self) -> ClockWatch {
        ClockWatch(match self {
            Clock::System => None,
            Clock::Manual(manual) => Some(manual.moved.subscribe()),
        })
    }
}

/// Sleeps `wait`, or until dropped when there is no `wait` (a manual clock
/// moves only when told, and the waiter's [`ClockWatch`] says when).
pub async fn sleep_or_wait(wait: Option<std::time::Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

/// How a sleep that stopping the daemon may cut short ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slept {
    Fully,
    Stopped,
}

/// Sleeps `wait` on the wall clock (a retry's delay, a poll's interval)
/// unless `stop` fires first; at once when it already has.
pub async fn sleep_unless_stopped(wait: std::time::Duration, stop: &CancellationToken) -> Slept {
    if stop.is_cancelled() {
        return Slept::Stopped;
    }
    if wait.is_zero() {
        return Slept::Fully;
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => Slept::Fully,
        () = stop.cancelled() => Slept::Stopped,
    }
}

/// One waiter's view of the manual clock's moves.
#[derive(Debug)]
pub struct ClockWatch(Option<watch::Receiver<u64>>);

impl ClockWatch {
    /// Resolves when a manual clock moved since the last call (or since
    /// this watch was made); never for the system clock.
    pub async fn moved(&mut self) {
        if let Some(rx) = &mut self.0
            && rx.changed().await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }
}

impl ManualClock {
    /// Moves the clock forward by `by`; returns the new time.
    pub fn advance(&self, by: std::time::Duration) -> Result<DateTime<Utc>, ClockError> {
        let by = chrono::Duration::from_std(by).map_err(|_| ClockError::OutOfRange)?;
        let mut now = self.now.lock().expect("clock lock");
        *now = now.checked_add_signed(by).ok_or(ClockError::OutOfRange)?;
        let moved = *now;
        drop(now);
        self.moved.send_modify(|n| *n += 1);
        Ok(moved)
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }

    /// Where `by` from now would move the clock, without moving it.
    pub fn after(&self, by: std::time::Duration) -> Result<DateTime<Utc>, ClockError> {
        let by = chrono::Duration::from_std(by).map_err(|_| ClockError::OutOfRange)?;
        let now = *self.now.lock().expect("clock lock");
        now.checked_add_signed(by).ok_or(ClockError::OutOfRange)
    }

    /// Sets the clock to `to`, which must not be earlier than now.
    pub fn set(&self, to: DateTime<Utc>) -> Result<DateTime<Utc>, ClockError> {
        let mut now = self.now.lock().expect("clock lock");
        if to < *now {
            return Err(ClockError::Backwards {
                now: now.to_rfc3339(),
                to: to.to_rfc3339(),
            });
        }
        *now = to;
        drop(now);
        self.moved.send_modify(|n| *n += 1);
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward_and_only_when_told() {
        let start: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        let manual = clock.as_manual().unwrap();
        let later = manual
            .advance(std::time::Duration::from_secs(48 * 3600))
            .unwrap();
        assert_eq!(
            later,
            "2026-11-25T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(clock.now(), later);
        assert!(matches!(
            manual.set(start),
            Err(ClockError::Backwards { .. })
        ));
        assert_eq!(clock.now(), later);
        assert!(Clock::System.as_manual().is_none());
    }

    #[tokio::test]
    async fn a_sleep_ends_early_when_the_daemon_stops_and_not_otherwise() {
        use std::time::{Duration, Instant};
        let stop = CancellationToken::new();
        assert_eq!(
            sleep_unless_stopped(Duration::ZERO, &stop).await,
            Slept::Fully
        );
        let started = Instant::now();
        assert_eq!(
            sleep_unless_stopped(Duration::from_millis(20), &stop).await,
            Slept::Fully
        );
        assert!(started.elapsed() >= Duration::from_millis(20));

        let stopping = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stopping.cancel();
        });
        let started = Instant::now();
        assert_eq!(
            sleep_unless_stopped(Duration::from_secs(600), &stop).await,
            Slept::Stopped
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stop cut the sleep short"
        );
        // Once stopped, no sleep starts, however short.
        assert_eq!(
            sleep_unless_stopped(Duration::ZERO, &stop).await,
            Slept::Stopped
        );
    }
}
