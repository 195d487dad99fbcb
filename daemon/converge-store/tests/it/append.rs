use converge_store::{Appended, WriteBatch};

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

conformance!(
    append_numbers_events_and_dedups_on_source_and_id,
    a_duplicate_keeps_the_first_event,
    an_event_on_one_hook_does_not_suppress_another_hooks,
    events_after_pages_in_seq_order,
    an_empty_batch_commits_nothing,
);
