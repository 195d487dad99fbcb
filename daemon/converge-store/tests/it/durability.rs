//! What a commit survives: reopening, a crash before any checkpoint
//! (SQLite's WAL), and what another connection sees.

use converge_model::EntityKey;
use converge_store::{Durability, Location, Store, WriteBatch};

use crate::helpers::{TestDb, appends, entity, event, processed_with_actions};

fn journal_and_process(store: &mut Store) {
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-1"), event("/jira", "T-2")],
            processed: vec![processed_with_actions(1, "T-1", "ana")],
            ..WriteBatch::default()
        })
        .unwrap();
}

fn assert_everything_is_there(store: &Store) {
    assert_eq!(store.events_after(0, 10).unwrap().len(), 2);
    assert_eq!(store.processed_cursor().unwrap(), 1);
    assert_eq!(store.pending_actions(10).unwrap().len(), 2);
    assert_eq!(
        store
            .entity(&EntityKey::parse("task/T-1").unwrap())
            .unwrap(),
        Some(entity("T-1", "review"))
    );
}

#[test]
fn a_reopened_store_has_everything_that_was_committed() {
    for durability in [Durability::Full, Durability::Normal] {
        let db = TestDb::sqlite();
        let mut store = Store::open(&Location::Sqlite {
            path: db.path(),
            durability,
        })
        .unwrap();
        journal_and_process(&mut store);
        drop(store);

        let mut store = Store::open(&Location::Sqlite {
            path: db.path(),
            durability,
        })
        .unwrap();
        assert_everything_is_there(&store);
        assert_everything_is_there(&db.reader());
        let next = store.write(&appends(vec![event("/jira", "T-3")])).unwrap();
        assert_eq!(next.appended[0].seq(), 3, "{durability:?}");
    }
}

#[test]
fn a_store_that_was_never_closed_is_recovered_from_its_wal() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    journal_and_process(&mut store);
    // No close, no checkpoint: the commits are only in the WAL, as after a crash.
    std::mem::forget(store);
    assert_everything_is_there(&db.open());
}

fn a_reader_sees_each_batch_once_committed(db: &TestDb) {
    let mut store = db.open();
    let reader = db.reader();
    assert!(reader.events_after(0, 10).unwrap().is_empty());
    journal_and_process(&mut store);
    assert_everything_is_there(&reader);
}

conformance!(a_reader_sees_each_batch_once_committed);
