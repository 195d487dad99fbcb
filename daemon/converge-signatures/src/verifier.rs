use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey as _;

use crate::error::{ConfigError, Setting, UnknownEncoding, VerifyError};
use crate::headers::{self, BASE64};
use crate::scheme::Scheme;
use crate::schemes;
use crate::secret::Secret;

/// What a scheme needs besides its name, as the config gives it.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Any of them may have signed a delivery, so a secret is rotated by
    /// adding the new one, then removing the old. Standard Webhooks secrets
    /// are `whsec_` base64 (prefix optional); SendGrid's is the account's
    /// base64 DER public key; the others are used as written. Asana's comes
    /// from the handshake and may be absent until then.
    pub secrets: Vec<Secret>,
    /// Overrides the freshness window of a scheme that signs a timestamp.
    pub tolerance: Option<Duration>,
    /// The URL exactly as registered with the sender: Trello and HubSpot
    /// v2/v3 sign it. Taken from the config, not the request, because a
    /// proxy in front of the daemon changes what the request shows.
    pub url: Option<String>,
    /// GitHub only: accept `X-Hub-Signature: sha1=` when the SHA-256 header
    /// is absent (deliveries from old GitHub Enterprise Server versions).
    pub allow_legacy_sha1: bool,
    /// Required by `hmac-sha256`, refused by the others.
    pub generic: Option<GenericHmac>,
}

/// Where the generic `hmac-sha256` scheme finds the signature of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericHmac {
    pub header: HeaderName,
    /// Text before the signature in the header, such as `sha256=`; may be empty.
    pub prefix: String,
    pub encoding: Encoding,
}

/// How the generic scheme writes the MAC: hex (either case) or standard
/// base64 (padding optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Hex,
    Base64,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        })
    }
}

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            _ => Err(UnknownEncoding {
                name: s.to_string(),
            }),
        }
    }
}

/// The parts of a request that signatures cover, borrowed from the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// As sent, e.g. `POST`; HubSpot v2/v3 sign it.
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    /// The request target's query, without the `?`, still percent-encoded;
    /// empty when there is none. Only `url-secret` reads it.
    pub query: &'a str,
    /// The raw bytes as received, before any parsing.
    pub body: &'a [u8],
}

/// An accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// The sender's id for this delivery, unchanged across its retries, for
    /// dedupe: `X-GitHub-Delivery`, `X-Atlassian-Webhook-Identifier`,
    /// `webhook-id`, `Linear-Delivery`. `None` for schemes without one.
    pub delivery_id: Option<String>,
}

/// Checks requests for one hook. Cheap to build: for Asana, build a new one
/// with the stored handshake secret once the handshake has happened.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub(crate) scheme: Scheme,
    /// HMAC keys or hash prefixes, decoded where the scheme encodes them.
    pub(crate) keys: Vec<Secret>,
    /// SendGrid's public keys, parsed once here rather than per request.
    pub(crate) public_keys: Vec<VerifyingKey>,
    /// The freshness window in seconds; `None` for schemes without a signed
    /// timestamp, and for SendGrid unless configured.
    pub(crate) tolerance_secs: Option<u64>,
    /// Empty for schemes that do not sign the URL.
    pub(crate) url: String,
    pub(crate) allow_legacy_sha1: bool,
    pub(crate) generic: Option<GenericHmac>,
}

