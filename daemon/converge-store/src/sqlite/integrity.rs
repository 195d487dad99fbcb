//! The checks that keep a damaged database from being used without a word.
//!
//! SQLite's WAL recovery stops at the first frame whose checksum fails and
//! ignores every frame after it: a damaged frame in the middle of the log
//! silently drops the commits behind it. And a damaged page of a table can
//! hide its newest rows, so new rows take ids already used (an action's id
//! is in its idempotency key). So the writer checks, before it opens the
//! database, that the WAL holds no damaged frame with commits after it, and
//! after opening, `PRAGMA quick_check` and that the tables agree with each
//! other ([`coherence`]). `converge verify` runs the same checks, with the
//! full `PRAGMA integrity_check`.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::schema::{INSTANCE, PROCESSED_CURSOR};
use crate::{Check, StoreError};

const WAL_HEADER_LEN: usize = 32;
const FRAME_HEADER_LEN: usize = 24;
/// The WAL magic number; its lowest bit says the checksums are big-endian.
const WAL_MAGIC: u32 = 0x377f_0682;
/// How many lines of `quick_check`'s or `integrity_check`'s findings a
/// report quotes.
const FINDINGS_QUOTED: usize = 5;

/// What a damaged database's owner can do, after a damaged WAL.
pub(crate) fn wal_way_out(wal: &Path) -> String {
    format!(
        "restore the database from a backup made by `converge backup`, or, to accept \
         the loss, move {} aside",
        wal.display()
    )
}

/// What a damaged database's owner can do, after a failed check of the database.
const RESTORE: &str = "restore the database from a backup made by `converge backup` \
     (docs/reliability.md, \"A damaged database\")";

/// The WAL of the database at `db`: `<db>-wal`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// What a read of the WAL found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WalFinding {
    /// No WAL, or one whose frames are all sound.
    Sound { frames: usize },
    /// The log ends in what a crash in the middle of a commit leaves: a
    /// partial frame, or frames of the last transaction that fail their
    /// checksum. SQLite ignores them; that transaction was never
    /// acknowledged.
    TornTail { frames: usize, ignored: usize },
    /// A frame in the middle of the log fails: SQLite would ignore it and
    /// every frame after it, commits that were acknowledged.
    Damaged(String),
}

/// Reads the WAL of the database at `db` (the format:
/// <https://www.sqlite.org/fileformat2.html#walformat>) without opening the
/// database.
pub(crate) fn check_wal(db: &Path) -> Result<WalFinding, StoreError> {
    let path = wal_path(db);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(WalFinding::Sound { frames: 0 }),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    let mut wal = BufReader::new(file);
    let mut header = [0u8; WAL_HEADER_LEN];
    if len < WAL_HEADER_LEN as u64 {
        // SQLite writes the header before any frame: a shorter file holds none.
        return Ok(WalFinding::Sound { frames: 0 });
    }
    wal.read_exact(&mut header).map_err(io)?;
    let magic = be32(&header[0..4]);
    let page_size = be32(&header[8..12]) as usize;
    let big_endian = magic & 1 == 1;
    let header_sum = checksum(big_endian, &header[..24], (0, 0));
    let page_size_valid = page_size.is_power_of_two() && (512..=65536).contains(&page_size);
    let frame_len = FRAME_HEADER_LEN + page_size;
    if magic & !1 != WAL_MAGIC
        || !page_size_valid
        || header_sum != (be32(&header[24..28]), be32(&header[28..32]))
    {
        if len == WAL_HEADER_LEN as u64 {
            return Ok(WalFinding::Sound { frames: 0 });
        }
        return Ok(WalFinding::Damaged(format!(
            "the header of {} fails its check, so SQLite would ignore the {} bytes of \
             frames after it",
            path.display(),
            len - WAL_HEADER_LEN as u64
        )));
    }
    let salts = &header[16..24];
    let frames = ((len - WAL_HEADER_LEN as u64) / frame_len as u64) as usize;
    let partial_tail = !(len - WAL_HEADER_LEN as u64).is_multiple_of(frame_len as u64);

    let mut frame = vec![0u8; frame_len];
    // Each frame's checksum continues from the one stored in the frame
    // before, so a frame after a damaged one can still be checked.
    let mut previous_sum = header_sum;
    let mut sound = 0;
    // The first frame SQLite would reject: its number (1-based), and
    // whether it ends a transaction.
    let mut first_bad: Option<(usize, bool)> = None;
    // After it: frames of this log, and its commits whose frame checks out.
    let (mut after, mut commits_after) = (0, 0);
    for number in 1..=frames {
        wal.read_exact(&mut frame).map_err(io)?;
        let stored_sum = (be32(&frame[16..20]), be32(&frame[20..24]));
        let this_log = &frame[8..16] == salts;
        let sum = checksum(
            big_endian,
            &frame[FRAME_HEADER_LEN..],
            checksum(big_endian, &frame[..8], previous_sum),
        );
        let checks_out = this_log && be32(&frame[0..4]) != 0 && sum == stored_sum;
        let commit = be32(&frame[4..8]) != 0;
        previous_sum = stored_sum;
        match first_bad {
            None if checks_out => sound += 1,
            // Frames of an earlier log (before a checkpoint restarted it)
            // end this one.
            None if !this_log && sound > 0 => break,
            None => first_bad = Some((number, this_log && commit)),
            Some(_) if this_log => {
                after += 1;
                if checks_out && commit {
                    commits_after += 1;
                }
            }
            Some(_) => {}
        }
    }
    let Some((bad, bad_commits)) = first_bad else {
        return Ok(if partial_tail {
            WalFinding::TornTail {
                frames: sound,
                ignored: 1,
            }
        } else {
            WalFinding::Sound { frames: sound }
        });
    };
    // A crash can leave the last transaction's frames on disk in any order,
    // so a bad frame with its own transaction's commit after it may be a
    // torn write. A commit of a later transaction means the bad frame had
    // been synced before (each commit is), and then changed.
    if commits_after >= 2 || (bad_commits && commits_after >= 1) {
        return Ok(WalFinding::Damaged(format!(
            "frame {bad} of {frames} in {} fails its checksum, and SQLite would ignore \
             the {after} frames after it ({commits_after} commits)",
            path.display()
        )));
    }
    Ok(WalFinding::TornTail {
        frames: sound,
        ignored: frames - sound + usize::from(partial_tail),
    })
}

