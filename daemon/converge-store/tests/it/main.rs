//! The store's tests: real SQLite files in temporary directories, through the
//! public API only.

mod append;
mod dead_letters;
mod durability;
mod gates;
mod helpers;
mod outcomes;
mod processing;
mod schema;
mod timers;
mod trail;
