//! HubSpot: the docs' batch of two CRM events, signed with the v3 scheme
//! (method, registered URL, body and timestamp), decoded one event each,
//! a property change on the campaign its value names; a retry of the batch
//! (attempt number increased) is the same events.

use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;

use super::{
    decoder_plugin, deliver, fixture, fixture_json, hmac_sha256, notifications, processed_trails,
    statuses,
};
use crate::support::Workspace;

const SECRET: &str = "hubspot-app-client-secret";
const SECRET_ENV: &str = "CONVERGE_TEST_HUBSPOT_SECRET";
/// The target URL as registered in the app's settings, which v3 signs.
const TARGET: &str = "https://converge.example.com/hooks/hubspot";
const BATCH: &str = "hubspot/webhooks_v3.contact_propertyChange_and_creation.docs_example.json";

fn v3_headers(body: &[u8], timestamp_ms: i64) -> Vec<(&'static str, String)> {
    let timestamp = timestamp_ms.to_string();
    let signature = hmac_sha256(
        SECRET.as_bytes(),
        &[b"POST", TARGET.as_bytes(), body, timestamp.as_bytes()],
    );
    vec![
        ("content-type", "application/json".into()),
        (
            "x-hubspot-signature-v3",
            base64::engine::general_purpose::STANDARD.encode(signature),
        ),
        ("x-hubspot-request-timestamp", timestamp),
    ]
}

fn borrowed<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hubspot_batch_is_verified_with_v3_decoded_per_event_and_a_retry_is_a_duplicate() {
    // The docs' batch changes `lifecyclestage`; mapped as the campaign
    // property, its new value names the campaign.
    let ws = Workspace::new(
        &[(
            "crm",
            r#"
if event.type == "hubspot.contact.property_changed" {
    notify("crm", `contact ${event.data.key}: ${event.data.property} = ${event.data.value} (${event.data.change_source})`);
}
"#,
        )],
        &format!(
            r#"{plugin}
[hooks.hubspot]
verify = "hubspot-v3"
secret_env = "{SECRET_ENV}"
url = "{TARGET}"
decode = "hubspot"
config = {{ campaign = {{ property = "lifecyclestage" }} }}
"#,
            plugin = decoder_plugin("hubspot"),
        ),
    );
    let daemon = ws.start_with_env(&[(SECRET_ENV, SECRET)]);
    let body = fixture(BATCH);
    let headers = v3_headers(&body, now_ms());
    let answered = deliver(&daemon, "hubspot", &borrowed(&headers), body.clone()).await;
    assert_eq!(statuses(&answered), ["accepted", "accepted"]);
    let trails = processed_trails(&daemon, &answered).await;
    assert_eq!(trails[0]["type"], "hubspot.contact.property_changed");
    assert_eq!(trails[0]["subject"], "campaign/subscriber");
    assert_eq!(
        notifications(&trails[0]),
        ["contact 1246965: lifecyclestage = subscriber (ACADEMY)"]
    );
    assert_eq!(trails[1]["type"], "hubspot.contact.created");
    assert_eq!(trails[1]["subject"], "hubspot-contact/1246978");
    for trail in &trails {
        assert_eq!(trail["source"], "/hubspot/portals/33");
    }

    // HubSpot retries with the attempt number increased: no delivery id,
    // but the same events.
    let mut retried = fixture_json(BATCH);
    for event in retried.as_array_mut().unwrap() {
        event["attemptNumber"] = Value::from(1);
    }
    let retried = serde_json::to_vec(&retried).unwrap();
    let again = deliver(
        &daemon,
        "hubspot",
        &borrowed(&v3_headers(&retried, now_ms())),
        retried,
    )
    .await;
    assert_eq!(statuses(&again), ["duplicate", "duplicate"]);
    assert_eq!(again[0]["id"], answered[0]["id"]);

    // Refused: a replay older than the 5 minutes, and a v1 signature
    // (the version is the config's, not the request's).
    let stale = v3_headers(&body, now_ms() - 6 * 60 * 1000);
    let v1 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        [SECRET.as_bytes(), &body].concat(),
    ));
    for headers in [
        borrowed(&stale),
        vec![
            ("content-type", "application/json"),
            ("x-hubspot-signature", v1.as_str()),
            ("x-hubspot-signature-version", "v1"),
        ],
    ] {
        let (status, _, answer) = daemon
            .request(Method::POST, "/hooks/hubspot", &headers, body.clone())
            .await;
        assert_eq!(status, 401, "{answer}");
    }
    assert_eq!(daemon.metric("converge_journal_events").await, 2.0);
}
