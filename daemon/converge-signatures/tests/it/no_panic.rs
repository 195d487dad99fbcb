//! Whatever arrives, verification returns an answer and never panics.

use std::time::Duration;

use converge_signatures::{
    Encoding, GenericHmac, Inbound, Scheme, Secret, Settings, Verifier, asana_handshake,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";

/// Every header some scheme reads, plus one it does not.
const NAMES: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-delivery",
    "x-atlassian-webhook-identifier",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "stripe-signature",
    "x-hook-secret",
    "x-hook-signature",
    "x-trello-webhook",
    "linear-signature",
    "linear-delivery",
    "x-hubspot-signature",
    "x-hubspot-signature-v3",
    "x-hubspot-request-timestamp",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "x-signature",
    "content-type",
];

/// One verifier per scheme, with every setting it accepts turned on.
fn verifiers() -> Vec<Verifier> {
    Scheme::ALL
        .into_iter()
        .map(|scheme| {
            let secrets = match scheme {
                Scheme::None => vec![],
                Scheme::Sendgrid => vec![Secret::from(SENDGRID_KEY)],
                Scheme::StandardWebhooks => {
                    vec![Secret::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
                }
                _ => vec![Secret::from("secret"), Secret::from("rotated")],
            };
            let settings = Settings {
                secrets,
                url: matches!(
                    scheme,
                    Scheme::Trello | Scheme::HubspotV2 | Scheme::HubspotV3
                )
                .then(|| "https://example.com/hooks/x".to_string()),
                tolerance: (scheme == Scheme::Sendgrid).then(|| Duration::from_secs(300)),
                allow_legacy_sha1: scheme == Scheme::Github,
                generic: (scheme == Scheme::HmacSha256).then(|| GenericHmac {
                    header: HeaderName::from_static("x-signature"),
                    prefix: "sha256=".to_string(),
                    encoding: Encoding::Base64,
                }),
            };
            Verifier::new(scheme, settings).expect("settings")
        })
        .collect()
}

/// Header values: arbitrary bytes, or something shaped like a signature so
/// that decoding and comparison are reached too.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (
            prop::sample::select(vec![
                "",
                "sha256=",
                "sha1=",
                "v0=",
                "v1,",
                "t=",
                "t=1700000000,v1=",
                "v1,a v1,",
            ]),
            "[ -~]{0,90}",
        )
            .prop_map(|(prefix, rest)| format!("{prefix}{rest}").into_bytes()),
        "[0-9]{1,22}".prop_map(String::into_bytes),
        "[0-9a-f]{64}".prop_map(String::into_bytes),
    ]
}

fn header_map() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((prop::sample::select(NAMES), header_value()), 0..12).prop_map(
        |pairs| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                // Bytes no HTTP layer would hand over are left out.
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    map.append(HeaderName::from_static(name), value);
                }
            }
            map
        },
    )
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        any::<i64>().prop_map(|ms| format!(r#"{{"webhookTimestamp":{ms}}}"#).into_bytes()),
        "\\PC{0,64}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verify_never_panics(
        headers in header_map(),
        body in body(),
        method in prop::sample::select(vec!["POST", "GET", "PUT", "", "post"]),
        query in "\\PC{0,64}",
        now in prop_oneof![any::<i64>(), 1_600_000_000i64..1_800_000_000],
    ) {
        let request = Inbound { method, headers: &headers, query: &query, body: &body };
        for verifier in verifiers() {
            let _ = verifier.verify(&request, now);
        }
        let _ = asana_handshake(&request);
    }

    #[test]
    fn building_from_arbitrary_secrets_never_panics(
        secrets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..3),
        tolerance in proptest::option::of(any::<u64>()),
    ) {
        for scheme in Scheme::ALL {
            let settings = Settings {
                secrets: secrets.iter().cloned().map(Secret::new).collect(),
                tolerance: tolerance.map(Duration::from_secs),
                ..Settings::default()
            };
            let _ = Verifier::new(scheme, settings);
        }
    }

    #[test]
    fn scheme_parsing_never_panics(name in "\\PC{0,24}") {
        let _ = name.parse::<Scheme>();
    }
}
