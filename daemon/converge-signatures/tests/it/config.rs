//! Scheme names, settings validation, and what never shows a secret.

use std::time::Duration;

use converge_signatures::{
    ConfigError, Encoding, GenericHmac, Scheme, Secret, Setting, Settings, Verifier, VerifyError,
};
use http::HeaderName;

use crate::{headers, hmac_sha256, post};

#[test]
fn scheme_names_round_trip() {
    let names: Vec<String> = Scheme::ALL.iter().map(Scheme::to_string).collect();
    assert_eq!(
        names,
        [
            "standard-webhooks",
            "github",
            "jira",
            "slack",
            "stripe",
            "asana",
            "trello",
            "linear",
            "hubspot-v1",
            "hubspot-v2",
            "hubspot-v3",
            "sendgrid",
            "hmac-sha256",
            "url-secret",
            "none",
        ]
    );
    for scheme in Scheme::ALL {
        assert_eq!(scheme.name().parse::<Scheme>(), Ok(scheme));
    }
}

#[test]
fn unknown_scheme_lists_the_valid_names() {
    let error = "GitHub".parse::<Scheme>().expect_err("names are exact");
    assert_eq!(
        error.to_string(),
        "unknown signature scheme `GitHub`, expected one of: standard-webhooks, github, jira, \
         slack, stripe, asana, trello, linear, hubspot-v1, hubspot-v2, hubspot-v3, sendgrid, \
         hmac-sha256, url-secret, none"
    );
    assert!("hubspot".parse::<Scheme>().is_err());
    assert!("".parse::<Scheme>().is_err());
}

#[test]
fn encoding_names_round_trip() {
    for encoding in [Encoding::Hex, Encoding::Base64] {
        assert_eq!(encoding.to_string().parse::<Encoding>(), Ok(encoding));
    }
    let error = "base32".parse::<Encoding>().expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "unknown signature encoding `base32`, expected one of: hex, base64"
    );
}

fn build(scheme: Scheme, settings: Settings) -> Result<(), ConfigError> {
    Verifier::new(scheme, settings).map(|_| ())
}

fn secrets(values: &[&str]) -> Settings {
    Settings {
        secrets: values.iter().map(|value| Secret::from(*value)).collect(),
        ..Settings::default()
    }
}

fn generic() -> GenericHmac {
    GenericHmac {
        header: HeaderName::from_static("x-signature"),
        prefix: String::new(),
        encoding: Encoding::Hex,
    }
}

#[test]
fn every_keyed_scheme_needs_a_secret() {
    for scheme in Scheme::ALL {
        let settings = Settings {
            url: scheme_needs_url(scheme).then(|| "https://example.com/hook".to_string()),
            generic: (scheme == Scheme::HmacSha256).then(generic),
            ..Settings::default()
        };
        let result = build(scheme, settings);
        match scheme {
            Scheme::None | Scheme::Asana => assert_eq!(result, Ok(()), "{scheme}"),
            _ => assert_eq!(
                result,
                Err(ConfigError::Missing {
                    scheme,
                    setting: Setting::Secrets
                }),
                "{scheme}"
            ),
        }
    }
}

fn scheme_needs_url(scheme: Scheme) -> bool {
    matches!(
        scheme,
        Scheme::Trello | Scheme::HubspotV2 | Scheme::HubspotV3
    )
}

#[test]
fn settings_a_scheme_would_ignore_are_refused() {
    let not_applicable = |scheme, setting| Err(ConfigError::NotApplicable { scheme, setting });
    assert_eq!(
        build(Scheme::None, secrets(&["x"])),
        not_applicable(Scheme::None, Setting::Secrets)
    );
    assert_eq!(
        build(
            Scheme::Github,
            Settings {
                tolerance: Some(Duration::from_secs(60)),
                ..secrets(&["x"])
            }
        ),
        not_applicable(Scheme::Github, Setting::Tolerance)
    );
    assert_eq!(
        build(
            Scheme::Github,
            Settings {
                url: Some("https://example.com".to_string()),
                ..secrets(&["x"])
            }
        ),
        not_applicable(Scheme::Github, Setting::Url)
    );
    assert_eq!(
        build(
            Scheme::Jira,
            Settings {
                allow_legacy_sha1: true,
                ..secrets(&["x"])
            }
        ),
        not_applicable(Scheme::Jira, Setting::LegacySha1)
    );
    assert_eq!(
        build(
            Scheme::Github,
            Settings {
                generic: Some(generic()),
                ..secrets(&["x"])
            }
        ),
        not_applicable(Scheme::Github, Setting::Generic)
    );
}

