//! Measures what one `Plugin::execute` costs: a fresh store and instance, one
//! guest call that reads its config and returns, and the teardown.
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p misbehaving
//! cargo run --release -p converge-plugin-host --example call_cost [path/to/misbehaving.wasm] [calls]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use converge_plugin_host::{ActionInput, PluginHost, PluginHostConfig, PluginLimits, PluginSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let wasm = args.next().map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/wasm32-wasip2/release/misbehaving.wasm")
    });
    let calls: u32 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let cache = tempfile::tempdir()?;

    let host = PluginHost::new(PluginHostConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..PluginHostConfig::default()
    })?;
    let spec = PluginSpec {
        name: "misbehaving".into(),
        component: wasm,
        grants: Default::default(),
        limits: PluginLimits::default(),
    };
    let started = Instant::now();
    host.load(spec.clone()).await?;
    println!("load, compiling:        {:>9.1} ms", ms(started));
    let started = Instant::now();
    let plugin = host.load(spec).await?;
    println!("load, from cache:       {:>9.1} ms", ms(started));

    let config = r#"{"mode": "ok"}"#;
    let action = ActionInput {
        id: "act-1".into(),
        kind: "notify".into(),
        rule: "bench".into(),
        decision_json: r#"{"kind":"notify"}"#.into(),
        event_json: "{}".into(),
        entity_json: "null".into(),
    };
    for _ in 0..200 {
        plugin.execute(action.clone(), config).await?;
    }

    let started = Instant::now();
    for _ in 0..calls {
        plugin.execute(action.clone(), config).await?;
    }
    let sequential = started.elapsed().as_secs_f64() * 1e6 / f64::from(calls);
    println!("execute, sequential:    {sequential:>9.1} µs/call ({calls} calls)");

    let tasks = 4;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (plugin, action) = (plugin.clone(), action.clone());
            tokio::spawn(async move {
                for _ in 0..calls / tasks {
                    plugin.execute(action.clone(), config).await?;
                }
                Ok::<_, converge_plugin_host::CallFailure>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    let total = f64::from(calls / tasks * tasks);
    let concurrent = started.elapsed().as_secs_f64() * 1e6 / total;
    println!("execute, {tasks} tasks:       {concurrent:>9.1} µs/call (wall, amortised)");
    Ok(())
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}
