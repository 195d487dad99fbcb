//! Opening: migrating, refusing other versions, readers.

use std::thread;

use converge_store::{Store, StoreError};

use crate::helpers::{TestDb, appends, event};

fn a_reader_needs_an_existing_database(db: &TestDb) {
    let err = Store::open_reader(&db.location()).err().unwrap();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(!db.exists(), "a reader creates nothing");
}

fn a_reader_refuses_a_database_that_is_not_migrated(db: &TestDb) {
    db.set_schema_version(0);
    let err = Store::open_reader(&db.location()).err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaVersion { found: 0, .. }),
        "{err}"
    );
}

fn a_database_from_a_newer_converge_is_refused(db: &TestDb) {
    drop(db.open());
    db.set_schema_version(999);
    for err in [
        Store::open(&db.location()).err().unwrap(),
        Store::open_reader(&db.location()).err().unwrap(),
    ] {
        assert!(
            matches!(err, StoreError::SchemaVersion { found: 999, .. }),
            "{err}"
        );
    }
}

fn reopening_does_not_migrate_again(db: &TestDb) {
    let mut store = db.open();
    store.write(&appends(vec![event("/x", "e-1")])).unwrap();
    drop(store);
    let store = db.open();
    assert_eq!(store.events_after(0, 10).unwrap().len(), 1);
}

conformance!(
    a_reader_needs_an_existing_database,
    a_reader_refuses_a_database_that_is_not_migrated,
    a_database_from_a_newer_converge_is_refused,
    reopening_does_not_migrate_again,
);

#[test]
fn a_sqlite_reader_cannot_write() {
    let db = TestDb::sqlite();
    drop(db.open());
    let mut reader = db.reader();
    let err = reader
        .write(&appends(vec![event("/x", "e-1")]))
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
    assert!(db.open().events_after(0, 10).unwrap().is_empty());
}

/// Several daemons starting at once on a new database: one migrates, the
/// others wait for it and find the schema current (migrating twice would
/// fail on tables that already exist).
#[test]
fn daemons_opening_a_new_postgres_database_at_once_migrate_it_once() {
    let Some(db) = TestDb::postgres() else {
        return;
    };
    let stores: Vec<Store> = thread::scope(|scope| {
        let opening: Vec<_> = (0..4).map(|_| scope.spawn(|| db.open())).collect();
        opening.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(stores.len(), 4);
    let versions = db
        .sql()
        .query("SELECT version FROM schema_version", &[])
        .unwrap();
    assert_eq!(versions.len(), 1);
    drop(stores);
    db.reader();
}
