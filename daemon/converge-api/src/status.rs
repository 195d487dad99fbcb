//! `GET /v1/status`: what the daemon runs and where its work stands.

use serde::{Deserialize, Serialize};

use crate::Time;

/// The answer of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// converge's version.
    pub version: String,
    pub started_at: Time,
    /// Seconds since `started_at`, on the system clock.
    pub uptime_seconds: i64,
    /// The daemon's clock: the system's, or a manual one (`clock.mode`).
    pub clock: Time,
    /// The rules in use: the live ones in the order they run, then the
    /// shadow ones.
    pub rules: Vec<RuleInUse>,
    /// When this version of the rules was compiled.
    pub rules_loaded_at: Time,
    /// The last reload attempt; `null` before the first since start.
    pub last_reload: Option<Reload>,
    /// The errors of the last failed reload; `null` once a reload succeeds.
    pub last_reload_error: Option<ReloadError>,
    pub journal: JournalPosition,
    pub actions_pending: i64,
    /// Actions that failed for good, waiting for a person (`/v1/dlq`).
    pub dead_letters: i64,
    pub timers_pending: i64,
    /// Pending timers that a rule version not loaded now made (an earlier
    /// version of a loaded rule, or a removed rule), counted among the
    /// 10,000 due soonest. They fire as planned unless a person cancels
    /// them (`POST /v1/timers/cancel`). Absent from older daemons' answers.
    #[serde(default)]
    pub stale_timers: Vec<StaleTimers>,
    /// Whether the daemon can write to its database.
    pub storage: Storage,
    /// `null` unless daemons share the database (PostgreSQL).
    pub cluster: Option<Cluster>,
}

/// The pending timers one rule version made that is not loaded now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleTimers {
    pub rule: String,
    /// The version's hash.
    pub version: String,
    pub pending: i64,
    /// No version of the rule is loaded: it was removed from the config.
    pub rule_gone: bool,
}

/// Whether writing to the database works. While it fails, new events are
/// refused (503) and the work not recorded yet is retried until it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    pub state: StorageState,
    /// When the failure began; `null` when `ok`.
    pub since: Option<Time>,
    /// The last error; `null` when `ok`.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageState {
    Ok,
    Failing,
}

/// One rule in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInUse {
    pub name: String,
    /// Its file, as the config names it.
    pub file: String,
    /// The rule version every decision names: 16 hex characters.
    pub hash: String,
    /// The header's `order`.
    pub order: i64,
    /// Where it runs among the live (or the shadow) rules, from 1.
    pub position: u64,
    /// The event types (with `*` globs) it runs for; `null`: every event.
    pub events: Option<Vec<String>>,
    /// Whether it is a shadow rule (`rules.shadow`): decisions recorded,
    /// no effect.
    pub shadow: bool,
}

/// A reload attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reload {
    pub at: Time,
    pub outcome: ReloadOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// Every rule compiled; the new version runs.
    Ok,
    /// Some rule did not compile; the previous version keeps running.
    Failed,
}

impl ReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Ok => "ok",
            ReloadOutcome::Failed => "failed",
        }
    }
}

/// A failed reload's errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadError {
    pub at: Time,
    /// One per error, each with its file:line:column.
    pub errors: Vec<String>,
}

/// Journal sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPosition {
    /// The last event journaled.
    pub head: i64,
    /// The last event whose processing is committed.
    pub processed: i64,
}

/// Daemons sharing one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// This daemon's name.
    pub daemon: String,
    /// Every live daemon, this one included.
    pub daemons: Vec<ClusterDaemon>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDaemon {
    pub daemon: String,
    /// How many of the 64 entity partitions it holds.
    pub partitions: u64,
    /// The work only one daemon at a time does that it holds now: the
    /// sources it reads and the pruning. Absent from older daemons' answers.
    #[serde(default)]
    pub duties: Vec<Duty>,
}

/// Work that one daemon at a time does, under a lease of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Duty {
    /// Reading the drop folder of this name (`[[file_drops]]`).
    FileDrop(String),
    /// Running the poll of this name (`[[polls]]`).
    Poll(String),
    /// Pruning old events (`storage.retention`).
    Retention,
}

