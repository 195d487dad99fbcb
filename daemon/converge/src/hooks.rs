//! Webhook endpoints (`[hooks.<name>]` in the config): who may post to
//! `/hooks/<name>` and how their requests are verified before anything is
//! journaled.
//!
//! A listed hook verifies every request with its signature scheme
//! (`converge-signatures`); a request that fails gets 401 and is journaled
//! nowhere. Hooks not listed accept unsigned CloudEvents unless
//! `server.unlisted_hooks = "reject"`. Secrets come from environment
//! variables; a hook whose variable is unset refuses every request (it
//! fails closed) and says which variable to set.
//!
//! Asana hands its secret over in a handshake (`X-Hook-Secret`): converge
//! keeps it in the `source_state` table under `hook-secret/<name>` and
//! accepts a handshake only while the hook has no secret, so nobody can
//! replace it later. Slack checks a new Events API URL with a signed
//! `url_verification` request, answered with its challenge, journaled
//! nowhere. [`Hooks::check`] tells these from events.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use converge_signatures::{
    ConfigError, Encoding, GenericHmac, Inbound, Scheme, Secret, Setting, Settings, Verified,
    Verifier, VerifyError, asana_handshake,
};

/// One `[hooks.<name>]` entry, validated.
#[derive(Debug, Clone)]
pub struct HookConfig {
    pub name: String,
    pub scheme: Scheme,
    /// `None` when the scheme needs a secret its variables do not hold
    /// (the hook then refuses every request), and for Asana until its
    /// handshake.
    pub verifier: Option<Verifier>,
    /// The settings without secrets, to build Asana's verifier once its
    /// handshake secret is known.
    pub settings: Settings,
    /// The variables the secrets come from, to say what to set.
    pub secret_env: Vec<String>,
    /// The connector plugin that turns the tool's payloads into events;
    /// `None`: the body is CloudEvents (or plain JSON, with `json`).
    pub decode: Option<Decode>,
    /// How plain JSON becomes events; `None`: the body is CloudEvents (or
    /// a tool's payload, with `decode`).
    pub json: Option<crate::plain_json::JsonMapping>,
    /// Fields of its events' data hidden where converge shows them
    /// (`secret_fields`).
    pub secret_fields: Vec<crate::redact::FieldPath>,
}

/// A hook's decoder: a connector plugin and the `config` it reads.
#[derive(Debug, Clone)]
pub struct Decode {
    pub plugin: String,
    pub config_json: String,
}

/// The raw fields of a hook, as the config file has them.
pub struct RawHook<'a> {
    pub verify: &'a str,
    pub secret_env: &'a [String],
    pub url: Option<&'a str>,
    pub tolerance: Option<Duration>,
    pub allow_legacy_sha1: bool,
    pub header: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub encoding: Option<&'a str>,
}

/// What is wrong with a hook's settings: the key it is about (`verify`,
/// `url`, ...), `None` for the hook's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError {
    pub field: Option<&'static str>,
    pub message: String,
}