/// The WAL check at the writer's start: refuses a damaged WAL, warns about
/// a torn tail.
pub(crate) fn refuse_damaged_wal(db: &Path) -> Result<(), StoreError> {
    match check_wal(db)? {
        WalFinding::Sound { .. } => Ok(()),
        WalFinding::TornTail { frames, ignored } => {
            tracing::warn!(
                wal = %wal_path(db).display(),
                frames,
                ignored,
                "the WAL ends in a transaction a crash left half-written; SQLite ignores it"
            );
            Ok(())
        }
        WalFinding::Damaged(problem) => Err(StoreError::Damaged {
            path: db.to_path_buf(),
            problem,
            way_out: wal_way_out(&wal_path(db)),
        }),
    }
}

/// `PRAGMA quick_check` (`full`: `integrity_check`, which also compares
/// every index with its table): `None` when the database is sound, else
/// its first findings.
pub(crate) fn page_check(conn: &Connection, full: bool) -> Result<Option<String>, StoreError> {
    let pragma = if full {
        "PRAGMA integrity_check"
    } else {
        "PRAGMA quick_check"
    };
    let findings = match conn.prepare(pragma).and_then(|mut stmt| {
        stmt.query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()
    }) {
        Ok(findings) => findings,
        // A page damaged badly enough fails the check itself.
        Err(e @ rusqlite::Error::SqliteFailure(..)) => vec![e.to_string()],
        Err(e) => return Err(e.into()),
    };
    if findings == ["ok"] {
        return Ok(None);
    }
    let mut quoted = findings
        .iter()
        .take(FINDINGS_QUOTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if findings.len() > FINDINGS_QUOTED {
        quoted.push_str(&format!(" (and {} more)", findings.len() - FINDINGS_QUOTED));
    }
    Ok(Some(quoted))
}

/// The checks that the tables agree with each other, each `(name, problem)`.
///
/// A new row takes the id after the largest one found (`INTEGER PRIMARY
/// KEY`), so a table that lost its newest rows would hand their ids out
/// again: every id another table refers to must be at most the largest.
pub(crate) fn coherence(conn: &Connection) -> Result<Vec<Check>, StoreError> {
    let max = |sql: &str| -> Result<i64, StoreError> {
        Ok(conn
            .query_row(sql, [], |row| row.get::<_, Option<i64>>(0))?
            .unwrap_or(0))
    };
    let mut checks = Vec::new();

    let head = max("SELECT max(seq) FROM events")?;
    let cursor: i64 = conn.query_row(
        "SELECT value FROM meta WHERE key = ?1",
        [PROCESSED_CURSOR],
        |row| row.get(0),
    )?;
    checks.push(Check {
        name: "processed cursor",
        problem: (cursor > head).then(|| {
            format!(
                "the processed cursor ({cursor}) is past the journal head ({head}): \
                 events {} to {cursor} were acknowledged and processed, and are gone",
                head + 1
            )
        }),
    });

    let orphans: i64 = conn.query_row(
        "SELECT count(*) FROM actions a
         WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.id = a.decision_id)
            OR NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = a.event_seq)",
        [],
        |row| row.get(0),
    )?;
    checks.push(Check {
        name: "actions' decisions and events",
        problem: (orphans > 0)
            .then(|| format!("{orphans} actions have lost their decision or event")),
    });

    let unnamed: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM decisions WHERE rule_version NOT IN (SELECT id FROM rule_versions))
              + (SELECT count(*) FROM timers WHERE rule_version NOT IN (SELECT id FROM rule_versions))",
        [],
        |row| row.get(0),
    )?;
    checks.push(Check {
        name: "decisions' and timers' rule versions",
        problem: (unnamed > 0)
            .then(|| format!("{unnamed} decisions or timers have lost their rule version")),
    });

    // Through the partial indexes: only the actions that may still run.
    let without_payload: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM actions a INDEXED BY actions_pending
                 WHERE a.status = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM action_payloads p WHERE p.action_id = a.id))
              + (SELECT count(*) FROM actions a INDEXED BY actions_dead_letter
                 WHERE a.status = 'dead_letter'
                   AND NOT EXISTS (SELECT 1 FROM action_payloads p WHERE p.action_id = a.id))",
        [],
        |row| row.get(0),
    )?;
    checks.push(Check {
        name: "actions' payloads",
        problem: (without_payload > 0).then(|| {
            format!("{without_payload} pending or dead-lettered actions have lost their payload")
        }),
    });

    let mut past = Vec::new();
    let last_action = max("SELECT max(id) FROM actions")?;
    let last_decision = max("SELECT max(id) FROM decisions")?;
    for (table, what, last, referred) in [
        (
            "actions",
            "action_history",
            last_action,
            "SELECT max(action_id) FROM action_history",
        ),
        (
            "decisions",
            "actions",
            last_decision,
            "SELECT max(decision_id) FROM actions",
        ),
        (
            "events",
            "decisions",
            head,
            "SELECT max(event_seq) FROM decisions",
        ),
        (
            "events",
            "rule_failures",
            head,
            "SELECT max(event_seq) FROM rule_failures",
        ),
        (
            "events",
            "held_sends",
            head,
            "SELECT max(event_seq) FROM held_sends",
        ),
    ] {
        let referred = max(referred)?;
        if referred > last {
            past.push(format!(
                "{what} refers to {table} id {referred}, past the last one ({last}): \
                 new {table} would take ids {} to {referred} again",
                last + 1
            ));
        }
    }
    checks.push(Check {
        name: "id sequences",
        problem: (!past.is_empty()).then(|| past.join("; ")),
    });

    let instance: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [INSTANCE], |row| {
            row.get(0)
        })
        .optional()?;
    checks.push(Check {
        name: "instance id",
        problem: instance
            .is_none()
            .then(|| "the database has no instance id: idempotency keys would repeat".into()),
    });
    Ok(checks)
}

