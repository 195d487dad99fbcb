//! Schemes without published vectors: requests signed here with the `hmac`
//! crate, as the senders document, then altered one part at a time; and
//! `url-secret`, whose secret is in the URL.

use converge_signatures::{
    ConfigError, Encoding, GenericHmac, Inbound, Scheme, Secret, Setting, Settings, Verified,
    Verifier, VerifyError, asana_handshake,
};
use http::HeaderName;

use crate::{
    base64, fixture, fixture_headers, fixture_path, headers, hmac_sha1, hmac_sha256, post, text,
    verifier, verifier_with, with_generic, with_url,
};

const SECRET: &str = "s3cr3t-for-tests";
const NOW: i64 = 1_700_000_000;

fn delivered(id: &str) -> Result<Verified, VerifyError> {
    Ok(Verified {
        delivery_id: Some(id.to_string()),
    })
}

fn missing(name: &'static str) -> Result<Verified, VerifyError> {
    Err(VerifyError::MissingHeader(HeaderName::from_static(name)))
}

fn is_malformed(result: Result<Verified, VerifyError>) -> bool {
    matches!(result, Err(VerifyError::Malformed { .. }))
}

fn github_body() -> Vec<u8> {
    std::fs::read(fixture_path("github/issues.opened.json")).expect("payload")
}

#[test]
fn github_reports_the_delivery_id_of_the_documented_headers() {
    let example = fixture("github/delivery_headers.example.json");
    let body = github_body();
    let mut headers = fixture_headers(&example);
    let signature = hex::encode(hmac_sha256(SECRET.as_bytes(), &[&body]));
    headers.insert(
        "x-hub-signature-256",
        format!("sha256={signature}").parse().expect("value"),
    );
    assert_eq!(
        verifier(Scheme::Github, &[SECRET]).verify(&post(&headers, &body), NOW),
        delivered("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
}

#[test]
fn github_legacy_sha1_only_when_allowed_and_only_without_sha256() {
    let body = github_body();
    let sha1 = format!(
        "sha1={}",
        hex::encode(hmac_sha1(SECRET.as_bytes(), &[&body]))
    );
    let legacy = verifier_with(
        Scheme::Github,
        &[SECRET],
        Settings {
            allow_legacy_sha1: true,
            ..Settings::default()
        },
    );
    let strict = verifier(Scheme::Github, &[SECRET]);

    let only_sha1 = headers(&[("X-Hub-Signature", &sha1)]);
    assert_eq!(
        legacy.verify(&post(&only_sha1, &body), NOW),
        Ok(Verified::default())
    );
    assert_eq!(
        strict.verify(&post(&only_sha1, &body), NOW),
        missing("x-hub-signature-256")
    );
    assert_eq!(
        legacy.verify(&post(&only_sha1, b"{}"), NOW),
        Err(VerifyError::Mismatch)
    );

    // A valid SHA-1 does not rescue a wrong SHA-256: no downgrade.
    let both = headers(&[
        ("X-Hub-Signature", &sha1),
        (
            "X-Hub-Signature-256",
            &format!("sha256={}", "00".repeat(32)),
        ),
    ]);
    assert_eq!(
        legacy.verify(&post(&both, &body), NOW),
        Err(VerifyError::Mismatch)
    );

    assert_eq!(
        legacy.verify(&post(&headers(&[]), &body), NOW),
        missing("x-hub-signature-256")
    );
}

#[test]
fn github_refuses_malformed_and_repeated_headers() {
    let body = github_body();
    let good = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[&body]))
    );
    let github = verifier(Scheme::Github, &[SECRET]);
    for bad in [
        "sha1=00",
        "757107ea",
        "sha256=zz",
        "SHA256=00",
        "sha256= 00",
    ] {
        let headers = headers(&[("X-Hub-Signature-256", bad)]);
        assert!(
            is_malformed(github.verify(&post(&headers, &body), NOW)),
            "{bad}"
        );
    }
    let repeated = headers(&[
        ("X-Hub-Signature-256", &good),
        ("X-Hub-Signature-256", &good),
    ]);
    assert!(is_malformed(github.verify(&post(&repeated, &body), NOW)));
}