impl HookError {
    fn at(field: &'static str, message: impl Into<String>) -> HookError {
        HookError {
            field: Some(field),
            message: message.into(),
        }
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl HookConfig {
    /// Validates one hook: every error found; a secret variable that is
    /// not set is a warning.
    pub fn new(
        name: &str,
        raw: &RawHook<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(HookConfig, Vec<String>), Vec<HookError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        if !valid_hook_name(name) {
            errors.push(HookError {
                field: None,
                message: format!("`{name}`: a hook name is 1 to 64 letters, digits, '-' or '_'"),
            });
        }
        let scheme = raw
            .verify
            .parse::<Scheme>()
            .map_err(|e| errors.push(HookError::at("verify", e.to_string())));
        let generic = match (raw.header, raw.encoding) {
            (None, None) if raw.prefix.is_none() => None,
            (Some(header), encoding) => {
                let header = header.parse::<axum::http::HeaderName>().map_err(|_| {
                    errors.push(HookError::at(
                        "header",
                        format!("`{header}` is not a header name"),
                    ))
                });
                let encoding = encoding
                    .unwrap_or("hex")
                    .parse::<Encoding>()
                    .map_err(|e| errors.push(HookError::at("encoding", e.to_string())));
                match (header, encoding) {
                    (Ok(header), Ok(encoding)) => Some(GenericHmac {
                        header,
                        prefix: raw.prefix.unwrap_or_default().to_string(),
                        encoding,
                    }),
                    _ => None,
                }
            }
            (None, _) => {
                errors.push(HookError::at(
                    "header",
                    "the header that carries the signature is required with `prefix` or `encoding`",
                ));
                None
            }
        };
        let mut secrets = Vec::new();
        for var in raw.secret_env {
            match env(var).filter(|v| !v.is_empty()) {
                Some(value) => {
                    if scheme == Ok(Scheme::UrlSecret) {
                        warnings.extend(short_url_secret(name, var, &value));
                    }
                    secrets.push(Secret::from(value));
                }
                None => warnings.push(format!(
                    "hooks.{name}.secret_env: {var} is not set; the hook refuses every request until it is"
                )),
            }
        }
        let Ok(scheme) = scheme else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let settings = Settings {
            secrets: Vec::new(),
            tolerance: raw.tolerance,
            url: raw.url.map(str::to_string),
            allow_legacy_sha1: raw.allow_legacy_sha1,
            generic,
        };
        let needs_secret = !matches!(scheme, Scheme::None | Scheme::Asana);
        if needs_secret && raw.secret_env.is_empty() {
            return Err(vec![HookError::at(
                "secret_env",
                format!("`{scheme}` needs the environment variable(s) holding the secret"),
            )]);
        }
        if scheme == Scheme::None && !raw.secret_env.is_empty() {
            return Err(vec![HookError::at(
                "secret_env",
                "`none` verifies nothing; set `verify` to the sender's scheme",
            )]);
        }
        // Checked with a stand-in secret so that a wrong setting is reported
        // at start even when the variable is not set yet.
        let check_secrets = if secrets.is_empty() && needs_secret {
            vec![stand_in_secret(scheme)]
        } else {
            secrets.clone()
        };
        if let Err(e) = Verifier::new(
            scheme,
            Settings {
                secrets: check_secrets,
                ..settings.clone()
            },
        ) {
            return Err(vec![describe_config_error(&e)]);
        }
        let verifier = if secrets.is_empty() && scheme != Scheme::None {
            None
        } else {
            Verifier::new(
                scheme,
                Settings {
                    secrets,
                    ..settings.clone()
                },
            )
            .ok()
        };
        Ok((
            HookConfig {
                name: name.into(),
                scheme,
                verifier,
                settings,
                secret_env: raw.secret_env.to_vec(),
                decode: None,
                json: None,
                secret_fields: Vec::new(),
            },
            warnings,
        ))
    }
}

/// The fewest characters of a `url-secret` secret that draw no warning.
/// Nothing but its length stands between a guesser and the hook, and every
/// guess costs one request.
const URL_SECRET_MIN_CHARS: usize = 20;

/// A warning for a `url-secret` secret short enough to guess.
fn short_url_secret(hook: &str, var: &str, value: &str) -> Option<String> {
    let chars = value.chars().count();
    (chars < URL_SECRET_MIN_CHARS).then(|| {
        format!(
            "hooks.{hook}.secret_env: {var} holds {chars} characters; a secret in a URL is all \
             that checks the sender, so use at least {URL_SECRET_MIN_CHARS} random ones \
             (`openssl rand -hex 16`)"
        )
    })
}

/// A well-formed secret of the scheme's kind, only to check the other settings.
fn stand_in_secret(scheme: Scheme) -> Secret {
    match scheme {
        Scheme::StandardWebhooks => Secret::from("whsec_c3RhbmQtaW4="),
        // A valid P-256 public key (base64 DER): the one of SendGrid's published test vector.
        Scheme::Sendgrid => Secret::from(
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==",
        ),
        _ => Secret::from("stand-in"),
    }
}

fn describe_config_error(e: &ConfigError) -> HookError {
    let field = match e {
        ConfigError::Missing { setting, .. } | ConfigError::NotApplicable { setting, .. } => {
            match setting {
                Setting::Url => "url",
                Setting::Tolerance => "tolerance",
                Setting::LegacySha1 => "allow_legacy_sha1",
                Setting::Generic => "header",
                Setting::Secrets => "secret_env",
            }
        }
        ConfigError::InvalidSecret { .. } | ConfigError::EmptySecret { .. } => "secret_env",
    };
    HookError::at(field, e.to_string())
}

pub fn valid_hook_name(name: &str) -> bool {
    name.len() <= 64 && converge_model::sources::valid_name(name)
}

/// The key of a hook's handshake secret in `source_state`.
pub fn secret_key(hook: &str) -> String {
    format!("hook-secret/{hook}")
}

/// What a request to a listed hook is, once [`Hooks::check`] let it in.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked<'r> {
    /// Signed by the sender: its events go to the journal.
    Events,
    /// Asana's handshake on a hook without a secret: the secret, to keep
    /// durably ([`secret_key`]) and [`Hooks::learn`], then echo in
    /// `X-Hook-Secret`.
    AsanaHandshake(&'r str),
    /// Slack's `url_verification`: answered with its challenge, nothing
    /// journaled.
    SlackChallenge(String),
}

/// The `challenge` of a Slack Events API `url_verification` request.
fn slack_challenge(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct UrlVerification {
        #[serde(rename = "type")]
        ty: String,
        challenge: String,
    }
    serde_json::from_slice::<UrlVerification>(body)
        .ok()
        .filter(|v| v.ty == "url_verification")
        .map(|v| v.challenge)
}

/// Why a request to a hook is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the request does not verify: {0}")]
    Signature(#[from] VerifyError),
    #[error("hook `{hook}` has no secret: set {vars}")]
    NoSecret { hook: String, vars: String },
    #[error(
        "hook `{0}` has no secret yet: Asana sends it in the handshake when the webhook is created"
    )]
    AwaitingHandshake(String),
    #[error("hook `{0}` already has a secret; a new handshake is refused")]
    SecondHandshake(String),
}

