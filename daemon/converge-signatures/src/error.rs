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
    /// `url-secret`: the query parameter that carries the secret is absent.
    #[error("missing query parameter `{0}`")]
    MissingParameter(&'static str),
    /// `url-secret`: the parameter holds none of the secrets.
    #[error("query parameter `{0}` does not match the secret")]
    WrongParameter(&'static str),
    /// `url-secret`: the parameter is given more than once.
    #[error("query parameter `{0}` is given more than once")]
    RepeatedParameter(&'static str),
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
    #[error("scheme `{scheme}` needs {}", setting.needed())]
    Missing { scheme: Scheme, setting: Setting },
    /// A setting the scheme would silently ignore, which is almost always a
    /// mistake in the config (a tolerance on a scheme without timestamps).
    #[error("scheme `{scheme}` does not use {}", setting.ignored())]
    NotApplicable { scheme: Scheme, setting: Setting },
    #[error("secrets[{index}] is empty")]
    EmptySecret { index: usize },
    #[error("secrets[{index}] is {problem}")]
    InvalidSecret { index: usize, problem: &'static str },
}

/// The member of [`crate::Settings`] a [`ConfigError`] is about, so a
/// caller can point at its own name for it without reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `secrets`.
    Secrets,
    /// `tolerance`.
    Tolerance,
    /// `url`, the address the sender signs.
    Url,
    /// `allow_legacy_sha1`.
    LegacySha1,
    /// `generic`: the header and encoding of [`crate::Scheme::HmacSha256`].
    Generic,
}

impl Setting {
    /// What a scheme that needs it lacks.
    fn needed(self) -> &'static str {
        match self {
            Setting::Secrets => "at least one secret",
            Setting::Tolerance => "a timestamp tolerance",
            Setting::Url => "the URL registered with the sender",
            Setting::LegacySha1 => "legacy SHA-1 signatures allowed",
            Setting::Generic => "a header and an encoding",
        }
    }

    /// What a scheme that does not use it was given.
    fn ignored(self) -> &'static str {
        match self {
            Setting::Secrets => "a secret",
            Setting::Tolerance => "a timestamp tolerance",
            Setting::Url => "a registered URL",
            Setting::LegacySha1 => "legacy SHA-1 signatures",
            Setting::Generic => "a generic header and encoding",
        }
    }
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
