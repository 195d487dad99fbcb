//! The store's tests, through the public API only. Most are the storage
//! conformance suite: each runs on SQLite (a file in a temporary
//! directory) and on PostgreSQL (a database of its own, when
//! `CONVERGE_TEST_POSTGRES` names a server); see `helpers::conformance!`.
//! The rest are about one backend: SQLite's files and durability,
//! PostgreSQL's cluster operations.

// First: the modules below use its `conformance!` macro.
#[macro_use]
mod helpers;

mod activity;
mod append;
mod batching;
mod cluster;
mod dead_letters;
mod durability;
mod gates;
mod integrity;
mod outcomes;
mod processing;
mod retention;
mod samples;
mod schema;
mod timers;
mod trail;