/// The hooks of the config, with what they learned since start (Asana
/// handshake secrets).
#[derive(Clone, Default)]
pub struct Hooks {
    pub listed: Arc<BTreeMap<String, HookConfig>>,
    /// `server.unlisted_hooks = "accept"`: other names take unsigned CloudEvents.
    pub accept_unlisted: bool,
    /// Verifiers built from handshake secrets, by hook name.
    learned: Arc<Mutex<BTreeMap<String, Verifier>>>,
}

impl Hooks {
    pub fn new(listed: BTreeMap<String, HookConfig>, accept_unlisted: bool) -> Hooks {
        Hooks {
            listed: Arc::new(listed),
            accept_unlisted,
            learned: Arc::default(),
        }
    }

    /// Whether `/hooks/<name>` takes requests at all.
    pub fn exists(&self, name: &str) -> bool {
        self.listed.contains_key(name) || (self.accept_unlisted && valid_hook_name(name))
    }

    /// Checks a request to a listed hook: Asana's handshake (which comes
    /// unsigned, carrying the secret), else the signature, then Slack's
    /// `url_verification` (signed like any event). `stored_secret` reads
    /// the hook's handshake secret from the store, for Asana hooks that
    /// have not learned it since start.
    pub fn check<'r>(
        &self,
        hook: &HookConfig,
        request: &Inbound<'r>,
        now_unix_secs: i64,
        stored_secret: impl FnOnce() -> Option<String>,
    ) -> Result<Checked<'r>, Refused> {
        if hook.scheme == Scheme::Asana
            && let Some(secret) = asana_handshake(request)
        {
            return if self.awaits_handshake(hook, stored_secret()) {
                Ok(Checked::AsanaHandshake(secret))
            } else {
                Err(Refused::SecondHandshake(hook.name.clone()))
            };
        }
        self.verify(hook, request, now_unix_secs, stored_secret)?;
        if hook.scheme == Scheme::Slack
            && let Some(challenge) = slack_challenge(request.body)
        {
            return Ok(Checked::SlackChallenge(challenge));
        }
        Ok(Checked::Events)
    }

    fn verify(
        &self,
        hook: &HookConfig,
        request: &Inbound<'_>,
        now_unix_secs: i64,
        stored_secret: impl FnOnce() -> Option<String>,
    ) -> Result<Verified, Refused> {
        if let Some(verifier) = &hook.verifier {
            return Ok(verifier.verify(request, now_unix_secs)?);
        }
        if hook.scheme != Scheme::Asana {
            return Err(Refused::NoSecret {
                hook: hook.name.clone(),
                vars: hook.secret_env.join(" or "),
            });
        }
        let learned = self
            .learned
            .lock()
            .expect("hooks lock")
            .get(&hook.name)
            .cloned();
        let verifier = match learned {
            Some(verifier) => verifier,
            None => {
                let secret =
                    stored_secret().ok_or_else(|| Refused::AwaitingHandshake(hook.name.clone()))?;
                self.learn(hook, secret)
                    .ok_or_else(|| Refused::AwaitingHandshake(hook.name.clone()))?
            }
        };
        Ok(verifier.verify(request, now_unix_secs)?)
    }

    /// Whether an Asana hook may take a handshake now: it has no secret
    /// from the environment, none learned, none stored.
    fn awaits_handshake(&self, hook: &HookConfig, stored_secret: Option<String>) -> bool {
        hook.scheme == Scheme::Asana
            && hook.verifier.is_none()
            && stored_secret.is_none()
            && !self
                .learned
                .lock()
                .expect("hooks lock")
                .contains_key(&hook.name)
    }

    /// Keeps a handshake secret (already stored durably) for later requests.
    pub fn learn(&self, hook: &HookConfig, secret: String) -> Option<Verifier> {
        let verifier = Verifier::new(
            hook.scheme,
            Settings {
                secrets: vec![Secret::from(secret)],
                ..hook.settings.clone()
            },
        )
        .ok()?;
        self.learned
            .lock()
            .expect("hooks lock")
            .insert(hook.name.clone(), verifier.clone());
        Some(verifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(verify: &'a str, secret_env: &'a [String]) -> RawHook<'a> {
        RawHook {
            verify,
            secret_env,
            url: None,
            tolerance: None,
            allow_legacy_sha1: false,
            header: None,
            prefix: None,
            encoding: None,
        }
    }

    #[test]
    fn a_setting_the_scheme_refuses_is_reported_under_its_config_key() {
        let vars = vec!["SECRET".to_string()];
        let env = |_: &str| Some("s3cret".to_string());
        let refused = |hook: RawHook<'_>| -> Vec<String> {
            let errors = HookConfig::new("h", &hook, &env).unwrap_err();
            errors.iter().map(ToString::to_string).collect()
        };
        assert_eq!(
            refused(RawHook {
                tolerance: Some(std::time::Duration::from_secs(60)),
                ..raw("github", &vars)
            }),
            ["tolerance: scheme `github` does not use a timestamp tolerance"]
        );
        assert_eq!(
            refused(raw("trello", &vars)),
            ["url: scheme `trello` needs the URL registered with the sender"]
        );
        assert_eq!(
            refused(RawHook {
                url: Some("https://example.com/hook"),
                ..raw("github", &vars)
            }),
            ["url: scheme `github` does not use a registered URL"]
        );
        assert_eq!(
            refused(RawHook {
                allow_legacy_sha1: true,
                ..raw("jira", &vars)
            }),
            ["allow_legacy_sha1: scheme `jira` does not use legacy SHA-1 signatures"]
        );
    }

    #[test]
    fn a_hook_whose_secret_is_unset_warns_and_fails_closed() {
        let vars = vec!["GITHUB_SECRET".to_string()];
        let (hook, warnings) = HookConfig::new("github", &raw("github", &vars), &|_| None).unwrap();
        assert!(hook.verifier.is_none());
        assert_eq!(
            warnings,
            [
                "hooks.github.secret_env: GITHUB_SECRET is not set; the hook refuses every request until it is"
            ]
        );
        let headers = axum::http::HeaderMap::new();
        let request = Inbound {
            method: "POST",
            headers: &headers,
            query: "",
            body: b"{}",
        };
        let refused = Hooks::default()
            .check(&hook, &request, 0, || None)
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "hook `github` has no secret: set GITHUB_SECRET"
        );
    }

    #[test]
    fn a_url_secret_short_enough_to_guess_is_warned_about_and_still_checked() {
        let vars = vec!["MC_OLD".to_string(), "MC_NEW".to_string()];
        let env = |var: &str| match var {
            "MC_OLD" => Some("hunter2".to_string()),
            _ => Some("3f9c0a7e1b2d4c6e8f0a1b3c5d7e9f21".to_string()),
        };
        let (hook, warnings) =
            HookConfig::new("mailchimp", &raw("url-secret", &vars), &env).unwrap();
        assert_eq!(
            warnings,
            [
                "hooks.mailchimp.secret_env: MC_OLD holds 7 characters; a secret in a URL is all \
                 that checks the sender, so use at least 20 random ones (`openssl rand -hex 16`)"
            ]
        );
        let headers = axum::http::HeaderMap::new();
        let with = |query| Inbound {
            method: "GET",
            headers: &headers,
            query,
            body: b"",
        };
        let hooks = Hooks::default();
        for accepted in ["key=hunter2", "key=3f9c0a7e1b2d4c6e8f0a1b3c5d7e9f21"] {
            assert_eq!(
                hooks.check(&hook, &with(accepted), 0, || None).unwrap(),
                Checked::Events
            );
        }
        let refused = hooks.check(&hook, &with("key=hunter3"), 0, || None);
        assert_eq!(
            refused.unwrap_err().to_string(),
            "the request does not verify: query parameter `key` does not match the secret"
        );
    }

    #[test]
    fn every_scheme_without_its_secret_fails_closed_rather_than_refusing_the_config() {
        let vars = vec!["UNSET".to_string()];
        for scheme in Scheme::ALL {
            if matches!(scheme, Scheme::None | Scheme::Asana) {
                continue;
            }
            let url = "https://converge.example.com/hooks/h";
            let raw = RawHook {
                url: matches!(
                    scheme,
                    Scheme::Trello | Scheme::HubspotV2 | Scheme::HubspotV3
                )
                .then_some(url),
                header: (scheme == Scheme::HmacSha256).then_some("x-signature"),
                ..raw(scheme.name(), &vars)
            };
            let (hook, warnings) =
                HookConfig::new("h", &raw, &|_| None).unwrap_or_else(|e| panic!("{scheme}: {e:?}"));
            assert!(hook.verifier.is_none(), "{scheme}");
            assert_eq!(warnings.len(), 1, "{scheme}");
        }
    }

    #[test]
    fn bad_settings_name_their_field() {
        let vars = vec!["S".to_string()];
        let env = |_: &str| Some("secret".to_string());
        let field = |raw: RawHook<'_>| HookConfig::new("h", &raw, &env).unwrap_err()[0].field;
        assert_eq!(field(raw("gitlab", &vars)), Some("verify"));
        assert_eq!(field(raw("github", &[])), Some("secret_env"));
        assert_eq!(field(raw("trello", &vars)), Some("url"));
        assert_eq!(
            field(RawHook {
                encoding: Some("base32"),
                header: Some("x-sig"),
                ..raw("hmac-sha256", &vars)
            }),
            Some("encoding")
        );
        assert_eq!(
            field(RawHook {
                prefix: Some("sha256="),
                ..raw("hmac-sha256", &vars)
            }),
            Some("header")
        );
        let named = HookConfig::new("bad name", &raw("github", &vars), &env).unwrap_err();
        assert_eq!(named[0].field, None);
        assert_eq!(
            named[0].to_string(),
            "`bad name`: a hook name is 1 to 64 letters, digits, '-' or '_'"
        );
    }

    fn post<'a>(headers: &'a axum::http::HeaderMap, body: &'a [u8]) -> Inbound<'a> {
        Inbound {
            method: "POST",
            headers,
            query: "",
            body,
        }
    }

    #[test]
    fn an_asana_handshake_is_taken_only_by_a_hook_without_a_secret() {
        let (hook, _) = HookConfig::new("asana", &raw("asana", &[]), &|_| None).unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-hook-secret", "first".parse().unwrap());
        let hooks = Hooks::default();
        let request = post(&headers, b"");
        assert_eq!(
            hooks.check(&hook, &request, 0, || None).unwrap(),
            Checked::AsanaHandshake("first")
        );
        // Kept by the store since: nobody can replace it.
        let refused = hooks
            .check(&hook, &request, 0, || Some("first".into()))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "hook `asana` already has a secret; a new handshake is refused"
        );
        // Learned since start: the same.
        hooks.learn(&hook, "first".into()).unwrap();
        assert!(matches!(
            hooks.check(&hook, &request, 0, || None),
            Err(Refused::SecondHandshake(_))
        ));
    }

    #[test]
    fn a_slack_url_verification_is_answered_only_when_signed() {
        use hmac::Mac;
        let vars = vec!["SLACK_SECRET".to_string()];
        let env = |_: &str| Some("slack-secret".to_string());
        let (hook, _) = HookConfig::new("slack", &raw("slack", &vars), &env).unwrap();
        let body = br#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","token":"t"}"#;
        let now = 1_764_547_200;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"slack-secret").unwrap();
        mac.update(format!("v0:{now}:").as_bytes());
        mac.update(body);
        let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-slack-request-timestamp",
            now.to_string().parse().unwrap(),
        );
        headers.insert("x-slack-signature", signature.parse().unwrap());
        let hooks = Hooks::default();
        assert_eq!(
            hooks
                .check(&hook, &post(&headers, body), now, || None)
                .unwrap(),
            Checked::SlackChallenge("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".into())
        );
        // Any other signed body is events.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"slack-secret").unwrap();
        mac.update(format!("v0:{now}:{{}}").as_bytes());
        let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        headers.insert("x-slack-signature", signature.parse().unwrap());
        assert_eq!(
            hooks
                .check(&hook, &post(&headers, b"{}"), now, || None)
                .unwrap(),
            Checked::Events
        );
        // Unsigned, the challenge is not answered.
        headers.remove("x-slack-signature");
        assert!(matches!(
            hooks.check(&hook, &post(&headers, body), now, || None),
            Err(Refused::Signature(_))
        ));
    }
}
