//! A damaged database is refused, not used without a word; idempotency
//! keys carry the database's instance; a backup is a new instance.

use std::path::{Path, PathBuf};

use converge_store::{
    Durability, Location, Store, StoreError, WriteBatch, idempotency_key, instance_hex,
};
use tempfile::TempDir;

use crate::helpers::{TestDb, event, processed_with_actions};

/// Journals and processes `events` events, one commit each (every event
/// makes two actions), and leaves the store open: the commits are in the WAL.
fn write_events(store: &mut Store, events: i64) {
    for n in 1..=events {
        store
            .write(&WriteBatch {
                appends: vec![event("/jira", &format!("T-{n}"))],
                processed: vec![processed_with_actions(n, &format!("T-{n}"), "ana")],
                ..WriteBatch::default()
            })
            .unwrap();
    }
}

/// Copies the database and its WAL as they are on disk while `db`'s writer
/// holds them open: what a crash would leave.
fn copy_with_wal(db: &TestDb) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("converge.db");
    std::fs::copy(db.path(), &copy).unwrap();
    std::fs::copy(wal(&db.path()), wal(&copy)).unwrap();
    (dir, copy)
}

fn wal(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

fn open(path: &Path) -> Result<Store, StoreError> {
    Store::open(&Location::Sqlite {
        path: path.to_path_buf(),
        durability: Durability::Full,
    })
}

fn flip(path: &Path, at: usize, len: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for byte in &mut bytes[at..at + len] {
        *byte = !*byte;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_wal_damaged_in_the_middle_is_refused_naming_the_frame_and_the_way_out() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    write_events(&mut store, 40);
    let (_dir, copy) = copy_with_wal(&db);
    let len = std::fs::metadata(wal(&copy)).unwrap().len() as usize;
    flip(&wal(&copy), len / 2, 64);

    // What SQLite alone makes of it (on a scratch copy): no error, and the
    // commits after the damage are gone.
    let scratch = tempfile::tempdir().unwrap();
    let plain = scratch.path().join("plain.db");
    std::fs::copy(&copy, &plain).unwrap();
    std::fs::copy(wal(&copy), wal(&plain)).unwrap();
    let seen: i64 = rusqlite::Connection::open(&plain)
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert!(seen < 40, "SQLite saw {seen} of 40 events");

    let refused = open(&copy).err().expect("a damaged WAL must be refused");
    assert!(matches!(refused, StoreError::Damaged { .. }), "{refused:?}");
    let message = refused.to_string();
    assert!(message.contains("fails its checksum"), "{message}");
    assert!(message.contains("frames after it"), "{message}");
    assert!(message.contains("converge backup"), "{message}");
    assert!(
        message.contains(&format!("move {} aside", wal(&copy).display())),
        "{message}"
    );
    // Refused before anything was opened: the WAL is as it was.
    assert_eq!(std::fs::metadata(wal(&copy)).unwrap().len() as usize, len);

    // `converge verify` names the same problem.
    let checks = converge_store::verify(&Location::Sqlite {
        path: copy.clone(),
        durability: Durability::Full,
    })
    .unwrap();
    let wal_check = checks
        .iter()
        .find(|check| check.name == "write-ahead log")
        .unwrap();
    assert!(
        wal_check
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("fails its checksum")),
        "{checks:?}"
    );

    // Moving the WAL aside accepts the loss: the database opens.
    std::fs::rename(wal(&copy), copy.with_extension("db-wal.damaged")).unwrap();
    assert!(open(&copy).is_ok());
}

#[test]
fn a_wal_cut_off_in_its_last_frame_opens_with_every_commit_before_it() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    write_events(&mut store, 10);
    let (_dir, copy) = copy_with_wal(&db);
    let len = std::fs::metadata(wal(&copy)).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(wal(&copy))
        .unwrap()
        .set_len(len - 100)
        .unwrap();

    let store = open(&copy).expect("a torn last frame is what a crash leaves");
    // The last commit lost its commit frame; every one before it is there.
    assert_eq!(store.journal_head().unwrap(), 9);
    assert_eq!(store.processed_cursor().unwrap(), 9);
}

#[test]
fn a_flipped_page_of_the_database_is_refused_by_quick_check() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    write_events(&mut store, 200);
    drop(store);
    let (page_size, root): (i64, i64) = {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        (
            conn.query_row("PRAGMA page_size", [], |row| row.get(0))
                .unwrap(),
            conn.query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'actions'",
                [],
                |row| row.get(0),
            )
            .unwrap(),
        )
    };
    let (page_size, root) = (page_size as usize, root as usize);
    // The head of the actions table's root page: its cells' pointers.
    flip(&db.path(), (root - 1) * page_size, 64);

    let refused = open(&db.path())
        .err()
        .expect("a damaged page must be refused");
    let message = refused.to_string();
    assert!(message.contains("PRAGMA quick_check"), "{message}");
    assert!(message.contains("converge backup"), "{message}");
}

/// The actions table lost its newest row (a damaged page can hide rows)
/// while their history is still there: new actions would take its id, and
/// its idempotency key, again.
#[test]
fn actions_that_lost_their_newest_rows_are_refused_before_ids_repeat() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    write_events(&mut store, 3);
    store
        .write(&WriteBatch {
            outcomes: vec![converge_store::ActionOutcome {
                action_id: 6,
                result: converge_store::OutcomeKind::Retry {
                    next_attempt_at_ms: 9_000,
                },
                attempts: 1,
                detail: "HTTP 503".into(),
                finished_at_ms: 3_000,
                lease_token: None,
            }],
            ..WriteBatch::default()
        })
        .unwrap();
    drop(store);
    rusqlite::Connection::open(db.path())
        .unwrap()
        .execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM actions WHERE id = 6;")
        .unwrap();

    let message = open(&db.path()).err().unwrap().to_string();
    assert!(
        message.contains("action_history refers to actions id 6, past the last one (5)"),
        "{message}"
    );
}