#[test]
fn settings_a_scheme_needs_are_required() {
    for scheme in [Scheme::Trello, Scheme::HubspotV2, Scheme::HubspotV3] {
        assert_eq!(
            build(scheme, secrets(&["x"])),
            Err(ConfigError::Missing {
                scheme,
                setting: Setting::Url
            })
        );
        let empty_url = Settings {
            url: Some(String::new()),
            ..secrets(&["x"])
        };
        assert!(build(scheme, empty_url).is_err());
    }
    assert_eq!(
        build(Scheme::HmacSha256, secrets(&["x"])),
        Err(ConfigError::Missing {
            scheme: Scheme::HmacSha256,
            setting: Setting::Generic
        })
    );
}

#[test]
fn bad_secrets_are_reported_with_their_index() {
    assert_eq!(
        build(Scheme::Github, secrets(&["ok", ""])),
        Err(ConfigError::EmptySecret { index: 1 })
    );
    assert_eq!(
        build(
            Scheme::StandardWebhooks,
            secrets(&[
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsec_not base64!"
            ])
        ),
        Err(ConfigError::InvalidSecret {
            index: 1,
            problem: "not base64 after the optional `whsec_` prefix"
        })
    );
    let error = build(Scheme::Sendgrid, secrets(&["bm90IGEga2V5"])).expect_err("not a key");
    assert_eq!(
        error.to_string(),
        "secrets[0] is not a base64 DER P-256 public key"
    );
}

#[test]
fn tolerance_overrides_the_scheme_default() {
    let timestamp = "1700000000";
    let body = b"body";
    let signature = hmac_sha256(b"x", &[b"v0:", timestamp.as_bytes(), b":", body]);
    let signed = headers(&[
        ("X-Slack-Request-Timestamp", timestamp),
        (
            "X-Slack-Signature",
            &format!("v0={}", hex::encode(signature)),
        ),
    ]);
    let slack = Verifier::new(
        Scheme::Slack,
        Settings {
            tolerance: Some(Duration::from_secs(30)),
            ..secrets(&["x"])
        },
    )
    .expect("settings");
    assert!(slack.verify(&post(&signed, body), 1_700_000_030).is_ok());
    assert_eq!(
        slack.verify(&post(&signed, body), 1_700_000_031),
        Err(VerifyError::Stale {
            skew_secs: 31,
            tolerance_secs: 30
        })
    );
}

#[test]
fn debug_output_never_shows_a_secret() {
    let secret = "hunter2-very-secret";
    assert_eq!(format!("{:?}", Secret::from(secret)), "Secret(<redacted>)");
    for scheme in [Scheme::Github, Scheme::Stripe, Scheme::Slack] {
        let verifier = Verifier::new(scheme, secrets(&[secret])).expect("settings");
        assert!(!format!("{verifier:?}").contains(secret), "{scheme}");
    }
    let settings = secrets(&[secret]);
    assert!(!format!("{settings:?}").contains(secret));
}

#[test]
fn error_messages_carry_neither_secrets_nor_signatures() {
    let secret = "hunter2-very-secret";
    let body = b"body";
    let computed = hex::encode(hmac_sha256(secret.as_bytes(), &[body]));
    let sent = "ab".repeat(32);
    let verifier = Verifier::new(Scheme::Github, secrets(&[secret])).expect("settings");
    let request_headers = headers(&[("X-Hub-Signature-256", &format!("sha256={sent}"))]);
    let error = verifier
        .verify(&post(&request_headers, b"other"), 0)
        .expect_err("mismatch");
    let message = format!("{error} {error:?}");
    assert!(!message.contains(secret));
    assert!(!message.contains(&computed));
    assert!(!message.contains(&sent));
    assert_eq!(error.to_string(), "signature does not match");

    let malformed = headers(&[("X-Hub-Signature-256", &format!("sha1={sent}"))]);
    let error = verifier
        .verify(&post(&malformed, body), 0)
        .expect_err("malformed");
    assert_eq!(
        error.to_string(),
        "header `x-hub-signature-256` is not `sha256=` followed by hex"
    );
}

#[test]
fn error_messages_read_well() {
    let stale = VerifyError::Stale {
        skew_secs: 301,
        tolerance_secs: 300,
    };
    assert_eq!(
        stale.to_string(),
        "signed timestamp is 301 s old, beyond the 300 s tolerance"
    );
    let early = VerifyError::Stale {
        skew_secs: -400,
        tolerance_secs: 300,
    };
    assert_eq!(
        early.to_string(),
        "signed timestamp is 400 s in the future, beyond the 300 s tolerance"
    );
    assert_eq!(
        VerifyError::MissingHeader(HeaderName::from_static("stripe-signature")).to_string(),
        "missing header `stripe-signature`"
    );
    assert_eq!(
        ConfigError::Missing {
            scheme: Scheme::Trello,
            setting: Setting::Url
        }
        .to_string(),
        "scheme `trello` needs the URL registered with the sender"
    );
}
