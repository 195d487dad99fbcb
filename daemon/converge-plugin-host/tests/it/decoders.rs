//! The decode-only connectors in the host: `hubspot` and `sendgrid` on the
//! real fixtures; they offer no poll and no actions.

use converge_plugin_host::{CallFailure, DecodeInput, Grants, Plugin, PluginLimits, PollInput};
use serde_json::{Value, json};

use crate::support::{action, fixture, host, load, spec};

async fn plugin(name: &str) -> Plugin {
    load(
        &host(),
        spec(name, Grants::default(), PluginLimits::default()),
    )
    .await
}

fn delivery(tool: &str, file: &str) -> DecodeInput {
    DecodeInput {
        hook: tool.into(),
        method: "POST".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: fixture(tool, file),
    }
}

fn events(json: &[String]) -> Vec<Value> {
    json.iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hubspot_decodes_property_changes_and_creations() {
    let plugin = plugin("hubspot").await;
    let connector = plugin.connector().expect("a connector");
    assert!(connector.decodes && !connector.polls && connector.actions.is_empty());
    let config = json!({"campaign": {"property": "lifecyclestage"}}).to_string();
    let input = delivery(
        "hubspot",
        "webhooks_v3.contact_propertyChange_and_creation.docs_example.json",
    );
    let decoded = events(&plugin.decode(input, &config).await.unwrap());
    assert_eq!(decoded.len(), 2);
    assert_eq!(decoded[0]["type"], "hubspot.contact.property_changed");
    assert_eq!(decoded[0]["subject"], "campaign/subscriber");
    assert_eq!(decoded[1]["type"], "hubspot.contact.created");

    let failure = plugin.poll(PollInput::default(), "{}").await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::InvalidInput(m) if m.contains("does not support poll")),
        "{failure:?}"
    );
    let failure = plugin.execute(action("act-1"), "{}").await.unwrap_err();
    assert!(
        matches!(&failure, CallFailure::InvalidInput(m) if m.contains("does not perform actions")),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sendgrid_follows_a_campaigns_sends() {
    let plugin = plugin("sendgrid").await;
    let config = json!({"campaign": {"category_prefix": "cat "}}).to_string();
    for (file, event_type) in [
        ("event_webhook.delivered.json", "sendgrid.message.delivered"),
        ("event_webhook.open.json", "sendgrid.message.opened"),
        ("event_webhook.click.json", "sendgrid.message.clicked"),
        ("event_webhook.bounce.json", "sendgrid.message.bounced"),
        (
            "event_webhook.bounce_type_blocked.json",
            "sendgrid.message.bounced",
        ),
        ("event_webhook.dropped.json", "sendgrid.message.dropped"),
    ] {
        let decoded = events(
            &plugin
                .decode(delivery("sendgrid", file), &config)
                .await
                .unwrap(),
        );
        assert_eq!(decoded.len(), 1, "{file}");
        assert_eq!(decoded[0]["type"], event_type, "{file}");
        assert_eq!(decoded[0]["subject"], "campaign/facts", "{file}");
        assert_eq!(decoded[0]["data"]["channel"], "email", "{file}");
    }
    let all = plugin
        .decode(
            delivery("sendgrid", "event_webhook.all_event_types.json"),
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 11);

    let mut broken = delivery("sendgrid", "event_webhook.open.json");
    broken.body = b"[{".to_vec();
    let failure = plugin.decode(broken, "{}").await.unwrap_err();
    assert!(
        matches!(failure, CallFailure::InvalidInput(_)),
        "{failure:?}"
    );
}
