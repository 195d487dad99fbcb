//! Any request to a verified hook: arbitrary headers, query and body
//! through every scheme. Verification must never panic, must never accept
//! a request that carries none of the scheme's signature headers, and a
//! `url-secret` hook must never accept a query without its secret.
#![no_main]

use arbitrary::Arbitrary;
use converge_signatures::{Encoding, GenericHmac, Inbound, Scheme, Secret, Settings, Verifier};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Request {
    scheme: u8,
    method: String,
    headers: Vec<(String, Vec<u8>)>,
    query: String,
    body: Vec<u8>,
    now: i64,
}

/// A P-256 public key, base64 DER, so the SendGrid verifier can be built.
const SENDGRID_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";

fn verifier(scheme: Scheme) -> Option<Verifier> {
    let secret = match scheme {
        Scheme::None => None,
        Scheme::StandardWebhooks => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        Scheme::Sendgrid => Some(SENDGRID_KEY),
        _ => Some("fuzzing-secret"),
    };
    let url = matches!(
        scheme,
        Scheme::Trello | Scheme::HubspotV2 | Scheme::HubspotV3
    )
    .then(|| "https://converge.example.com/hooks/fuzz".to_string());
    let generic = (scheme == Scheme::HmacSha256).then(|| GenericHmac {
        header: HeaderName::from_static("x-signature"),
        prefix: "sha256=".into(),
        encoding: Encoding::Hex,
    });
    Verifier::new(
        scheme,
        Settings {
            secrets: secret.map(Secret::from).into_iter().collect(),
            url,
            generic,
            ..Settings::default()
        },
    )
    .ok()
}

fuzz_target!(|request: Request| {
    let scheme = Scheme::ALL[usize::from(request.scheme) % Scheme::ALL.len()];
    let Some(verifier) = verifier(scheme) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let inbound = Inbound {
        method: &request.method,
        headers: &headers,
        query: &request.query,
        body: &request.body,
    };
    let verified = verifier.verify(&inbound, request.now);
    if scheme == Scheme::UrlSecret && !request.query.contains("fuzzing") {
        assert!(verified.is_err(), "url-secret accepted {:?}", request.query);
    }
    if headers.is_empty() && !matches!(scheme, Scheme::None | Scheme::Linear | Scheme::UrlSecret) {
        assert!(
            verified.is_err(),
            "{scheme} accepted a request without headers"
        );
    }
    let _ = converge_signatures::asana_handshake(&inbound);
});
