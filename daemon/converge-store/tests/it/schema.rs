use converge_store::{Durability, Store, StoreError};

use crate::helpers::{TestDb, appends, event};

#[test]
fn a_reader_needs_an_existing_database() {
    let db = TestDb::new();
    let err = Store::open_reader(&db.path()).err().unwrap();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(!db.path().exists(), "a reader creates nothing");
}

#[test]
fn a_reader_refuses_a_database_that_is_not_migrated() {
    let db = TestDb::new();
    std::fs::create_dir_all(db.path().parent().unwrap()).unwrap();
    rusqlite::Connection::open(db.path()).unwrap();
    let err = Store::open_reader(&db.path()).err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaVersion { found: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_database_from_a_newer_converge_is_refused() {
    let db = TestDb::new();
    drop(db.open());
    rusqlite::Connection::open(db.path())
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let err = Store::open(&db.path(), Durability::Full).err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaVersion { found: 999, .. }),
        "{err}"
    );
}

#[test]
fn reopening_does_not_migrate_again() {
    let db = TestDb::new();
    let mut store = db.open();
    store.write(&appends(vec![event("/x", "e-1")])).unwrap();
    drop(store);
    let store = db.open();
    assert_eq!(store.events_after(0, 10).unwrap().len(), 1);
}

#[test]
fn a_reader_cannot_write() {
    let db = TestDb::new();
    drop(db.open());
    let mut reader = db.reader();
    let err = reader
        .write(&appends(vec![event("/x", "e-1")]))
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
    assert!(db.open().events_after(0, 10).unwrap().is_empty());
}
