use http::HeaderName;

use crate::scheme::{self, Scheme};

/// Why a request was not accepted. No variant carries a secret, a computed
/// signature or a received one: messages are safe to log and to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header `{0}`")]
    MissingHeader(HeaderName),
    #[error("header `{header}` {problem}")]
    Malformed {
        header: HeaderName,
        problem: &'static str,
    },
    #[error("body {0}")]
    MalformedBody(&'static str),
    /// The signature is well formed but made with none of the secrets, or over
    /// other bytes.
    #[error("signature does not match")]
    Mismatch,
    /// Authentic, but signed outside the freshness window: a replay, or a
    /// clock off on one side. `skew_secs` is now minus the signed time.
    #[error(
        "signed timestamp is {}, beyond the {tolerance_secs} s tolerance",
        describe_skew(*.skew_secs)
    )]
    Stale { skew_secs: i64, tolerance_secs: u64 },
    /// The scheme's secret comes from a handshake (Asana) that has not happened.
    #[error("no secret yet: the sender's handshake has not been received")]
    NoSecret,
}

fn describe_skew(skew_secs: i64) -> String {
    if skew_secs >= 0 {
        format!("{skew_secs} s old")
    } else {
        format!("{} s in the future", skew_secs.unsigned_abs())
    }
}

/// A [`crate::Settings`] that cannot make a [`crate::Verifier`] for its scheme.
/// `index` is the position in `Settings::secrets`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("scheme `{scheme}` needs {setting}")]
    Missing {
        scheme: Scheme,
        setting: &'static str,
    },
    /// A setting the scheme would silently ignore, which is almost always a
    /// mistake in the config (a tolerance on a scheme without timestamps).
    #[error("scheme `{scheme}` does not use {setting}")]
    NotApplicable {
        scheme: Scheme,
        setting: &'static str,
    },
    #[error("secrets[{index}] is empty")]
    EmptySecret { index: usize },
    #[error("secrets[{index}] is {problem}")]
    InvalidSecret { index: usize, problem: &'static str },
}

/// A scheme name that is not one of [`Scheme::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown signature scheme `{name}`, expected one of: {}",
    scheme::names()
)]
pub struct UnknownScheme {
    pub name: String,
}

/// An encoding name other than `hex` or `base64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signature encoding `{name}`, expected one of: hex, base64")]
pub struct UnknownEncoding {
    pub name: String,
}
