use converge_model::Event;
use converge_store::{Appended, NewEvent, WriteBatch};
use serde_json::json;

use crate::helpers::{TestDb, appends, event};

fn append_numbers_events_and_dedups_on_source_and_id(db: &TestDb) {
    let mut store = db.open();

    let first = store
        .write(&appends(vec![event("/jira", "e-1"), event("/jira", "e-2")]))
        .unwrap();
    assert_eq!(
        first.appended,
        vec![Appended::New { seq: 1 }, Appended::New { seq: 2 }]
    );

    let second = store
        .write(&appends(vec![
            event("/jira", "e-3"),
            event("/jira", "e-2"),
            event("/jira", "e-3"),
            event("/asana", "e-2"),
        ]))
        .unwrap();
    assert_eq!(
        second.appended,
        vec![
            Appended::New { seq: 3 },
            Appended::Duplicate { seq: 2 },
            Appended::Duplicate { seq: 3 },
            Appended::New { seq: 4 },
        ],
        "duplicates across batches and within one; another source is another event"
    );
    assert!(second.actions.is_empty());

    let journal = store.events_after(0, 100).unwrap();
    assert_eq!(
        journal.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(journal[3].json, event("/asana", "e-2").json);
    assert_eq!(journal[0].received_at_ms, 1_000);
}

fn a_duplicate_keeps_the_first_event(db: &TestDb) {
    let mut store = db.open();
    store.write(&appends(vec![event("/jira", "e-1")])).unwrap();
    let mut again = event("/jira", "e-1");
    again.json = "{}".into();
    again.received_at_ms = 9_999;
    store.write(&appends(vec![again])).unwrap();

    let journal = store.events_after(0, 10).unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].json, event("/jira", "e-1").json);
    assert_eq!(journal[0].received_at_ms, 1_000);
}

fn an_event_on_one_hook_does_not_suppress_another_hooks(db: &TestDb) {
    let mut store = db.open();
    let on = |hook: Option<&str>| {
        let mut e = event("https://acme.atlassian.net", "wh-42");
        e.hook = hook.map(str::to_string);
        e
    };
    let written = store
        .write(&appends(vec![on(Some("partner")), on(Some("jira"))]))
        .unwrap();
    assert_eq!(
        written.appended,
        vec![Appended::New { seq: 1 }, Appended::New { seq: 2 }],
        "the same source and id on two hooks are two events"
    );
    let again = store
        .write(&appends(vec![
            on(Some("jira")),
            on(None),
            on(Some("partner")),
        ]))
        .unwrap();
    assert_eq!(
        again.appended,
        vec![
            Appended::Duplicate { seq: 2 },
            Appended::New { seq: 3 },
            Appended::Duplicate { seq: 1 },
        ],
        "a redelivery on the same hook is a duplicate; converge's own sources are a hook of their own"
    );
}

fn events_after_pages_in_seq_order(db: &TestDb) {
    let mut store = db.open();
    let events = (0..10).map(|i| event("/x", &format!("e-{i}"))).collect();
    store.write(&appends(events)).unwrap();

    let page = store.events_after(3, 4).unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert!(store.events_after(10, 4).unwrap().is_empty());
    assert!(store.events_after(0, 0).unwrap().is_empty());
}

fn an_empty_batch_commits_nothing(db: &TestDb) {
    let mut store = db.open();
    let result = store.write(&WriteBatch::default()).unwrap();
    assert!(result.appended.is_empty() && result.actions.is_empty());
    assert_eq!(store.processed_cursor().unwrap(), 0);
}

/// An event as converge writes it (`converge_model::Event`) is stored
/// without the attributes its row holds in columns, and every read gives
/// back the same JSON, byte for byte.
fn an_events_json_reads_back_byte_for_byte(db: &TestDb) {
    let made = [
        json!({"specversion": "1.0", "id": "evt-1", "type": "asset.updated",
               "source": "/race/r1", "subject": "campaign/c-1",
               "data": {"channel": "email"}}),
        json!({"specversion": "1.0", "id": "e \"2\" é", "type": "task.handoff",
               "source": "/jira", "datacontenttype": "application/json",
               "subject": "task/T-2", "data": {"stage": "review"}}),
        json!({"specversion": "1.0", "id": "e-3", "type": "schedule.tick",
               "source": "converge/schedules"}),
        json!({"specversion": "1.0", "id": "e-4", "type": "task.updated",
               "source": "/jira", "subject": "task/T-4", "data": {"stage": "done"}}),
    ];
    let events: Vec<NewEvent> = made
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let mut event = Event::from_value(value).unwrap();
            if i == 3 {
                event = event.arrived_on("jira", None);
            }
            NewEvent {
                hook: event.hook.clone(),
                source: event.source.clone(),
                id: event.id.clone(),
                ty: event.ty.clone(),
                subject: event.subject.clone(),
                json: event.json.clone(),
                received_at_ms: 1_000,
            }
        })
        .collect();
    let mut store = db.open();
    store.write(&appends(events.clone())).unwrap();
    let stored: Vec<String> = (1..=4).map(|seq| db.stored_event_json(seq)).collect();
    assert!(stored[0].starts_with("~s,\"data\""), "{}", stored[0]);
    // The subject after `datacontenttype`: cut where it was, 37 bytes on.
    assert!(
        stored[1].starts_with("~s37;,\"datacontenttype\""),
        "{}",
        stored[1]
    );
    assert!(!stored[1].contains("task/T-2"), "{}", stored[1]);
    assert_eq!(stored[2], "~}");
    assert!(stored[3].starts_with("~sh"), "{}", stored[3]);
    assert!(!stored[3].contains("jira"), "{}", stored[3]);
    let read: Vec<String> = db
        .reader()
        .events_after(0, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.json)
        .collect();
    let written: Vec<String> = events.into_iter().map(|e| e.json).collect();
    assert_eq!(read, written);
}

conformance!(
    an_events_json_reads_back_byte_for_byte,
    append_numbers_events_and_dedups_on_source_and_id,
    a_duplicate_keeps_the_first_event,
    an_event_on_one_hook_does_not_suppress_another_hooks,
    events_after_pages_in_seq_order,
    an_empty_batch_commits_nothing,
);
