//! What the event sources converge runs itself read back from the journal.
//!
//! A schedule's occurrences are journaled with ids `<schedule>@<time>`, so
//! the journal itself records which occurrences fired: deduplication on
//! (source, id) makes each one fire once, and the last one is found here.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

impl Store {
    /// The greatest id of a `source` event named `<name>@...`, if any.
    ///
    /// A range scan of the `(id, source)` index: every such id sorts in
    /// [`name@`, `nameA`), as `A` follows `@`. Cheap on a large journal.
    pub fn last_occurrence_id(
        &self,
        source: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id FROM events WHERE id >= ?1 || '@' AND id < ?1 || 'A' AND source = ?2
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![name, source], |row| row.get(0))
            .optional()?)
    }
}
