//! Metric samples: written with the processing of the event that finished
//! them, grouped for a report by any slice the same way on both backends,
//! replaced whole by a rebuild; and the entities with an open block or
//! escalation found from their indexes.

use chrono::{DateTime, Utc};
use converge_model::{EntityKey, EntityState, Metric, MetricShape, Sample, Slice};
use converge_store::{Backend, OpenSpan, ProcessedEvent, SampleGroup, SampleQuery, WriteBatch};

use crate::helpers::{TestDb, entity, event, processed_plain};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn sample(metric: Metric, time: &str, value: f64, owner: Option<&str>) -> Sample {
    Sample {
        metric,
        at: at(time),
        value,
        entity: "task/T-1".into(),
        campaign: Some("campaign/spring".into()),
        owner: owner.map(str::to_string),
        channel: None,
        stage: Some("review".into()),
    }
}

fn query(metric: Metric, by: Option<Slice>, since: &str, until: &str) -> SampleQuery {
    SampleQuery {
        metric,
        by,
        since_ms: at(since).timestamp_millis(),
        until_ms: at(until).timestamp_millis(),
    }
}

fn group(slice: Option<&str>, total: f64, values: &[f64]) -> SampleGroup {
    SampleGroup {
        slice: slice.map(str::to_string),
        samples: values.len() as i64,
        total,
        values: values.to_vec(),
    }
}

