//! What converge's test suites share, so each is written once: where the
//! workspace and its target directory are, the guest plugins built for
//! `wasm32-wasip2` (the daemon's integration tests and the plugin host's
//! both run them), a free loopback port and a local HTTP server that
//! records what is sent to it ([`sink`]). A dev-dependency only.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod sink;

/// Every plugin package of the workspace that is a component: the bundled
/// connectors and channels, and the tests' misbehaving plugin.
pub const PLUGINS: &[&str] = &[
    "webhook-out",
    "slack",
    "github",
    "jira",
    "trello",
    "asana",
    "hubspot",
    "sendgrid",
    "mailchimp",
    "sendgrid-campaigns",
    "meta-ads",
    "linkedin-ads",
    "misbehaving",
];

/// The workspace's root: the nearest directory above the package under
/// test (cargo's `CARGO_MANIFEST_DIR` when it runs the test; else where
/// this crate was built) whose `Cargo.toml` has a `[workspace]`. Read at run
/// time, so that a build of this crate reused from a copy of the
/// repository elsewhere still finds the checkout being tested.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.lines().any(|line| line.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| panic!("no workspace Cargo.toml above {}", start.display()));
    root.canonicalize().expect("the workspace root exists")
}

/// Where cargo builds: `CARGO_TARGET_DIR` (relative to the workspace when
/// it is relative), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Builds these plugin packages for `wasm32-wasip2` with the `wasm`
/// profile and returns the directory of their `.wasm` files; cargo
/// rebuilds only what changed. [`plugins_dir`] builds them all once.
///
/// Panics when the build fails, saying what to install when the target
/// is missing.
pub fn build_plugins(packages: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).args([
        "build",
        "--profile",
        "wasm",
        "--target",
        "wasm32-wasip2",
    ]);
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .expect("running cargo to build the test plugins");
    assert!(
        status.success(),
        "building the test plugins failed (is the target installed? rustup target add wasm32-wasip2)"
    );
    target_dir().join("wasm32-wasip2/wasm")
}

/// [`PLUGINS`], built once per test process: the directory of their
/// `.wasm` files.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_plugins(PLUGINS))
}

/// The component of the plugin package `package` (one of [`PLUGINS`]),
/// built.
pub fn plugin_file(package: &str) -> PathBuf {
    plugins_dir().join(format!("{}.wasm", package.replace('-', "_")))
}

/// A loopback address nothing listens on yet. The port is free when
/// asked; another process could take it before it is used, which loopback
/// tests accept.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{manifest}");
    }

    #[test]
    fn a_free_port_can_be_listened_on() {
        let addr = free_port();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        TcpListener::bind(addr).unwrap();
    }
}
