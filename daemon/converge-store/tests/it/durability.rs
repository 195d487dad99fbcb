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

/// Events of about 3 KB each: about a WAL page (4 KiB) apiece.
fn padded_events(from: usize, count: usize) -> WriteBatch {
    let pad = "x".repeat(3_000);
    appends(
        (from..from + count)
            .map(|i| {
                let mut e = event("/jira", &format!("P-{i}"));
                e.json = format!(
                    r#"{{"specversion":"1.0","id":"P-{i}","source":"/jira","type":"task.updated","subject":"task/P-{i}","data":{{"pad":"{pad}"}}}}"#
                );
                e
            })
            .collect(),
    )
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn wal_path(db: &TestDb) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}-wal", db.path().display()))
}

/// A WAL past a thousand pages is copied into the database file by the
/// background checkpointer: the writer's own checkpoint would wait for
/// four thousand, and no commit here gets near that.
#[test]
fn a_long_wal_is_checkpointed_off_the_writers_path() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    let before = file_len(&db.path());
    for batch in 0..12 {
        store.write(&padded_events(batch * 100, 100)).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while file_len(&db.path()) < before + 2_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes: nothing was checkpointed",
            file_len(&db.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(store.events_after(0, 2_000).unwrap().len(), 1_200);
}

/// However the background checkpoints fall, the writer starts the WAL over
/// once it is long: written to for ~100 MB, the file stays far shorter.
#[test]
fn the_wal_stays_bounded_under_steady_writes() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    let mut longest = 0;
    for batch in 0..250 {
        store.write(&padded_events(batch * 100, 100)).unwrap();
        longest = longest.max(file_len(&wal_path(&db)));
    }
    // The backstop's 4,000 pages, what is written while a background
    // checkpoint holds the lock (a few batches on a busy machine) and the
    // batch that crosses it, each page with its frame header.
    let bound = (4_000 + 2_000) * (4_096 + 24);
    assert!(
        longest <= bound,
        "the WAL grew to {longest} bytes (bound {bound})"
    );
    assert_eq!(store.events_after(0, 30_000).unwrap().len(), 25_000);
}

/// Closing the store closes the checkpointer's connection too: the last
/// connection to close checkpoints everything and removes the WAL.
#[test]
fn a_closed_store_leaves_no_wal_behind() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    for batch in 0..15 {
        store.write(&padded_events(batch * 100, 100)).unwrap();
    }
    assert!(wal_path(&db).exists());
    drop(store);
    assert!(!wal_path(&db).exists(), "the WAL was left behind");
    let store = db.open();
    assert_eq!(store.events_after(0, 2_000).unwrap().len(), 1_500);
}

/// Under steady writes the WAL starts over long before the backstop:
/// once the background checkpoint has copied it, the writer's next commit
/// copies what was written meanwhile and the one after starts it over.
/// SQLite rewrites the WAL's header then, with the next checkpoint sequence
/// number (bytes 12-15).
#[test]
fn a_checkpointed_wal_starts_over_before_the_backstop() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    store.write(&padded_events(0, 100)).unwrap();
    let started = wal_sequence(&db);
    // ~110 pages a batch: 30 batches stay short of the 4,000 pages at
    // which the writer would checkpoint on its own. The pause between
    // them leaves the checkpointer a core on a busy machine.
    let mut batches = 1;
    while wal_sequence(&db) == started {
        assert!(
            batches < 30,
            "the WAL was not started over in {batches} batches"
        );
        store.write(&padded_events(batches * 100, 100)).unwrap();
        batches += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(store.events_after(0, 5_000).unwrap().len(), batches * 100);
}

fn wal_sequence(db: &TestDb) -> [u8; 4] {
    use std::io::Read;
    let mut header = [0; 16];
    std::fs::File::open(wal_path(db))
        .and_then(|mut wal| wal.read_exact(&mut header))
        .unwrap();
    header[12..16].try_into().unwrap()
}
