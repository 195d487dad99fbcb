//! A misbehaving plugin fails its own call with the right error, and the
//! next call on the same `Plugin` starts fresh and succeeds.

use std::time::{Duration, Instant};

use converge_plugin_host::{CallFailure, Grants, Plugin, PluginLimits};
use serde_json::json;

use crate::support::{action, grants_for, host, load, sink, spec};

async fn misbehaving(grants: Grants, limits: PluginLimits) -> Plugin {
    load(&host(), spec("misbehaving", grants, limits)).await
}

async fn run(plugin: &Plugin, config: serde_json::Value) -> Result<String, CallFailure> {
    plugin
        .execute(action("act"), &config.to_string())
        .await
        .map(|done| done.summary)
}

async fn still_works(plugin: &Plugin) {
    assert_eq!(run(plugin, json!({"mode": "ok"})).await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_is_a_trap_with_its_message() {
    let plugin = misbehaving(Grants::default(), PluginLimits::default()).await;
    let failure = run(&plugin, json!({"mode": "trap"})).await.unwrap_err();
    let CallFailure::Trap(message) = &failure else {
        panic!("expected a trap, got {failure:?}");
    };
    assert!(message.contains("deliberate trap"), "{message}");
    assert!(!failure.retryable());
    still_works(&plugin).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_hits_the_cpu_limit() {
    let limits = PluginLimits {
        cpu_time: Duration::from_millis(200),
        ..PluginLimits::default()
    };
    let plugin = misbehaving(Grants::default(), limits).await;
    let started = Instant::now();
    let failure = run(&plugin, json!({"mode": "loop"})).await.unwrap_err();
    assert_eq!(failure, CallFailure::CpuLimit);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    still_works(&plugin).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_allocation_hits_the_memory_limit() {
    let limits = PluginLimits {
        memory_bytes: 16 << 20,
        ..PluginLimits::default()
    };
    let plugin = misbehaving(Grants::default(), limits).await;
    let failure = run(&plugin, json!({"mode": "alloc"})).await.unwrap_err();
    assert_eq!(failure, CallFailure::MemoryLimit);
    still_works(&plugin).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_hits_the_wall_time_limit() {
    let sink = sink().await;
    let limits = PluginLimits {
        wall_time: Duration::from_millis(500),
        ..PluginLimits::default()
    };
    let plugin = misbehaving(grants_for(&sink), limits).await;
    let started = Instant::now();
    let failure = run(
        &plugin,
        json!({"mode": "slow_http", "url": sink.url("/never")}),
    )
    .await
    .unwrap_err();
    assert_eq!(failure, CallFailure::Timeout(Duration::from_millis(500)));
    assert!(failure.retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sink.received().len(), 1);
    still_works(&plugin).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_timeout_is_reported_to_the_plugin() {
    let sink = sink().await;
    let limits = PluginLimits {
        http_timeout: Duration::from_millis(300),
        ..PluginLimits::default()
    };
    let plugin = misbehaving(grants_for(&sink), limits).await;
    let failure = run(
        &plugin,
        json!({"mode": "slow_http", "url": sink.url("/never")}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&failure, CallFailure::Transient(m) if m.contains("timed out")),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_do_not_share_state() {
    let plugin = misbehaving(Grants::default(), PluginLimits::default()).await;
    let calls = (0..8).map(|i| {
        let plugin = plugin.clone();
        let mode = if i % 2 == 0 { "ok" } else { "trap" };
        tokio::spawn(async move { run(&plugin, json!({ "mode": mode })).await })
    });
    for (i, call) in calls.enumerate() {
        let result = call.await.unwrap();
        assert_eq!(result.is_ok(), i % 2 == 0, "{i}: {result:?}");
    }
}