fn samples_are_grouped_by_any_slice_within_the_period(db: &TestDb) {
    let mut store = db.open();
    let review = Metric::ReviewTime;
    store
        .write(&WriteBatch {
            appends: vec![event("/t", "a"), event("/t", "b"), event("/t", "c")],
            processed: vec![
                ProcessedEvent {
                    samples: vec![
                        sample(review, "2026-11-02T10:00:00Z", 7200.0, Some("ana")),
                        sample(
                            Metric::ExceptionRate,
                            "2026-11-02T10:00:00Z",
                            1.0,
                            Some("ana"),
                        ),
                    ],
                    ..processed_plain(1)
                },
                ProcessedEvent {
                    samples: vec![
                        sample(review, "2026-11-09T10:00:00Z", 3600.0, Some("ben")),
                        sample(review, "2026-11-09T11:00:00Z", 1800.0, Some("ana")),
                        sample(Metric::ExceptionRate, "2026-11-09T11:00:00Z", 0.0, None),
                    ],
                    ..processed_plain(2)
                },
                ProcessedEvent {
                    // After the period.
                    samples: vec![sample(review, "2026-12-01T00:00:00Z", 60.0, Some("ana"))],
                    ..processed_plain(3)
                },
            ],
            ..WriteBatch::default()
        })
        .unwrap();
    let (since, until) = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
    let reader = db.reader();
    assert_eq!(
        reader
            .sample_groups(&query(review, None, since, until))
            .unwrap(),
        vec![group(None, 12600.0, &[1800.0, 3600.0, 7200.0])]
    );
    assert_eq!(
        reader
            .sample_groups(&query(review, Some(Slice::Owner), since, until))
            .unwrap(),
        vec![
            group(Some("ana"), 9000.0, &[1800.0, 7200.0]),
            group(Some("ben"), 3600.0, &[3600.0]),
        ]
    );
    assert_eq!(
        reader
            .sample_groups(&query(review, Some(Slice::Week), since, until))
            .unwrap(),
        vec![
            group(Some("2026-11-02"), 7200.0, &[7200.0]),
            group(Some("2026-11-09"), 5400.0, &[1800.0, 3600.0]),
        ]
    );
    // A rate comes counted, without its values; no owner groups last.
    assert_eq!(
        reader
            .sample_groups(&query(
                Metric::ExceptionRate,
                Some(Slice::Owner),
                since,
                until
            ))
            .unwrap(),
        vec![
            SampleGroup {
                slice: Some("ana".into()),
                samples: 1,
                total: 1.0,
                values: Vec::new()
            },
            SampleGroup {
                slice: None,
                samples: 1,
                total: 0.0,
                values: Vec::new()
            },
        ]
    );
    assert_eq!(
        reader
            .sample_groups(&query(Metric::ExceptionRate, None, since, until))
            .unwrap(),
        vec![SampleGroup {
            slice: None,
            samples: 2,
            total: 1.0,
            values: Vec::new()
        }]
    );
    assert!(
        reader
            .sample_groups(&query(Metric::CycleTime, None, since, until))
            .unwrap()
            .is_empty()
    );

    // BI tools read the same through the views, with stable columns.
    let weekly_sql = "SELECT metric, CAST(week AS TEXT), owner, samples, total FROM report_weekly
                      WHERE metric = 'review_time' ORDER BY week, owner";
    let hours_sql = "SELECT owner, hours FROM report_samples
                     WHERE metric = 'review_time' ORDER BY at";
    type Weekly = (String, String, Option<String>, i64, f64);
    let (weekly, hours): (Vec<Weekly>, Vec<(Option<String>, f64)>) = if db.is_postgres() {
        let mut sql = db.sql();
        (
            sql.query(weekly_sql, &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect(),
            sql.query(hours_sql, &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    } else {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        let weekly = conn
            .prepare(weekly_sql)
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let hours = conn
            .prepare(hours_sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (weekly, hours)
    };
    let row = |week: &str, owner: &str, samples: i64, total: f64| -> Weekly {
        (
            "review_time".into(),
            week.into(),
            Some(owner.into()),
            samples,
            total,
        )
    };
    assert_eq!(
        weekly,
        vec![
            row("2026-11-02", "ana", 1, 7200.0),
            row("2026-11-09", "ana", 1, 1800.0),
            row("2026-11-09", "ben", 1, 3600.0),
            row("2026-11-30", "ana", 1, 60.0),
        ]
    );
    let owner = |o: &str| Some(o.to_string());
    assert_eq!(
        hours,
        vec![
            (owner("ana"), 2.0),
            (owner("ben"), 1.0),
            (owner("ana"), 0.5),
            (owner("ana"), 60.0 / 3600.0)
        ]
    );

    // Samples do not hang on their events: with the old events pruned, the
    // numbers stay.
    let before = reader
        .sample_groups(&query(review, Some(Slice::Owner), since, until))
        .unwrap();
    if db.is_postgres() {
        let mut sql = db.sql();
        sql.batch_execute("DELETE FROM events WHERE seq <= 2")
            .unwrap();
    } else {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch("DELETE FROM events WHERE seq <= 2")
            .unwrap();
    }
    assert_eq!(
        reader
            .sample_groups(&query(review, Some(Slice::Owner), since, until))
            .unwrap(),
        before
    );

    // A rebuild replaces every sample.
    drop(reader);
    store
        .replace_samples(
            &mut [(
                2,
                vec![sample(review, "2026-11-03T00:00:00Z", 60.0, Some("cy"))],
            )]
            .into_iter()
            .map(Ok),
            &[],
        )
        .unwrap();
    assert_eq!(
        store
            .sample_groups(&query(review, Some(Slice::Owner), since, until))
            .unwrap(),
        vec![group(Some("cy"), 60.0, &[60.0])]
    );
}

fn entities_with_an_open_block_or_escalation_are_found_from_their_index(db: &TestDb) {
    let mut store = db.open();
    let mut blocked = entity("T-1", "blocked");
    blocked.flow.blocked_since = Some(at("2026-11-02T10:00:00Z"));
    let mut channel_blocked = entity("T-2", "review");
    channel_blocked
        .channels
        .insert("email".into(), Default::default());
    channel_blocked
        .channels
        .get_mut("email")
        .unwrap()
        .flow
        .blocked_since = Some(at("2026-11-02T10:00:00Z"));
    let mut escalated = entity("T-3", "review");
    escalated.flow.escalated_since = Some(at("2026-11-02T10:00:00Z"));
    let plain = entity("T-4", "review");
    // Fields that happen to bear the spans' names open nothing.
    let mut named_alike = entity("T-5", "review");
    named_alike
        .fields
        .insert("blocked_since".into(), "2026-11-01".into());
    named_alike
        .fields
        .insert("escalated_since".into(), "2026-11-01".into());
    // Each state as the result of an event of its own (`first` is the
    // first event's journal seq), in one write.
    let write = |store: &mut dyn Backend, first: i64, states: Vec<EntityState>| {
        let appends = (first..first + states.len() as i64)
            .map(|seq| event("/t", &format!("e-{seq}")))
            .collect();
        let processed = states
            .into_iter()
            .zip(first..)
            .map(|(state, seq)| ProcessedEvent {
                entity: Some(state.into()),
                ..processed_plain(seq)
            })
            .collect();
        store
            .write(&WriteBatch {
                appends,
                processed,
                ..WriteBatch::default()
            })
            .unwrap();
    };
    let ids = |store: &dyn Backend, span, after: Option<&EntityKey>| -> Vec<String> {
        store
            .entities_with_open(span, after, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    write(
        &mut *store,
        1,
        vec![
            blocked.clone(),
            channel_blocked,
            escalated.clone(),
            plain,
            named_alike,
        ],
    );
    assert_eq!(ids(&*store, OpenSpan::Blocked, None), ["T-1", "T-2"]);
    assert_eq!(
        ids(
            &*store,
            OpenSpan::Blocked,
            Some(&EntityKey::parse("task/T-1").unwrap())
        ),
        ["T-2"]
    );
    assert_eq!(ids(&*store, OpenSpan::Escalated, None), ["T-3"]);

    // A span that closes leaves the index with the next state written.
    blocked.flow.blocked_since = None;
    escalated.flow.escalated_since = None;
    write(&mut *store, 6, vec![blocked, escalated]);
    assert_eq!(ids(&*store, OpenSpan::Blocked, None), ["T-2"]);
    assert!(ids(&*store, OpenSpan::Escalated, None).is_empty());
}

/// `report_samples` gives every duration's hours and no rate's: the view
/// names the durations in SQL, so a new one needs a migration.
fn the_samples_view_gives_the_hours_of_every_duration_metric(db: &TestDb) {
    let mut store = db.open();
    store
        .write(&WriteBatch {
            appends: vec![event("/t", "a")],
            processed: vec![ProcessedEvent {
                samples: Metric::ALL
                    .iter()
                    .map(|m| sample(*m, "2026-11-02T10:00:00Z", 5400.0, None))
                    .collect(),
                ..processed_plain(1)
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    let sql = "SELECT metric, hours FROM report_samples ORDER BY metric";
    let hours: Vec<(String, Option<f64>)> = if db.is_postgres() {
        db.sql()
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut expected: Vec<(String, Option<f64>)> = Metric::ALL
        .iter()
        .map(|m| {
            let hours = (m.shape() == MetricShape::Duration).then_some(1.5);
            (m.name().to_string(), hours)
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(hours, expected);
}

conformance!(
    the_samples_view_gives_the_hours_of_every_duration_metric,
    samples_are_grouped_by_any_slice_within_the_period,
    entities_with_an_open_block_or_escalation_are_found_from_their_index,
);
