//! Integration tests: each starts the real `converge` binary on a temporary
//! config and talks to it over HTTP and the file system.

mod backpressure;
mod browser;
mod channels;
mod cli;
mod cluster;
mod connectors;
mod console;
mod crash;
mod dlq;
mod engine;
mod explain;
mod faults;
mod filedrops;
mod gates;
mod hooks;
mod hostile;
mod intake;
mod integrity;
mod logs;
mod pipeline;
mod polyglot;
mod postgres;
mod reload;
mod replay;
mod reports;
mod restart;
mod retention;
mod rules_cli;
mod sandbox;
mod schedules;
mod secrets;
mod slow_clients;
mod support;
mod telemetry;
mod timers;
