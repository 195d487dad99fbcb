//! The published vectors in `tests/fixtures`: each valid one verifies and
//! each invalid one is refused.

use converge_signatures::{ConfigError, Scheme, Secret, Settings, Verifier, VerifyError};
use serde_json::Value;

use crate::{
    fixture, fixture_headers, fixture_path, headers, hmac_sha256, post, text, verifier,
    verifier_with, with_url,
};

#[test]
fn github_documented_vector_verifies() {
    let vector = fixture("github/signature.known_answer.json");
    let verifier = verifier(Scheme::Github, &[text(&vector, "secret")]);
    let headers = fixture_headers(&vector);
    let payload = text(&vector, "payload").as_bytes();
    assert_eq!(
        verifier.verify(&post(&headers, payload), 0),
        Ok(Default::default())
    );
    assert_eq!(
        headers["x-hub-signature-256"],
        format!("sha256={}", text(&vector, "expected_signature_hex"))
    );
}

#[test]
fn github_documented_vector_fails_with_other_body_or_secret() {
    let vector = fixture("github/signature.known_answer.json");
    let headers = fixture_headers(&vector);
    let right = verifier(Scheme::Github, &[text(&vector, "secret")]);
    let wrong = verifier(Scheme::Github, &["It's a Secret to Everybody!"]);
    assert_eq!(
        right.verify(&post(&headers, b"Hello, World?"), 0),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        wrong.verify(&post(&headers, text(&vector, "payload").as_bytes()), 0),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn github_documented_delivery_headers_parse_but_do_not_match_an_elided_body() {
    let example = fixture("github/delivery_headers.example.json");
    let headers = fixture_headers(&example);
    for allow_legacy_sha1 in [false, true] {
        let verifier = verifier_with(
            Scheme::Github,
            &["some secret"],
            Settings {
                allow_legacy_sha1,
                ..Settings::default()
            },
        );
        assert_eq!(
            verifier.verify(&post(&headers, b"..."), 0),
            Err(VerifyError::Mismatch)
        );
    }
}

#[test]
fn slack_documented_vector_verifies_at_its_time() {
    let vector = fixture("slack/signing_secret.known_answer.json");
    let verifier = verifier(Scheme::Slack, &[text(&vector, "signing_secret")]);
    let headers = fixture_headers(&vector);
    let body = text(&vector, "body").as_bytes();
    let now = 1531420618;
    assert_eq!(
        verifier.verify(&post(&headers, body), now),
        Ok(Default::default())
    );
    assert_eq!(
        verifier.verify(&post(&headers, body), now + 300),
        Ok(Default::default())
    );
    assert_eq!(
        verifier.verify(&post(&headers, body), now + 301),
        Err(VerifyError::Stale {
            skew_secs: 301,
            tolerance_secs: 300
        })
    );
    let mut tampered = body.to_vec();
    tampered.push(b'&');
    assert_eq!(
        verifier.verify(&post(&headers, &tampered), now),
        Err(VerifyError::Mismatch)
    );
}

/// Every HubSpot vector, as a request to a verifier of its version.
fn hubspot_cases() -> Vec<(Value, Verifier, http::HeaderMap, i64)> {
    let vectors = fixture("hubspot/signature.known_answers.json");
    vectors["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|vector| {
            let secret = text(vector, "client_secret");
            let expected = text(vector, "expected");
            match text(vector, "signature_version") {
                "v1" => (
                    vector.clone(),
                    verifier(Scheme::HubspotV1, &[secret]),
                    headers(&[("X-HubSpot-Signature", expected)]),
                    0,
                ),
                "v2" => (
                    vector.clone(),
                    verifier_with(Scheme::HubspotV2, &[secret], with_url(text(vector, "uri"))),
                    headers(&[("X-HubSpot-Signature", expected)]),
                    0,
                ),
                "v3" => {
                    let timestamp = text(vector, "timestamp");
                    let now = timestamp.parse::<i64>().expect("ms") / 1000;
                    (
                        vector.clone(),
                        verifier_with(Scheme::HubspotV3, &[secret], with_url(text(vector, "uri"))),
                        headers(&[
                            ("X-HubSpot-Signature-v3", expected),
                            ("X-HubSpot-Request-Timestamp", timestamp),
                        ]),
                        now,
                    )
                }
                other => panic!("unknown HubSpot version {other}"),
            }
        })
        .collect()
}

fn method(vector: &Value) -> &str {
    vector["http_method"].as_str().unwrap_or("POST")
}

#[test]
fn hubspot_vectors_verify() {
    let cases = hubspot_cases();
    assert_eq!(cases.len(), 6);
    for (vector, verifier, headers, now) in &cases {
        let request = converge_signatures::Inbound {
            method: method(vector),
            headers,
            query: "",
            body: text(vector, "body").as_bytes(),
        };
        assert_eq!(
            verifier.verify(&request, *now),
            Ok(Default::default()),
            "{}",
            text(vector, "id")
        );
    }
}

#[test]
fn hubspot_vectors_fail_with_another_body_secret_or_method() {
    for (vector, verifier, headers, now) in hubspot_cases() {
        let id = text(&vector, "id");
        let mut body = text(&vector, "body").as_bytes().to_vec();
        body.push(b' ');
        let tampered = converge_signatures::Inbound {
            method: method(&vector),
            headers: &headers,
            query: "",
            body: &body,
        };
        assert_eq!(
            verifier.verify(&tampered, now),
            Err(VerifyError::Mismatch),
            "{id}"
        );

        let other_secret = Verifier::new(
            verifier.scheme(),
            Settings {
                secrets: vec![Secret::from("zzzzzzzz-yyyy-yyyy-yyyy-yyyyyyyyyyyy")],
                url: vector["uri"].as_str().map(str::to_string),
                ..Settings::default()
            },
        )
        .expect("settings");
        let request = converge_signatures::Inbound {
            method: method(&vector),
            headers: &headers,
            query: "",
            body: text(&vector, "body").as_bytes(),
        };
        assert_eq!(
            other_secret.verify(&request, now),
            Err(VerifyError::Mismatch),
            "{id}"
        );

        if verifier.scheme() != Scheme::HubspotV1 {
            let other_method = converge_signatures::Inbound {
                method: "PUT",
                ..request
            };
            assert_eq!(
                verifier.verify(&other_method, now),
                Err(VerifyError::Mismatch),
                "{id}"
            );
        }
    }
}

#[test]
fn hubspot_v2_vector_fails_for_another_registered_url() {
    let vectors = fixture("hubspot/signature.known_answers.json");
    let vector = &vectors["vectors"][2];
    assert_eq!(text(vector, "signature_version"), "v2");
    let verifier = verifier_with(
        Scheme::HubspotV2,
        &[text(vector, "client_secret")],
        with_url("https://www.example.com/webhook_uri/"),
    );
    let headers = headers(&[("X-HubSpot-Signature", text(vector, "expected"))]);
    assert_eq!(
        verifier.verify(&post(&headers, text(vector, "body").as_bytes()), 0),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn hubspot_v3_vector_is_stale_five_minutes_later() {
    let cases = hubspot_cases();
    let (vector, verifier, headers, now) = cases.last().expect("v3 case");
    let request = post(headers, text(vector, "body").as_bytes());
    assert_eq!(verifier.verify(&request, now + 300), Ok(Default::default()));
    assert_eq!(
        verifier.verify(&request, now + 301),
        Err(VerifyError::Stale {
            skew_secs: 301,
            tolerance_secs: 300
        })
    );
}

#[test]
fn hubspot_v1_docs_example_body_file_is_the_signed_bytes() {
    let body = std::fs::read(fixture_path("hubspot/signature_v1.docs_example_body.json"))
        .expect("body file");
    let vectors = fixture("hubspot/signature.known_answers.json");
    let vector = &vectors["vectors"][0];
    assert_eq!(text(vector, "id"), "hubspot-docs-v1");
    let verifier = verifier(Scheme::HubspotV1, &[text(vector, "client_secret")]);
    let headers = headers(&[("X-HubSpot-Signature", text(vector, "expected"))]);
    assert_eq!(
        verifier.verify(&post(&headers, &body), 0),
        Ok(Default::default())
    );
    let mut with_newline = body.clone();
    with_newline.push(b'\n');
    assert_eq!(
        verifier.verify(&post(&headers, &with_newline), 0),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn sendgrid_vector_verifies_and_its_negative_cases_fail() {
    let vector = fixture("sendgrid/signed_event_webhook.known_answer.json");
    let key = text(&vector, "public_key_base64_der");
    let body = text(&vector, "raw_body");
    assert!(body.ends_with("\r\n"));
    let signature = vector["headers"]["X-Twilio-Email-Event-Webhook-Signature"]
        .as_str()
        .expect("signature");
    let timestamp = vector["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"]
        .as_str()
        .expect("timestamp");
    let check = |key: &str, signature: &str, timestamp: &str, body: &str| {
        let headers = headers(&[
            ("X-Twilio-Email-Event-Webhook-Signature", signature),
            ("X-Twilio-Email-Event-Webhook-Timestamp", timestamp),
        ]);
        verifier(Scheme::Sendgrid, &[key]).verify(&post(&headers, body.as_bytes()), 0)
    };

    assert_eq!(
        check(key, signature, timestamp, body),
        Ok(Default::default())
    );
    assert_eq!(
        check(key, signature, timestamp, body.trim_end()),
        Err(VerifyError::Mismatch),
        "the trailing CRLF is signed"
    );

    let negatives = vector["negative_cases"].as_array().expect("negative cases");
    assert_eq!(negatives.len(), 4);
    for case in negatives {
        let result = check(
            case["public_key_base64_der"].as_str().unwrap_or(key),
            case["signature"].as_str().unwrap_or(signature),
            case["timestamp"].as_str().unwrap_or(timestamp),
            case["raw_body"].as_str().unwrap_or(body),
        );
        assert_eq!(text(case, "expected"), "invalid");
        assert_eq!(result, Err(VerifyError::Mismatch), "{}", text(case, "case"));
    }
}

#[test]
fn sendgrid_rotation_accepts_either_key_and_tolerance_applies_when_configured() {
    let vector = fixture("sendgrid/signed_event_webhook.known_answer.json");
    let key = text(&vector, "public_key_base64_der");
    let other_key = text(&vector["negative_cases"][0], "public_key_base64_der");
    let headers = fixture_headers(&vector);
    let body = text(&vector, "raw_body").as_bytes();
    let signed_at = 1600112502;

    let rotating = verifier(Scheme::Sendgrid, &[other_key, key]);
    assert_eq!(
        rotating.verify(&post(&headers, body), 0),
        Ok(Default::default())
    );

    let windowed = verifier_with(
        Scheme::Sendgrid,
        &[key],
        Settings {
            tolerance: Some(std::time::Duration::from_secs(600)),
            ..Settings::default()
        },
    );
    assert_eq!(
        windowed.verify(&post(&headers, body), signed_at + 600),
        Ok(Default::default())
    );
    assert_eq!(
        windowed.verify(&post(&headers, body), signed_at + 601),
        Err(VerifyError::Stale {
            skew_secs: 601,
            tolerance_secs: 600
        })
    );
}

fn standard_webhooks_request(case: &Value) -> (Verifier, http::HeaderMap, Vec<u8>, i64) {
    (
        verifier(Scheme::StandardWebhooks, &[text(case, "secret")]),
        fixture_headers(case),
        text(case, "payload").as_bytes().to_vec(),
        case["now"].as_i64().expect("now"),
    )
}

#[test]
fn standard_webhooks_sign_vectors_verify() {
    let vectors = fixture("standard-webhooks/test_vectors.json");
    let signs = vectors["sign_vectors"].as_array().expect("sign vectors");
    assert_eq!(signs.len(), 2);
    for vector in signs {
        let timestamp = vector["timestamp"].as_i64().expect("timestamp");
        let headers = headers(&[
            ("webhook-id", text(vector, "msg_id")),
            ("webhook-timestamp", &timestamp.to_string()),
            ("webhook-signature", text(vector, "expected_signature")),
        ]);
        let verifier = verifier(Scheme::StandardWebhooks, &[text(vector, "secret")]);
        assert_eq!(
            verifier.verify(
                &post(&headers, text(vector, "payload").as_bytes()),
                timestamp
            ),
            Ok(converge_signatures::Verified {
                delivery_id: Some(text(vector, "msg_id").to_string())
            }),
            "{}",
            text(vector, "id")
        );
    }
}

#[test]
fn standard_webhooks_verify_cases_have_their_expected_outcome() {
    let vectors = fixture("standard-webhooks/test_vectors.json");
    let mut checked = 0;
    for case in vectors["verify_cases"].as_array().expect("verify cases") {
        let id = text(case, "id");
        if case.get("secret").is_none() {
            continue; // the missing-headers case, below
        }
        let (verifier, headers, body, now) = standard_webhooks_request(case);
        let result = verifier.verify(&post(&headers, &body), now);
        match text(case, "expected") {
            "valid" => assert!(result.is_ok(), "{id}: {result:?}"),
            "invalid" => assert_eq!(result, Err(VerifyError::Mismatch), "{id}"),
            "invalid (timestamp too old)" => assert!(
                matches!(result, Err(VerifyError::Stale { skew_secs: 301, .. })),
                "{id}: {result:?}"
            ),
            "invalid (timestamp too far in the future)" => assert!(
                matches!(
                    result,
                    Err(VerifyError::Stale {
                        skew_secs: -301,
                        ..
                    })
                ),
                "{id}: {result:?}"
            ),
            other => panic!("{id}: unknown expectation {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn standard_webhooks_partial_signature_fails() {
    let vectors = fixture("standard-webhooks/test_vectors.json");
    let case = vectors["verify_cases"]
        .as_array()
        .expect("verify cases")
        .iter()
        .find(|case| case["id"] == "sw-verify-partial-signature")
        .expect("partial case");
    let (verifier, mut headers, body, now) = standard_webhooks_request(case);
    for partial in [
        "v1,",
        "v1,tZ1I4",
        "v1",
        "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ] {
        headers.insert("webhook-signature", partial.parse().expect("value"));
        assert_eq!(
            verifier.verify(&post(&headers, &body), now),
            Err(VerifyError::Mismatch),
            "{partial}"
        );
    }
}

#[test]
fn standard_webhooks_missing_headers_and_bad_timestamps_fail() {
    let vectors = fixture("standard-webhooks/test_vectors.json");
    let valid = &vectors["verify_cases"][0];
    assert_eq!(text(valid, "id"), "sw-verify-valid");
    let (verifier, headers, body, now) = standard_webhooks_request(valid);
    assert!(verifier.verify(&post(&headers, &body), now).is_ok());

    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut without = headers.clone();
        without.remove(name);
        assert_eq!(
            verifier.verify(&post(&without, &body), now),
            Err(VerifyError::MissingHeader(http::HeaderName::from_static(
                name
            )))
        );
    }

    let mut timestamps: Vec<String> = vec!["hello".to_string()];
    for case in vectors["signing_errors_php"].as_array().expect("php cases") {
        timestamps.push(text(case, "timestamp").to_string());
    }
    for timestamp in &timestamps {
        let mut bad = headers.clone();
        bad.insert("webhook-timestamp", timestamp.parse().expect("value"));
        assert!(
            matches!(
                verifier.verify(&post(&bad, &body), now),
                Err(VerifyError::Malformed { .. })
            ),
            "{timestamp}"
        );
    }
}

#[test]
fn standard_webhooks_empty_secrets_are_refused() {
    let vectors = fixture("standard-webhooks/test_vectors.json");
    let cases = vectors["secret_cases"].as_array().expect("secret cases");
    let empties: Vec<&str> = cases
        .iter()
        .filter_map(|case| case["secret"].as_str())
        .collect();
    assert_eq!(empties, ["", "whsec_"]);
    for secret in empties {
        let settings = Settings {
            secrets: vec![Secret::from(secret)],
            ..Settings::default()
        };
        assert_eq!(
            Verifier::new(Scheme::StandardWebhooks, settings).map(|_| ()),
            Err(ConfigError::EmptySecret { index: 0 }),
            "{secret:?}"
        );
    }
}

#[test]
fn standard_webhooks_unpadded_secrets_are_accepted() {
    use base64::Engine as _;
    let body = br#"{"test": 2432232314}"#;
    for unpadded in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr",
    ] {
        // As Python's `b64decode` reads them: the unused low bits of the last
        // symbol are dropped.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        let key = lenient.decode(unpadded).expect("unpadded base64");
        let signature = hmac_sha256(&key, &[b"msg_1.1614265330.", body]);
        let headers = headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                &format!("v1,{}", crate::base64(&signature)),
            ),
        ]);
        for secret in [unpadded.to_string(), format!("whsec_{unpadded}")] {
            let verifier = verifier(Scheme::StandardWebhooks, &[&secret]);
            assert!(
                verifier.verify(&post(&headers, body), 1614265330).is_ok(),
                "{secret}"
            );
        }
    }
}

#[test]
fn standard_webhooks_rotation_accepts_any_configured_secret() {
    let vectors = fixture("standard-webhooks/test_vectors.json");
    let valid = &vectors["verify_cases"][0];
    let (_, headers, body, now) = standard_webhooks_request(valid);
    let rotating = verifier(
        Scheme::StandardWebhooks,
        &[
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            text(valid, "secret"),
        ],
    );
    assert!(rotating.verify(&post(&headers, &body), now).is_ok());
    let retired = verifier(
        Scheme::StandardWebhooks,
        &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
    );
    assert_eq!(
        retired.verify(&post(&headers, &body), now),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn standard_webhooks_spec_example_headers_parse() {
    let vectors = fixture("standard-webhooks/test_vectors.json");
    let example = &vectors["spec_example_headers_format_only"];
    let headers = headers(&[
        ("webhook-id", text(example, "webhook-id")),
        ("webhook-timestamp", text(example, "webhook-timestamp")),
        ("webhook-signature", text(example, "webhook-signature")),
    ]);
    let body = text(example, "signed_content_example")
        .splitn(3, '.')
        .nth(2)
        .expect("body part");
    let verifier = verifier(
        Scheme::StandardWebhooks,
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    );
    assert_eq!(
        verifier.verify(&post(&headers, body.as_bytes()), 1674087231),
        Err(VerifyError::Mismatch)
    );
}