impl std::fmt::Display for Duty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Duty::FileDrop(name) => write!(f, "drop folder {name}"),
            Duty::Poll(name) => write!(f, "poll {name}"),
            Duty::Retention => f.write_str("retention"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{assert_wire, time};

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            started_at: time("2026-11-20T09:00:00.000Z"),
            uptime_seconds: 42,
            clock: time("2026-11-20T09:00:42.250Z"),
            rules: vec![
                RuleInUse {
                    name: "greet".into(),
                    file: "rules/greet.rhai".into(),
                    hash: "0123456789abcdef".into(),
                    order: 100,
                    position: 1,
                    events: None,
                    shadow: false,
                },
                RuleInUse {
                    name: "try".into(),
                    file: "rules/try.rhai".into(),
                    hash: "fedcba9876543210".into(),
                    order: 100,
                    position: 1,
                    events: Some(vec!["task.*".into()]),
                    shadow: true,
                },
            ],
            rules_loaded_at: time("2026-11-20T09:00:00.000Z"),
            last_reload: None,
            last_reload_error: None,
            journal: JournalPosition {
                head: 7,
                processed: 6,
            },
            actions_pending: 1,
            dead_letters: 0,
            timers_pending: 2,
            stale_timers: vec![StaleTimers {
                rule: "greet".into(),
                version: "89abcdef01234567".into(),
                pending: 1,
                rule_gone: false,
            }],
            storage: Storage {
                state: StorageState::Ok,
                since: None,
                error: None,
            },
            cluster: None,
        }
    }

    #[test]
    fn a_lone_daemon_before_any_reload() {
        assert_wire(
            &status(),
            json!({
                "version": "0.1.0",
                "started_at": "2026-11-20T09:00:00.000Z",
                "uptime_seconds": 42,
                "clock": "2026-11-20T09:00:42.250Z",
                "rules": [
                    {"name": "greet", "file": "rules/greet.rhai", "hash": "0123456789abcdef",
                     "order": 100, "position": 1, "events": null, "shadow": false},
                    {"name": "try", "file": "rules/try.rhai", "hash": "fedcba9876543210",
                     "order": 100, "position": 1, "events": ["task.*"], "shadow": true},
                ],
                "rules_loaded_at": "2026-11-20T09:00:00.000Z",
                "last_reload": null,
                "last_reload_error": null,
                "journal": {"head": 7, "processed": 6},
                "actions_pending": 1,
                "dead_letters": 0,
                "timers_pending": 2,
                "stale_timers": [{"rule": "greet", "version": "89abcdef01234567",
                                  "pending": 1, "rule_gone": false}],
                "storage": {"state": "ok", "since": null, "error": null},
                "cluster": null,
            }),
        );
    }

    #[test]
    fn a_daemon_whose_disk_is_full() {
        let status = Status {
            storage: Storage {
                state: StorageState::Failing,
                since: Some(time("2026-11-20T09:00:30.000Z")),
                error: Some("sqlite: database or disk is full".into()),
            },
            ..status()
        };
        let wire = serde_json::to_value(status.clone()).unwrap();
        assert_eq!(
            wire["storage"],
            json!({"state": "failing", "since": "2026-11-20T09:00:30.000Z",
                   "error": "sqlite: database or disk is full"})
        );
        let read: Status = serde_json::from_value(wire).unwrap();
        assert_eq!(read.storage, status.storage);
    }

    #[test]
    fn a_failed_reload_in_a_cluster() {
        let status = Status {
            last_reload: Some(Reload {
                at: time("2026-11-20T09:01:00.000Z"),
                outcome: ReloadOutcome::Failed,
            }),
            last_reload_error: Some(ReloadError {
                at: time("2026-11-20T09:01:00.000Z"),
                errors: vec!["rules/greet.rhai:3:1: syntax error".into()],
            }),
            cluster: Some(Cluster {
                daemon: "d-1".into(),
                daemons: vec![
                    ClusterDaemon {
                        daemon: "d-1".into(),
                        partitions: 32,
                        duties: vec![Duty::FileDrop("briefs".into()), Duty::Retention],
                    },
                    ClusterDaemon {
                        daemon: "d-2".into(),
                        partitions: 32,
                        duties: vec![Duty::Poll("jira-board".into())],
                    },
                ],
            }),
            ..status()
        };
        let mut wire = serde_json::to_value(status.clone()).unwrap();
        assert_eq!(
            wire["last_reload"],
            json!({"at": "2026-11-20T09:01:00.000Z", "outcome": "failed"})
        );
        assert_eq!(
            wire["last_reload_error"],
            json!({"at": "2026-11-20T09:01:00.000Z", "errors": ["rules/greet.rhai:3:1: syntax error"]})
        );
        assert_eq!(
            wire["cluster"],
            json!({"daemon": "d-1", "daemons": [
                {"daemon": "d-1", "partitions": 32, "duties": [
                    {"kind": "file_drop", "name": "briefs"}, {"kind": "retention"}]},
                {"daemon": "d-2", "partitions": 32, "duties": [
                    {"kind": "poll", "name": "jira-board"}]},
            ]})
        );
        wire["last_reload"]["outcome"] = json!("ok");
        let read: Status = serde_json::from_value(wire).unwrap();
        assert_eq!(read.last_reload.unwrap().outcome, ReloadOutcome::Ok);
        assert_eq!(read.cluster, status.cluster);
    }

    #[test]
    fn an_older_daemons_cluster_without_duties_is_read() {
        let read: Cluster = serde_json::from_value(json!({"daemon": "d-1", "daemons": [
            {"daemon": "d-1", "partitions": 64}]}))
        .unwrap();
        assert_eq!(read.daemons[0].duties, vec![]);
    }

    #[test]
    fn a_duty_reads_as_a_person_would_say_it() {
        assert_eq!(
            Duty::FileDrop("briefs".into()).to_string(),
            "drop folder briefs"
        );
        assert_eq!(
            Duty::Poll("jira-board".into()).to_string(),
            "poll jira-board"
        );
        assert_eq!(Duty::Retention.to_string(), "retention");
    }
}
