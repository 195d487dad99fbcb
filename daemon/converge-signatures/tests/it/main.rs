//! Behaviour of the signatures crate through its public API, one binary for all.

mod config;
mod known_answers;
mod no_panic;
mod self_signed;

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use converge_signatures::{GenericHmac, Inbound, Scheme, Secret, Settings, Verifier};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sha1::Sha1;
use sha2::Sha256;

/// A webhook fixture from `tests/fixtures/webhooks`.
pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/webhooks")
        .join(relative)
}

pub fn fixture(relative: &str) -> Value {
    let path = fixture_path(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A string member of a fixture object.
pub fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("fixture has no string `{key}`: {value}"))
}

pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::try_from(*name).expect("header name"),
            HeaderValue::try_from(*value).expect("header value"),
        );
    }
    map
}

/// The headers of a fixture's `headers` object.
pub fn fixture_headers(value: &Value) -> HeaderMap {
    let object = value["headers"].as_object().expect("headers object");
    let pairs: Vec<(&str, &str)> = object
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str().expect("header text")))
        .collect();
    headers(&pairs)
}

pub fn post<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Inbound<'a> {
    Inbound {
        method: "POST",
        headers,
        query: "",
        body,
    }
}

pub fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
    verifier_with(scheme, secrets, Settings::default())
}

pub fn verifier_with(scheme: Scheme, secrets: &[&str], settings: Settings) -> Verifier {
    let settings = Settings {
        secrets: secrets.iter().map(|secret| Secret::from(*secret)).collect(),
        ..settings
    };
    Verifier::new(scheme, settings).expect("valid settings")
}

pub fn with_url(url: &str) -> Settings {
    Settings {
        url: Some(url.to_string()),
        ..Settings::default()
    }
}

pub fn with_generic(generic: GenericHmac) -> Settings {
    Settings {
        generic: Some(generic),
        ..Settings::default()
    }
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