impl Verifier {
    /// Checks `settings` against what `scheme` needs and decodes the secrets.
    pub fn new(scheme: Scheme, settings: Settings) -> Result<Self, ConfigError> {
        let Settings {
            secrets,
            tolerance,
            url,
            allow_legacy_sha1,
            generic,
        } = settings;
        let missing = |setting| ConfigError::Missing { scheme, setting };
        let not_applicable = |setting| ConfigError::NotApplicable { scheme, setting };

        match scheme {
            Scheme::None if !secrets.is_empty() => return Err(not_applicable(Setting::Secrets)),
            Scheme::None | Scheme::Asana => {}
            _ if secrets.is_empty() => return Err(missing(Setting::Secrets)),
            _ => {}
        }
        if let Some(index) = secrets.iter().position(Secret::is_empty) {
            return Err(ConfigError::EmptySecret { index });
        }
        if tolerance.is_some() && !scheme.signs_timestamp() {
            return Err(not_applicable(Setting::Tolerance));
        }
        let url = match (url, scheme.signs_url()) {
            (Some(url), true) if !url.is_empty() => url,
            (_, true) => return Err(missing(Setting::Url)),
            (Some(_), false) => return Err(not_applicable(Setting::Url)),
            (None, false) => String::new(),
        };
        if allow_legacy_sha1 && scheme != Scheme::Github {
            return Err(not_applicable(Setting::LegacySha1));
        }
        match (&generic, scheme) {
            (None, Scheme::HmacSha256) => return Err(missing(Setting::Generic)),
            (Some(_), scheme) if scheme != Scheme::HmacSha256 => {
                return Err(not_applicable(Setting::Generic));
            }
            _ => {}
        }

        let (keys, public_keys) = match scheme {
            Scheme::StandardWebhooks => (standard_webhooks_keys(&secrets)?, Vec::new()),
            Scheme::Sendgrid => (Vec::new(), sendgrid_keys(&secrets)?),
            _ => (secrets, Vec::new()),
        };
        Ok(Verifier {
            scheme,
            keys,
            public_keys,
            tolerance_secs: tolerance
                .map(|tolerance| tolerance.as_secs())
                .or(scheme.default_tolerance_secs()),
            url,
            allow_legacy_sha1,
            generic,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Accepts the request if one of the secrets signed it and, where the
    /// scheme signs a timestamp, it lies within the tolerance of
    /// `now_unix_secs`. The signature is checked before the time, so that
    /// [`VerifyError::Stale`] only ever describes an authentic request.
    pub fn verify(
        &self,
        request: &Inbound<'_>,
        now_unix_secs: i64,
    ) -> Result<Verified, VerifyError> {
        schemes::verify(self, request, now_unix_secs)
    }
}

/// Standard Webhooks keys are base64 after an optional `whsec_` prefix.
fn standard_webhooks_keys(secrets: &[Secret]) -> Result<Vec<Secret>, ConfigError> {
    secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| {
            let encoded = secret.expose();
            let encoded = encoded.strip_prefix(b"whsec_").unwrap_or(encoded);
            let key = BASE64
                .decode(encoded)
                .map_err(|_| ConfigError::InvalidSecret {
                    index,
                    problem: "not base64 after the optional `whsec_` prefix",
                })?;
            if key.is_empty() {
                return Err(ConfigError::EmptySecret { index });
            }
            Ok(Secret::new(key))
        })
        .collect()
}

/// SendGrid's "verification key" is a base64 DER SubjectPublicKeyInfo.
fn sendgrid_keys(secrets: &[Secret]) -> Result<Vec<VerifyingKey>, ConfigError> {
    secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| {
            let invalid = ConfigError::InvalidSecret {
                index,
                problem: "not a base64 DER P-256 public key",
            };
            let der = BASE64
                .decode(secret.expose().trim_ascii())
                .map_err(|_| invalid.clone())?;
            VerifyingKey::from_public_key_der(&der).map_err(|_| invalid)
        })
        .collect()
}

/// The secret of an Asana handshake: a POST carrying `X-Hook-Secret`. The
/// daemon answers 200 echoing it in the same header and stores it as the
/// hook's secret.
///
/// Anyone can send such a request, so the daemon should accept a handshake
/// only while it expects one (no secret stored yet, or a webhook being
/// created), or a stranger could replace the secret.
pub fn asana_handshake<'a>(request: &Inbound<'a>) -> Option<&'a str> {
    const X_HOOK_SECRET: HeaderName = HeaderName::from_static("x-hook-secret");
    if request.method != "POST" {
        return None;
    }
    headers::optional(request.headers, &X_HOOK_SECRET)
        .ok()
        .flatten()
        .filter(|secret| !secret.is_empty())
}
