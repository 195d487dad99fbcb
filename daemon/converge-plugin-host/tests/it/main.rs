//! Integration tests: real guest plugins (built for `wasm32-wasip2` by the
//! first test that needs them) run in the host against a local HTTP sink.

mod asana;
mod decoders;
mod github;
mod http;
mod jira;
mod limits;
mod load;
mod pool;
mod support;
mod trello;