#[test]
fn jira_signs_like_github_in_x_hub_signature() {
    let body = std::fs::read(fixture_path(
        "jira/jira_issue_updated.with_changelog_and_comment.json",
    ))
    .expect("payload");
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[&body]))
    );
    let jira = verifier(Scheme::Jira, &[SECRET]);
    let signed = headers(&[
        ("X-Hub-Signature", &signature),
        ("X-Atlassian-Webhook-Identifier", "4a1e2c4b-delivery"),
    ]);
    assert_eq!(
        jira.verify(&post(&signed, &body), NOW),
        delivered("4a1e2c4b-delivery")
    );

    let mut tampered = body.clone();
    tampered[0] = b' ';
    assert_eq!(
        jira.verify(&post(&signed, &tampered), NOW),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verifier(Scheme::Jira, &["other"]).verify(&post(&signed, &body), NOW),
        Err(VerifyError::Mismatch)
    );
    let in_github_header = headers(&[("X-Hub-Signature-256", &signature)]);
    assert_eq!(
        jira.verify(&post(&in_github_header, &body), NOW),
        missing("x-hub-signature")
    );
    let sha1 = headers(&[("X-Hub-Signature", "sha1=00")]);
    assert!(is_malformed(jira.verify(&post(&sha1, &body), NOW)));
    assert_eq!(
        jira.verify(
            &post(&headers(&[("X-Hub-Signature", &signature)]), &body),
            NOW
        ),
        Ok(Verified::default())
    );
}

#[test]
fn slack_request_signed_here_verifies_and_rejects_a_future_timestamp() {
    let body = b"token=x&team_id=T1&text=hello";
    let timestamp = NOW.to_string();
    let signature = hmac_sha256(
        SECRET.as_bytes(),
        &[b"v0:", timestamp.as_bytes(), b":", body],
    );
    let slack = verifier(Scheme::Slack, &[SECRET]);
    let signed = headers(&[
        ("X-Slack-Request-Timestamp", &timestamp),
        (
            "X-Slack-Signature",
            &format!("v0={}", hex::encode(signature)),
        ),
    ]);
    assert_eq!(
        slack.verify(&post(&signed, body), NOW),
        Ok(Verified::default())
    );
    assert!(matches!(
        slack.verify(&post(&signed, body), NOW - 301),
        Err(VerifyError::Stale {
            skew_secs: -301,
            ..
        })
    ));
    let mut no_timestamp = signed.clone();
    no_timestamp.remove("x-slack-request-timestamp");
    assert_eq!(
        slack.verify(&post(&no_timestamp, body), NOW),
        missing("x-slack-request-timestamp")
    );
}

fn stripe_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = hmac_sha256(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    format!("t={timestamp},v1={}", hex::encode(signature))
}

