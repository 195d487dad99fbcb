//! The instance pool: sized from what components need, and a full pool
//! makes a call wait for a slot instead of failing it.

use std::time::{Duration, Instant};

use converge_plugin_host::{
    Grants, InstanceNeeds, LoadError, PluginHost, PluginHostConfig, PluginLimits,
};

use crate::support::{action, cache_dir, load, spec, wasm};

fn host_with(max_instances: u32, instance_needs: InstanceNeeds) -> PluginHost {
    PluginHost::new(PluginHostConfig {
        cache_dir: Some(cache_dir()),
        max_instances,
        instance_needs,
        ..PluginHostConfig::default()
    })
    .expect("plugin host")
}

/// A server that answers every request after `delay`, so each call holds
/// its instance that long.
async fn slow_server(delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        "ok"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

#[test]
fn the_bundled_plugins_fit_the_default_slot() {
    for package in converge_testkit::PLUGINS {
        let needs = InstanceNeeds::of_file(&converge_testkit::plugin_file(package)).unwrap();
        assert!(
            needs.core_instances >= 1 && needs.memories >= 1,
            "{package}: {needs}"
        );
        assert!(
            needs.fits_in(&InstanceNeeds::default()),
            "{package}: {needs}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_component_has_no_needs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"not wasm").unwrap();
    assert!(InstanceNeeds::of_file(&path).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_larger_than_a_slot_is_refused_naming_the_setting() {
    let needs = InstanceNeeds::of_file(&wasm("webhook_out")).unwrap();
    let slot = InstanceNeeds {
        core_instances: needs.core_instances - 1,
        ..needs
    };
    let host = host_with(4, slot);
    let error = host
        .load(spec(
            "webhook_out",
            Grants::default(),
            PluginLimits::default(),
        ))
        .await
        .err()
        .expect("a component larger than the slot is refused");
    assert!(matches!(error, LoadError::TooLarge { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("webhook-out"), "{message}");
    assert!(message.contains("instance_needs"), "{message}");
}

/// Regression: a pool too small for the calls in flight failed them with
/// wasmtime's "maximum concurrent limit ... reached", spending an attempt.
#[tokio::test(flavor = "multi_thread")]
async fn calls_beyond_the_pool_wait_for_a_slot_and_succeed() {
    let server = slow_server(Duration::from_millis(150)).await;
    let needs = InstanceNeeds::of_file(&wasm("misbehaving")).unwrap();
    let host = host_with(2, needs);
    let grants = Grants {
        http_hosts: vec![server.clone()],
        allow_plain_http: true,
        ..Grants::default()
    };
    let plugin = load(&host, spec("misbehaving", grants, PluginLimits::default())).await;
    let config =
        serde_json::json!({"mode": "slow_http", "url": format!("http://{server}/")}).to_string();

    let started = Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let (plugin, config) = (plugin.clone(), config.clone());
            tokio::spawn(async move { plugin.execute(action(&format!("a-{i}")), &config).await })
        })
        .collect();
    for call in calls {
        let done = call.await.unwrap().expect("every call succeeds");
        assert!(done.summary.ends_with("-> 200"), "{}", done.summary);
    }
    // Eight calls of 150 ms at once through two slots: four rounds.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(4 * 150), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_of_another_plugin_gives_up_its_slot() {
    let server = slow_server(Duration::from_secs(1)).await;
    let needs = InstanceNeeds::of_file(&wasm("misbehaving"))
        .unwrap()
        .max(InstanceNeeds::of_file(&wasm("webhook_out")).unwrap());
    let host = host_with(2, needs);
    // Its describe() at load leaves an idle instance in one of the two slots.
    let _idle = load(
        &host,
        spec("misbehaving", Grants::default(), PluginLimits::default()),
    )
    .await;
    let grants = Grants {
        http_hosts: vec![server.clone()],
        allow_plain_http: true,
        ..Grants::default()
    };
    let webhook_out = load(&host, spec("webhook_out", grants, PluginLimits::default())).await;
    let config = serde_json::json!({"url": format!("http://{server}/hook")}).to_string();

    // Two calls of a second each at once: the second runs in the idle
    // instance's slot rather than waiting for the first call's.
    let started = Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|i| {
            let (plugin, config) = (webhook_out.clone(), config.clone());
            tokio::spawn(async move { plugin.execute(action(&format!("b-{i}")), &config).await })
        })
        .collect();
    for call in calls {
        let done = call.await.unwrap().expect("every call succeeds");
        assert!(done.summary.ends_with("-> 200"), "{}", done.summary);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1900), "{took:?}");
}

/// `calls` calls of webhook_out at once against a server that holds each
/// for 500 ms, on a host with room for all of them; the plugin afterwards.
async fn concurrent_calls(calls: usize, warm_memory_bytes: usize) -> converge_plugin_host::Plugin {
    let server = slow_server(Duration::from_millis(500)).await;
    let host = PluginHost::new(PluginHostConfig {
        cache_dir: Some(cache_dir()),
        max_instances: 64,
        warm_memory_bytes,
        ..PluginHostConfig::default()
    })
    .expect("plugin host");
    let grants = Grants {
        http_hosts: vec![server.clone()],
        allow_plain_http: true,
        ..Grants::default()
    };
    let plugin = load(&host, spec("webhook_out", grants, PluginLimits::default())).await;
    let config = serde_json::json!({"url": format!("http://{server}/hook")}).to_string();
    let running: Vec<_> = (0..calls)
        .map(|i| {
            let (plugin, config) = (plugin.clone(), config.clone());
            tokio::spawn(async move { plugin.execute(action(&format!("w-{i}")), &config).await })
        })
        .collect();
    for call in running {
        call.await.unwrap().expect("every call succeeds");
    }
    plugin
}

/// Regression: at most 32 instances of a plugin stayed warm, so a load of
/// more concurrent calls than that built and tore down an instance (and
/// its memory, with a TLB shootdown) for every call past the 32nd.
#[tokio::test(flavor = "multi_thread")]
async fn every_instance_a_load_ran_at_once_stays_warm_within_the_memory_budget() {
    let plugin = concurrent_calls(40, PluginHostConfig::default().warm_memory_bytes).await;
    let (warm, memory) = plugin.warm_instances();
    assert_eq!(warm, 40, "{memory} bytes");
    assert!(memory > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_memory_budget_keeps_fewer_instances_warm() {
    // Room for about three of webhook_out's instances (a Rust plugin's
    // memory is a little over 1 MiB).
    let per_instance = {
        let plugin = concurrent_calls(1, PluginHostConfig::default().warm_memory_bytes).await;
        plugin.warm_instances().1
    };
    assert!(per_instance > 0);
    let budget = 3 * per_instance + per_instance / 2;
    let plugin = concurrent_calls(10, budget).await;
    let (warm, memory) = plugin.warm_instances();
    assert_eq!(warm, 3, "{memory} bytes of {budget}");
    assert!(memory <= budget, "{memory} > {budget}");
}