#[test]
fn a_processed_cursor_past_the_journal_head_is_refused() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    write_events(&mut store, 3);
    drop(store);
    rusqlite::Connection::open(db.path())
        .unwrap()
        .execute(
            "UPDATE meta SET value = 7 WHERE key = 'processed_cursor'",
            [],
        )
        .unwrap();

    let message = open(&db.path()).err().unwrap().to_string();
    assert!(
        message.contains("the processed cursor (7) is past the journal head (3)"),
        "{message}"
    );
}

#[test]
fn a_backup_of_a_live_database_has_everything_and_a_new_instance() {
    let db = TestDb::sqlite();
    let mut store = db.open();
    write_events(&mut store, 5);
    let original = store.instance().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db");

    // The writer is open and its commits are in the WAL only.
    let instance = converge_store::backup(&db.path(), &copy).unwrap();

    assert_ne!(instance, original);
    assert!(!wal(&copy).exists(), "the copy is one file");
    let restored = open(&copy).unwrap();
    assert_eq!(restored.instance().unwrap(), instance);
    assert_eq!(restored.journal_head().unwrap(), 5);
    // Pending actions keep the instance they were created under: their
    // keys do not change.
    assert_eq!(
        restored.pending_actions(100).unwrap(),
        store.pending_actions(100).unwrap()
    );
    assert!(
        store
            .pending_actions(100)
            .unwrap()
            .iter()
            .all(|a| a.instance == Some(original))
    );

    let again = converge_store::backup(&db.path(), &copy).err().unwrap();
    assert!(again.to_string().contains("does not overwrite"), "{again}");
}

fn each_database_has_its_own_instance_and_its_actions_carry_it(db: &TestDb) {
    let mut store = db.open();
    let other = TestDb::sqlite().open();
    let instance = store.instance().unwrap();
    assert_ne!(instance, other.instance().unwrap());
    assert_eq!(db.reader().instance().unwrap(), instance);

    write_events(&mut store, 1);
    let pending = store.pending_actions(10).unwrap();
    assert!(pending.iter().all(|a| a.instance == Some(instance)));
    let shown = store.action(pending[0].id).unwrap().unwrap().action;
    assert_eq!(
        shown.idempotency_key(),
        format!(
            "converge-{}-action-{}",
            instance_hex(instance),
            pending[0].id
        )
    );
}

fn a_new_instance_changes_the_keys_of_new_actions_only(db: &TestDb) {
    let mut store = db.open();
    write_events(&mut store, 1);
    let before = store.instance().unwrap();
    let renewed = store.new_instance().unwrap();
    assert_ne!(renewed, before);
    assert_eq!(store.instance().unwrap(), renewed);
    store
        .write(&WriteBatch {
            appends: vec![event("/jira", "T-2")],
            processed: vec![processed_with_actions(2, "T-2", "ana")],
            ..WriteBatch::default()
        })
        .unwrap();
    let instances: Vec<_> = store
        .pending_actions(10)
        .unwrap()
        .iter()
        .map(|a| a.instance)
        .collect();
    assert_eq!(
        instances,
        [Some(before), Some(before), Some(renewed), Some(renewed)]
    );
}

fn a_sound_database_passes_every_check(db: &TestDb) {
    let mut store = db.open();
    write_events(&mut store, 3);
    let checks = converge_store::verify(&db.location()).unwrap();
    assert!(checks.iter().all(|c| c.problem.is_none()), "{checks:?}");
    assert!(checks.iter().any(|c| c.name == "id sequences"));
    assert!(checks.iter().any(|c| c.name == "instance id"));
}

conformance!(
    each_database_has_its_own_instance_and_its_actions_carry_it,
    a_new_instance_changes_the_keys_of_new_actions_only,
    a_sound_database_passes_every_check,
);

/// A restore that loaded the rows but left a sequence behind would hand
/// out their ids again.
#[test]
fn a_postgres_sequence_behind_its_table_is_found() {
    let Some(db) = TestDb::postgres() else { return };
    let mut store = db.open();
    write_events(&mut store, 2);
    db.sql()
        .batch_execute("SELECT setval('actions_id_seq', 1)")
        .unwrap();
    let checks = converge_store::verify(&db.location()).unwrap();
    let problem = checks
        .iter()
        .find(|c| c.name == "id sequences")
        .and_then(|c| c.problem.clone())
        .unwrap();
    assert!(
        problem.contains("actions hold id 4, but its sequence is at 1"),
        "{problem}"
    );
}

#[test]
fn keys_of_actions_from_before_instances_are_unchanged() {
    assert_eq!(idempotency_key(4, None, None), "converge-action-4");
    assert_eq!(
        idempotency_key(4, None, Some("converge-send-3-ab12")),
        "converge-send-3-ab12"
    );
    assert_eq!(
        idempotency_key(4, Some(0x1f), None),
        "converge-000000000000001f-action-4"
    );
    assert_eq!(
        idempotency_key(4, Some(-1), Some("converge-send-3-ab12")),
        "converge-ffffffffffffffff-send-3-ab12"
    );
}