#[test]
fn stripe_uses_the_secret_as_written_and_accepts_any_v1() {
    // The key is the `whsec_` string itself, not its base64 decoding.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let stripe = verifier(Scheme::Stripe, &[secret]);
    let header = stripe_header(secret, NOW, body);
    let signed = headers(&[("Stripe-Signature", &header)]);
    assert_eq!(
        stripe.verify(&post(&signed, body), NOW),
        Ok(Verified::default())
    );

    let valid_v1 = header.split_once(",v1=").expect("v1").1;
    let several = format!(
        "t={NOW},v1={},v1={valid_v1},v0={}",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    let several = headers(&[("Stripe-Signature", &several)]);
    assert_eq!(
        stripe.verify(&post(&several, body), NOW),
        Ok(Verified::default())
    );

    // A matching signature under v0 only is not accepted.
    let v0_only = headers(&[("Stripe-Signature", &format!("t={NOW},v0={valid_v1}"))]);
    assert!(is_malformed(stripe.verify(&post(&v0_only, body), NOW)));
}

#[test]
fn stripe_refuses_tampering_wrong_secret_and_stale_timestamps() {
    let body = br#"{"id":"evt_1"}"#;
    let stripe = verifier(Scheme::Stripe, &[SECRET]);
    let signed = headers(&[("Stripe-Signature", &stripe_header(SECRET, NOW, body))]);
    assert_eq!(
        stripe.verify(&post(&signed, br#"{"id":"evt_2"}"#), NOW),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verifier(Scheme::Stripe, &["whsec_other"]).verify(&post(&signed, body), NOW),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        stripe.verify(&post(&signed, body), NOW + 300),
        Ok(Verified::default())
    );
    assert_eq!(
        stripe.verify(&post(&signed, body), NOW + 301),
        Err(VerifyError::Stale {
            skew_secs: 301,
            tolerance_secs: 300
        })
    );
    // Changing `t` breaks the signature, so a replay cannot refresh it.
    let retimed =
        stripe_header(SECRET, NOW, body).replace(&format!("t={NOW}"), &format!("t={}", NOW + 1000));
    let retimed = headers(&[("Stripe-Signature", &retimed)]);
    assert_eq!(
        stripe.verify(&post(&retimed, body), NOW + 1000),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        stripe.verify(&post(&headers(&[]), body), NOW),
        missing("stripe-signature")
    );
}

#[test]
fn stripe_docs_example_header_parses() {
    let description = fixture("stripe/signature.description.json");
    let signed = headers(&[(
        "Stripe-Signature",
        text(&description, "docs_example_header"),
    )]);
    let stripe = verifier(Scheme::Stripe, &["whsec_unknown"]);
    assert_eq!(
        stripe.verify(&post(&signed, b"{}"), 1492774577),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn asana_handshake_is_recognised_from_the_documented_request() {
    let handshake = fixture("asana/handshake.x_hook_secret.json");
    let request = &handshake["handshake_request"];
    let headers = fixture_headers(request);
    let inbound = Inbound {
        method: text(request, "method"),
        headers: &headers,
        query: "",
        body: b"",
    };
    assert_eq!(
        asana_handshake(&inbound),
        handshake["handshake_response_expected"]["headers"]["X-Hook-Secret"].as_str()
    );
    assert_eq!(
        asana_handshake(&Inbound {
            method: "GET",
            ..inbound
        }),
        None
    );
    assert_eq!(asana_handshake(&post(&crate::headers(&[]), b"")), None);
    let empty = crate::headers(&[("X-Hook-Secret", "")]);
    assert_eq!(asana_handshake(&post(&empty, b"")), None);
}

#[test]
fn asana_needs_the_handshake_secret_then_verifies_with_it() {
    let handshake = fixture("asana/handshake.x_hook_secret.json");
    let secret = text(&handshake["handshake_request"]["headers"], "X-Hook-Secret");
    let body = br#"{"events":[]}"#;
    let signed = headers(&[(
        "X-Hook-Signature",
        &hex::encode(hmac_sha256(secret.as_bytes(), &[body])),
    )]);

    assert_eq!(
        verifier(Scheme::Asana, &[]).verify(&post(&signed, body), NOW),
        Err(VerifyError::NoSecret)
    );
    let asana = verifier(Scheme::Asana, &[secret]);
    assert_eq!(
        asana.verify(&post(&signed, body), NOW),
        Ok(Verified::default())
    );
    assert_eq!(
        asana.verify(&post(&signed, br#"{"events":[{}]}"#), NOW),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verifier(Scheme::Asana, &[SECRET]).verify(&post(&signed, body), NOW),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        asana.verify(&post(&headers(&[]), body), NOW),
        missing("x-hook-signature")
    );
    let not_hex = headers(&[("X-Hook-Signature", "sha256=00")]);
    assert!(is_malformed(asana.verify(&post(&not_hex, body), NOW)));
}

#[test]
fn trello_signs_body_then_registered_url() {
    let url = "https://hooks.example.com/hooks/trello?token=abc";
    // Signed as raw bytes, non-ASCII text included.
    for file in [
        "trello/envelope.copyChecklist.full_body.json",
        "trello/action.commentCard.json",
    ] {
        let body = std::fs::read(fixture_path(file)).expect("body");
        let signature = base64(&hmac_sha1(SECRET.as_bytes(), &[&body, url.as_bytes()]));
        let signed = headers(&[("X-Trello-Webhook", &signature)]);
        let trello = verifier_with(Scheme::Trello, &[SECRET], with_url(url));
        assert_eq!(
            trello.verify(&post(&signed, &body), NOW),
            Ok(Verified::default()),
            "{file}"
        );

        let other_url = verifier_with(
            Scheme::Trello,
            &[SECRET],
            with_url("https://hooks.example.com/hooks/trello"),
        );
        assert_eq!(
            other_url.verify(&post(&signed, &body), NOW),
            Err(VerifyError::Mismatch)
        );
        let other_secret = verifier_with(Scheme::Trello, &["other"], with_url(url));
        assert_eq!(
            other_secret.verify(&post(&signed, &body), NOW),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            trello.verify(&post(&signed, &body[1..]), NOW),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            trello.verify(&post(&headers(&[]), &body), NOW),
            missing("x-trello-webhook")
        );
        let not_base64 = headers(&[("X-Trello-Webhook", "not base64!")]);
        assert!(is_malformed(trello.verify(&post(&not_base64, &body), NOW)));
    }
}

fn linear_body(timestamp_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"action":"update","type":"Issue","data":{{"id":"i1"}},"url":"https://linear.app/x","organizationId":"o1","webhookTimestamp":{timestamp_ms},"webhookId":"w1"}}"#
    )
    .into_bytes()
}

fn linear_signed(body: &[u8]) -> http::HeaderMap {
    headers(&[
        (
            "Linear-Signature",
            &hex::encode(hmac_sha256(SECRET.as_bytes(), &[body])),
        ),
        ("Linear-Delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72"),
    ])
}

#[test]
fn linear_verifies_and_checks_the_body_timestamp_within_a_minute() {
    let linear = verifier(Scheme::Linear, &[SECRET]);
    let body = linear_body(NOW * 1000 + 500);
    let signed = linear_signed(&body);
    assert_eq!(
        linear.verify(&post(&signed, &body), NOW),
        delivered("234d1a4e-b617-4388-90fe-adc3633d6b72")
    );
    assert_eq!(
        linear.verify(&post(&signed, &body), NOW + 60),
        delivered("234d1a4e-b617-4388-90fe-adc3633d6b72")
    );
    assert_eq!(
        linear.verify(&post(&signed, &body), NOW + 61),
        Err(VerifyError::Stale {
            skew_secs: 60,
            tolerance_secs: 60
        })
    );
    assert!(matches!(
        linear.verify(&post(&signed, &body), NOW - 61),
        Err(VerifyError::Stale { .. })
    ));
}

#[test]
fn linear_refuses_tampering_and_bodies_without_a_timestamp() {
    let linear = verifier(Scheme::Linear, &[SECRET]);
    let body = linear_body(NOW * 1000);
    let signed = linear_signed(&body);
    let replayed = linear_body((NOW + 3600) * 1000);
    assert_eq!(
        linear.verify(&post(&signed, &replayed), NOW + 3600),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verifier(Scheme::Linear, &["other"]).verify(&post(&signed, &body), NOW),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        linear.verify(&post(&headers(&[]), &body), NOW),
        missing("linear-signature")
    );

    for body in [
        &br#"{"action":"create"}"#[..],
        br#"{"webhookTimestamp":"1700000000000"}"#,
        br#"{"webhookTimestamp":1.7e12}"#,
        b"[1,2]",
        b"not json",
    ] {
        let result = linear.verify(&post(&linear_signed(body), body), NOW);
        assert!(
            matches!(result, Err(VerifyError::MalformedBody(_))),
            "{result:?}"
        );
    }
}

#[test]
fn hubspot_v3_signed_now_verifies_and_a_future_timestamp_is_refused() {
    let url = "https://hooks.example.com/hooks/hubspot";
    let body = br#"[{"eventId":1,"subscriptionType":"contact.creation"}]"#;
    let hubspot = verifier_with(Scheme::HubspotV3, &[SECRET], with_url(url));
    let sign = |timestamp_ms: i64| {
        let timestamp = timestamp_ms.to_string();
        let signature = hmac_sha256(
            SECRET.as_bytes(),
            &[b"POST", url.as_bytes(), body, timestamp.as_bytes()],
        );
        headers(&[
            ("X-HubSpot-Signature-v3", &base64(&signature)),
            ("X-HubSpot-Request-Timestamp", &timestamp),
        ])
    };
    assert_eq!(
        hubspot.verify(&post(&sign(NOW * 1000), body), NOW),
        Ok(Verified::default())
    );
    assert!(matches!(
        hubspot.verify(&post(&sign((NOW + 301) * 1000), body), NOW),
        Err(VerifyError::Stale {
            skew_secs: -301,
            ..
        })
    ));
    // A timestamp sent in seconds, read as milliseconds, is in January 1970.
    assert!(matches!(
        hubspot.verify(&post(&sign(NOW), body), NOW),
        Err(VerifyError::Stale { .. })
    ));
}

#[test]
fn generic_hmac_with_prefix_and_hex() {
    let generic = GenericHmac {
        header: HeaderName::from_static("x-signature"),
        prefix: "sha256=".to_string(),
        encoding: Encoding::Hex,
    };
    let hook = verifier_with(Scheme::HmacSha256, &[SECRET], with_generic(generic));
    let body = b"{\"campaign\":42}";
    let mac = hmac_sha256(SECRET.as_bytes(), &[body]);
    let signed = headers(&[("X-Signature", &format!("sha256={}", hex::encode(&mac)))]);
    assert_eq!(
        hook.verify(&post(&signed, body), NOW),
        Ok(Verified::default())
    );
    let upper = headers(&[(
        "X-Signature",
        &format!("sha256={}", hex::encode_upper(&mac)),
    )]);
    assert_eq!(
        hook.verify(&post(&upper, body), NOW),
        Ok(Verified::default())
    );
    assert_eq!(
        hook.verify(&post(&signed, b"{\"campaign\":43}"), NOW),
        Err(VerifyError::Mismatch)
    );
    let unprefixed = headers(&[("X-Signature", &hex::encode(&mac))]);
    assert!(is_malformed(hook.verify(&post(&unprefixed, body), NOW)));
    assert_eq!(
        hook.verify(&post(&headers(&[]), body), NOW),
        missing("x-signature")
    );
}

#[test]
fn generic_hmac_with_base64_and_no_prefix() {
    let generic = GenericHmac {
        header: HeaderName::from_static("x-webhook-signature"),
        prefix: String::new(),
        encoding: Encoding::Base64,
    };
    let hook = verifier_with(Scheme::HmacSha256, &["old", SECRET], with_generic(generic));
    let body = b"payload";
    let mac = base64(&hmac_sha256(SECRET.as_bytes(), &[body]));
    let signed = headers(&[("X-Webhook-Signature", &mac)]);
    assert_eq!(
        hook.verify(&post(&signed, body), NOW),
        Ok(Verified::default())
    );
    let unpadded = headers(&[("X-Webhook-Signature", mac.trim_end_matches('='))]);
    assert_eq!(
        hook.verify(&post(&unpadded, body), NOW),
        Ok(Verified::default())
    );
    let as_hex = headers(&[(
        "X-Webhook-Signature",
        &hex::encode(hmac_sha256(SECRET.as_bytes(), &[body])),
    )]);
    assert_eq!(
        hook.verify(&post(&as_hex, body), NOW),
        Err(VerifyError::Mismatch)
    );
    let wrong = verifier_with(
        Scheme::HmacSha256,
        &["other"],
        with_generic(GenericHmac {
            header: HeaderName::from_static("x-webhook-signature"),
            prefix: String::new(),
            encoding: Encoding::Base64,
        }),
    );
    assert_eq!(
        wrong.verify(&post(&signed, body), NOW),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn none_accepts_anything() {
    let none = verifier(Scheme::None, &[]);
    assert_eq!(
        none.verify(
            &post(&headers(&[("X-GitHub-Delivery", "d1")]), b"anything"),
            i64::MIN
        ),
        Ok(Verified::default())
    );
}

#[test]
fn jira_refuses_a_body_older_than_the_configured_tolerance() {
    let body = std::fs::read(fixture_path(
        "jira/jira_issue_updated.with_changelog_and_comment.json",
    ))
    .expect("payload");
    // The published payload's own `timestamp`, in epoch milliseconds.
    let sent = 1_525_698_237;
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[&body]))
    );
    let signed = headers(&[("X-Hub-Signature", &signature)]);
    let within_an_hour = verifier_with(
        Scheme::Jira,
        &[SECRET],
        Settings {
            tolerance: Some(std::time::Duration::from_secs(3600)),
            ..Settings::default()
        },
    );
    assert_eq!(
        within_an_hour.verify(&post(&signed, &body), sent + 3600),
        Ok(Verified::default())
    );
    assert_eq!(
        within_an_hour.verify(&post(&signed, &body), sent + 3601),
        Err(VerifyError::Stale {
            skew_secs: 3600,
            tolerance_secs: 3600
        })
    );
    // Without a tolerance Jira has no window: a retry keeps its body.
    assert_eq!(
        verifier(Scheme::Jira, &[SECRET]).verify(&post(&signed, &body), sent + 86_400),
        Ok(Verified::default())
    );
    // With one, a signed body without a `timestamp` cannot go unchecked.
    let bare = br#"{"webhookEvent":"jira:issue_updated"}"#;
    let bare_signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[bare]))
    );
    assert!(matches!(
        within_an_hour.verify(
            &post(&headers(&[("X-Hub-Signature", &bare_signature)]), bare),
            sent
        ),
        Err(VerifyError::MalformedBody(_))
    ));
}

