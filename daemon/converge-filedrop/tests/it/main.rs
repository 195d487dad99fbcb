//! The crate's integration tests: real folders in temp dirs, an in-memory
//! sink that stands in for the journal.

mod docs;
mod props;
mod support;
mod take;
mod watch;
