//! Loading: only components of the right world load, errors name the file,
//! and precompiled artifacts are cached and recompiled when unusable.

use std::path::Path;

use converge_plugin_host::{
    Credential, LoadError, PluginHost, PluginHostConfig, PluginLimits, PluginSpec,
};

use sha2::{Digest, Sha256};

use crate::support::{host, spec, wasm};

fn spec_for(path: &Path) -> PluginSpec {
    PluginSpec {
        name: "broken".into(),
        component: path.to_path_buf(),
        grants: Default::default(),
        limits: PluginLimits::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_component_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let host = host();
    for (file, bytes) in [
        ("core-module.wasm", &b"\0asm\x01\0\0\0"[..]),
        ("text.wasm", &b"hello, I am not wasm"[..]),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let error = host.load(spec_for(&path)).await.err().expect("load fails");
        assert!(matches!(error, LoadError::Compile { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("plugin broken"), "{message}");
        assert!(message.contains(file), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_file_is_refused_by_name() {
    let error = host()
        .load(spec_for(Path::new("/nonexistent/plugin.wasm")))
        .await
        .err()
        .expect("load fails");
    assert!(matches!(error, LoadError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/plugin.wasm"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_without_the_action_export_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The empty component: preamble only, no imports, no exports.
    let path = dir.path().join("empty-component.wasm");
    std::fs::write(&path, b"\0asm\x0d\0\x01\0").unwrap();
    let error = host()
        .load(spec_for(&path))
        .await
        .err()
        .expect("load fails");
    assert!(matches!(error, LoadError::Incompatible { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("empty-component.wasm"), "{message}");
    assert!(message.contains("converge:plugin/action"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn precompiled_artifacts_are_reused_and_rebuilt_when_unusable() {
    let plugin_spec = || spec("misbehaving", Default::default(), PluginLimits::default());
    // Make sure the shared cache holds the artifact, then seed a private
    // cache with it: this test pays for one compile, not two.
    crate::support::load(&host(), plugin_spec()).await;
    let digest = hex::encode(Sha256::digest(std::fs::read(wasm("misbehaving")).unwrap()));
    let shared: Vec<_> = std::fs::read_dir(crate::support::cache_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&digest)
        })
        .collect();
    assert_eq!(shared.len(), 1, "{shared:?}");
    let cache = tempfile::tempdir().unwrap();
    let artifact = cache.path().join(shared[0].file_name().unwrap());
    std::fs::copy(&shared[0], &artifact).unwrap();
    let modified = std::fs::metadata(&artifact).unwrap().modified().unwrap();

    let host = PluginHost::new(PluginHostConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..PluginHostConfig::default()
    })
    .unwrap();
    host.load(plugin_spec()).await.unwrap();
    assert_eq!(
        std::fs::metadata(&artifact).unwrap().modified().unwrap(),
        modified,
        "loaded from the cache, not rewritten"
    );

    std::fs::write(&artifact, b"corrupted").unwrap();
    let plugin = host.load(plugin_spec()).await.unwrap();
    assert_eq!(plugin.info().name, "misbehaving");
    assert!(
        std::fs::metadata(&artifact).unwrap().len() > 1000,
        "rewritten"
    );
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
}

#[test]
fn credential_debug_redacts_the_value() {
    let credential = Credential {
        header: "authorization".into(),
        value: "Bearer xoxb-secret".into(),
    };
    let debug = format!("{credential:?}");
    assert!(debug.contains("authorization"), "{debug}");
    assert!(!debug.contains("xoxb"), "{debug}");
    let grants = converge_plugin_host::Grants {
        credentials: [("bot".to_string(), credential)].into(),
        ..Default::default()
    };
    assert!(!format!("{grants:?}").contains("xoxb"));
}