#[test]
fn url_secret_takes_the_key_parameter_of_the_query_once() {
    let hook = verifier(Scheme::UrlSecret, &["old secret", "n3w+s/cret"]);
    let nothing = headers(&[]);
    let asking = |query: &'static str| Inbound {
        method: "POST",
        headers: &nothing,
        query,
        body: b"type=subscribe",
    };
    // Either secret while one replaces the other; percent-encoded or as a
    // form writes it (`+` a space).
    for query in [
        "key=old+secret",
        "key=old%20secret",
        "other=1&key=n3w%2Bs%2Fcret",
        "key=n3w%2bs/cret&other=",
    ] {
        assert_eq!(
            hook.verify(&asking(query), NOW),
            Ok(Verified::default()),
            "{query}"
        );
    }
    for query in [
        "key=old",
        "key=old+secret+",
        "key=",
        "key=n3w+s/cret",
        "KEY=old+secret",
    ] {
        let refused = hook.verify(&asking(query), NOW);
        assert!(
            matches!(
                refused,
                Err(VerifyError::WrongParameter("key") | VerifyError::MissingParameter("key"))
            ),
            "{query}: {refused:?}"
        );
    }
    assert_eq!(
        hook.verify(&asking(""), NOW),
        Err(VerifyError::MissingParameter("key"))
    );
    assert_eq!(
        hook.verify(&asking("secret=old+secret"), NOW),
        Err(VerifyError::MissingParameter("key"))
    );
    // A second guess in the same request is not tried.
    assert_eq!(
        hook.verify(&asking("key=wrong&key=old+secret"), NOW),
        Err(VerifyError::RepeatedParameter("key"))
    );
    // The secret never shows in what is said of a refusal.
    let said = VerifyError::RepeatedParameter("key").to_string();
    assert_eq!(said, "query parameter `key` is given more than once");
}

#[test]
fn url_secret_needs_a_secret_and_nothing_else() {
    assert_eq!(
        Verifier::new(Scheme::UrlSecret, Settings::default()).err(),
        Some(ConfigError::Missing {
            scheme: Scheme::UrlSecret,
            setting: Setting::Secrets,
        })
    );
    assert_eq!(
        Verifier::new(
            Scheme::UrlSecret,
            Settings {
                secrets: vec![Secret::from("s")],
                ..with_url("https://converge.example.com/hooks/mailchimp")
            },
        )
        .err(),
        Some(ConfigError::NotApplicable {
            scheme: Scheme::UrlSecret,
            setting: Setting::Url,
        })
    );
}
