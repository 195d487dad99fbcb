//! Any config file: parsing and validation must never panic, and a config
//! that validates must name no secret it was not given.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // Every variable is "set", to the same harmless value, so the paths
    // that read secrets are taken too.
    let env = |_: &str| Some("fuzz-secret-value".to_string());
    match converge::config::Config::parse(Path::new("fuzz/converge.toml"), text, &env) {
        Ok(config) => {
            // Debug output is what logs would show: no secret in it.
            assert!(!format!("{config:?}").contains("fuzz-secret-value"));
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