/// `PRAGMA quick_check` at the writer's start, before it migrates anything.
pub(crate) fn refuse_damaged_pages(db: &Path, conn: &Connection) -> Result<(), StoreError> {
    if let Some(problem) = page_check(conn, false)? {
        return Err(damaged(db, format!("PRAGMA quick_check: {problem}")));
    }
    Ok(())
}

/// At the writer's start, once the schema is current: the tables agree
/// with each other.
pub(crate) fn refuse_incoherent(db: &Path, conn: &Connection) -> Result<(), StoreError> {
    match coherence(conn)?.into_iter().find_map(|check| check.problem) {
        Some(problem) => Err(damaged(db, problem)),
        None => Ok(()),
    }
}

fn damaged(db: &Path, problem: String) -> StoreError {
    StoreError::Damaged {
        path: db.to_path_buf(),
        problem,
        way_out: RESTORE.to_string(),
    }
}

/// The WAL check of `converge verify`: a torn tail is no damage.
pub(crate) fn wal_check(db: &Path) -> Result<Check, StoreError> {
    Ok(Check {
        name: "write-ahead log",
        problem: match check_wal(db)? {
            WalFinding::Damaged(problem) => Some(problem),
            WalFinding::Sound { .. } | WalFinding::TornTail { .. } => None,
        },
    })
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// SQLite's WAL checksum: over 32-bit words in the byte order the magic
/// number names, continuing from `sum`.
fn checksum(big_endian: bool, data: &[u8], mut sum: (u32, u32)) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let word = |bytes: &[u8]| {
            let bytes = [bytes[0], bytes[1], bytes[2], bytes[3]];
            if big_endian {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            }
        };
        sum.0 = sum.0.wrapping_add(word(&pair[..4])).wrapping_add(sum.1);
        sum.1 = sum.1.wrapping_add(word(&pair[4..])).wrapping_add(sum.0);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL of `commits` one-frame transactions of 512-byte pages, with
    /// valid checksums, in little-endian checksum order.
    fn wal_file(commits: u32) -> Vec<u8> {
        let page_size = 512u32;
        let mut wal = Vec::new();
        wal.extend_from_slice(&WAL_MAGIC.to_be_bytes());
        wal.extend_from_slice(&3_007_000u32.to_be_bytes());
        wal.extend_from_slice(&page_size.to_be_bytes());
        wal.extend_from_slice(&0u32.to_be_bytes());
        wal.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut sum = checksum(false, &wal, (0, 0));
        wal.extend_from_slice(&sum.0.to_be_bytes());
        wal.extend_from_slice(&sum.1.to_be_bytes());
        for n in 1..=commits {
            let mut frame = Vec::new();
            frame.extend_from_slice(&n.to_be_bytes());
            frame.extend_from_slice(&n.to_be_bytes());
            frame.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
            let page = vec![n as u8; page_size as usize];
            sum = checksum(false, &page, checksum(false, &frame[..8], sum));
            frame.extend_from_slice(&sum.0.to_be_bytes());
            frame.extend_from_slice(&sum.1.to_be_bytes());
            frame.extend_from_slice(&page);
            wal.extend_from_slice(&frame);
        }
        wal
    }

    fn finding(wal: &[u8]) -> WalFinding {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        std::fs::write(wal_path(&db), wal).unwrap();
        check_wal(&db).unwrap()
    }

    const FRAME: usize = FRAME_HEADER_LEN + 512;

    #[test]
    fn a_sound_wal_is_sound() {
        assert_eq!(finding(&wal_file(5)), WalFinding::Sound { frames: 5 });
        assert_eq!(finding(&[]), WalFinding::Sound { frames: 0 });
    }

    #[test]
    fn a_partial_last_frame_is_a_torn_tail() {
        let wal = wal_file(5);
        assert_eq!(
            finding(&wal[..wal.len() - 100]),
            WalFinding::TornTail {
                frames: 4,
                ignored: 1
            }
        );
    }

    #[test]
    fn a_bad_last_frame_is_a_torn_tail() {
        let mut wal = wal_file(5);
        let last = wal.len() - 10;
        wal[last] ^= 0xff;
        assert_eq!(
            finding(&wal),
            WalFinding::TornTail {
                frames: 4,
                ignored: 1
            }
        );
    }

    #[test]
    fn a_bad_frame_with_commits_after_it_is_damage() {
        let mut wal = wal_file(5);
        wal[WAL_HEADER_LEN + FRAME + 100] ^= 0xff;
        let WalFinding::Damaged(problem) = finding(&wal) else {
            panic!("not damage");
        };
        assert!(
            problem.contains("frame 2 of 5")
                && problem.contains("the 3 frames after it (3 commits)"),
            "{problem}"
        );
    }

    #[test]
    fn frames_of_an_earlier_log_after_the_last_one_are_not_damage() {
        let mut wal = wal_file(5);
        // Frames 4 and 5 carry other salts: left from before a checkpoint
        // restarted the log.
        for frame in [3, 4] {
            wal[WAL_HEADER_LEN + frame * FRAME + 8] ^= 0xff;
        }
        assert_eq!(finding(&wal), WalFinding::Sound { frames: 3 });
    }

    #[test]
    fn a_damaged_header_with_frames_after_it_is_damage() {
        let mut wal = wal_file(2);
        wal[12] ^= 0xff;
        assert!(matches!(finding(&wal), WalFinding::Damaged(_)));
    }
}
