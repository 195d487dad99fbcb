//! What event sources read back: their kept state (`source_state`, written
//! with [`WriteBatch::source_state`](crate::WriteBatch)), and the last
//! occurrence of a schedule.
//!
//! A schedule's occurrences are journaled with ids `<schedule>@<time>`, so
//! the journal itself records which occurrences fired: deduplication on
//! (source, id) makes each one fire once, and the last one is found here.

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use crate::{Backend, Durability, NewEvent, SourceState, WriteBatch};

    fn event(source: &str, id: &str) -> NewEvent {
        NewEvent {
            hook: None,
            source: source.into(),
            id: id.into(),
            ty: "digest.daily".into(),
            subject: None,
            json: "{}".into(),
            received_at_ms: 1,
        }
    }

    #[test]
    fn the_last_occurrence_is_the_greatest_id_of_that_name_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(
            &dir.path().join("c.db"),
            Durability::Normal,
            Default::default(),
        )
        .unwrap();
        let schedules = "converge/schedules";
        store
            .write(&WriteBatch {
                appends: vec![
                    event(schedules, "digest@2026-11-24T08:00:00Z"),
                    event(schedules, "digest@2026-11-23T08:00:00Z"),
                    // A longer name sharing the prefix, and another source.
                    event(schedules, "digest-weekly@2026-12-01T08:00:00Z"),
                    event("/elsewhere", "digest@2027-01-01T08:00:00Z"),
                ],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(
            store
                .last_occurrence_id(schedules, "digest")
                .unwrap()
                .as_deref(),
            Some("digest@2026-11-24T08:00:00Z")
        );
        assert_eq!(store.last_occurrence_id(schedules, "weekly").unwrap(), None);
        let plan: String = store
            .conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT id FROM events WHERE id >= ?1 || '@' AND id < ?1 || 'A'
                 AND source = ?2 ORDER BY id DESC LIMIT 1",
            )
            .unwrap()
            .query_map(["digest", schedules], |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN events"), "{plan}");
    }

    #[test]
    fn source_state_keeps_the_last_value_of_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(
            &dir.path().join("c.db"),
            Durability::Normal,
            Default::default(),
        )
        .unwrap();
        assert_eq!(store.source_state("poll/jira").unwrap(), None);
        let state = |value: &str, at| SourceState {
            key: "poll/jira".into(),
            value: value.into(),
            updated_at_ms: at,
        };
        store
            .write(&WriteBatch {
                appends: vec![event("/jira", "j-1")],
                source_state: vec![state("page-1", 1), state("page-2", 2)],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(
            store.source_state("poll/jira").unwrap().as_deref(),
            Some("page-2")
        );
        store
            .write(&WriteBatch {
                source_state: vec![state("page-3", 3)],
                ..WriteBatch::default()
            })
            .unwrap();
        assert_eq!(
            store.source_state("poll/jira").unwrap().as_deref(),
            Some("page-3")
        );
    }
}
