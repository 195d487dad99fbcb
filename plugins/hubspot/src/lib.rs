//! The `hubspot` connector plugin: decodes HubSpot webhook deliveries
//! (batches of CRM events: creations, deletions, property changes) into
//! canonical events. It does not poll and performs no actions. Config keys
//! and event types are in `docs/connectors.md`.

use converge_plugin_sdk::event::{CloudEvent, campaign_subject, event_id, rfc3339_from_millis};
use converge_plugin_sdk::{Connector, ConnectorInfo, Inbound, PluginError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

const EVENT_TYPES: &[&str] = &[
    "hubspot.contact.created",
    "hubspot.contact.deleted",
    "hubspot.contact.property_changed",
    "hubspot.company.property_changed",
    "hubspot.deal.property_changed",
    "hubspot.<object>.<change>",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    campaign: CampaignMapping,
    #[serde(default = "yes")]
    include_raw: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignMapping {
    /// A CRM property naming the campaign: a change of this property is
    /// about the campaign its new value names.
    #[serde(default)]
    property: Option<String>,
}

fn yes() -> bool {
    true
}

/// `propertyChange` -> `property_changed`, `creation` -> `created`.
fn change(kind: &str) -> String {
    match kind {
        "creation" => "created".to_owned(),
        "deletion" => "deleted".to_owned(),
        "privacyDeletion" => "privacy_deleted".to_owned(),
        "propertyChange" => "property_changed".to_owned(),
        "associationChange" => "association_changed".to_owned(),
        "merge" => "merged".to_owned(),
        "restore" => "restored".to_owned(),
        other => {
            let mut snake = String::new();
            for c in other.chars() {
                if c.is_ascii_uppercase() {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            snake
        }
    }
}

fn event(config: &Config, event: &Value) -> Result<CloudEvent, PluginError> {
    // The docs' example names the field eventType; deliveries name it
    // subscriptionType.
    let subscription = event
        .get("subscriptionType")
        .or_else(|| event.get("eventType"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            PluginError::InvalidInput("HubSpot event without subscriptionType".to_owned())
        })?;
    let (object, kind) = subscription
        .split_once('.')
        .unwrap_or((subscription, "changed"));
    let object_id = match event.get("objectId") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(id)) => id.to_string(),
        _ => String::new(),
    };
    let item = format!("hubspot-{object}/{object_id}");
    let property = event.get("propertyName").and_then(Value::as_str);
    let value = event.get("propertyValue").cloned().unwrap_or(Value::Null);

    let mut data = Map::new();
    data.insert("key".into(), object_id.clone().into());
    data.insert("item".into(), item.clone().into());
    data.insert("object_type".into(), object.into());
    data.insert(
        "portal_id".into(),
        event.get("portalId").cloned().unwrap_or(Value::Null),
    );
    data.insert(
        "change_source".into(),
        event.get("changeSource").cloned().unwrap_or(Value::Null),
    );
    if let Some(property) = property {
        data.insert("property".into(), property.into());
        data.insert("value".into(), value.clone());
        data.insert("changes".into(), json!([{"field": property, "to": value}]));
    }
    let campaign = config
        .campaign
        .property
        .as_deref()
        .filter(|p| property == Some(*p))
        .and_then(|_| value.as_str());
    let subject = match campaign.and_then(campaign_subject) {
        Some(subject) => {
            data.insert("campaign".into(), campaign.into());
            subject
        }
        None => item,
    };
    if config.include_raw {
        data.insert("raw".into(), event.clone());
    }
    // eventId alone is not guaranteed unique; the event without its
    // attempt number is the same on every redelivery.
    let mut identity = event.clone();
    if let Some(fields) = identity.as_object_mut() {
        fields.remove("attemptNumber");
    }
    let id = event_id("hubspot-", &[identity.to_string().as_bytes()]);
    let source = match event.get("portalId") {
        Some(portal) => format!("/hubspot/portals/{portal}"),
        None => "/hubspot".to_owned(),
    };
    Ok(
        CloudEvent::new(id, source, format!("hubspot.{object}.{}", change(kind)))
            .subject(subject)
            .time_opt(
                event
                    .get("occurredAt")
                    .and_then(Value::as_i64)
                    .and_then(rfc3339_from_millis),
            )
            .data(Value::Object(data)),
    )
}

fn decode(config: &Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
    let events: Vec<Value> = inbound.json()?;
    events.iter().map(|e| event(config, e)).collect()
}

struct HubSpot;

impl Connector for HubSpot {
    fn info() -> ConnectorInfo {
        ConnectorInfo::new(EVENT_TYPES).decodes()
    }

    fn decode(inbound: Inbound) -> Result<Vec<String>, PluginError> {
        let config: Config = converge_plugin_sdk::config()?;
        Ok(decode(&config, &inbound)?
            .iter()
            .map(CloudEvent::to_json)
            .collect())
    }
}

converge_plugin_sdk::export_connector_plugin!(HubSpot);

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS_EXAMPLE: &str = include_str!(
        "../../../tests/fixtures/webhooks/hubspot/webhooks_v3.contact_propertyChange_and_creation.docs_example.json"
    );
    const SIGNED_BODY: &str = include_str!(
        "../../../tests/fixtures/webhooks/hubspot/signature_v1.docs_example_body.json"
    );

    fn config(json: Value) -> Config {
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn decode_body(config: &Config, body: &str) -> Vec<Value> {
        let inbound = Inbound {
            hook: "hubspot".into(),
            method: "POST".into(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        decode(config, &inbound)
            .unwrap()
            .iter()
            .map(CloudEvent::to_value)
            .collect()
    }

    #[test]
    fn the_docs_batch_is_a_property_change_and_a_creation() {
        let events = decode_body(&config(json!({})), DOCS_EXAMPLE);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["type"], "hubspot.contact.property_changed");
        assert_eq!(events[0]["subject"], "hubspot-contact/1246965");
        assert_eq!(events[0]["source"], "/hubspot/portals/33");
        assert_eq!(events[0]["time"], "2016-05-02T19:11:47.945Z");
        let data = &events[0]["data"];
        assert_eq!(data["property"], "lifecyclestage");
        assert_eq!(data["value"], "subscriber");
        assert_eq!(data["change_source"], "ACADEMY");
        assert_eq!(
            data["changes"],
            json!([{"field": "lifecyclestage", "to": "subscriber"}])
        );
        assert_eq!(events[1]["type"], "hubspot.contact.created");
        assert_eq!(events[1]["subject"], "hubspot-contact/1246978");
        assert_ne!(events[0]["id"], events[1]["id"]);
    }

    #[test]
    fn a_change_of_the_campaign_property_is_about_that_campaign() {
        let events = decode_body(
            &config(json!({"campaign": {"property": "lifecyclestage"}})),
            DOCS_EXAMPLE,
        );
        assert_eq!(events[0]["subject"], "campaign/subscriber");
        assert_eq!(events[0]["data"]["campaign"], "subscriber");
        assert_eq!(events[1]["subject"], "hubspot-contact/1246978");
    }

    #[test]
    fn real_deliveries_name_the_type_subscription_type() {
        let events = decode_body(&config(json!({"include_raw": false})), SIGNED_BODY);
        assert_eq!(events[0]["type"], "hubspot.contact.created");
        assert_eq!(events[0]["source"], "/hubspot/portals/62515");
        assert!(events[0]["data"].get("raw").is_none());
    }

    #[test]
    fn a_redelivery_keeps_its_id() {
        let first = decode_body(&config(json!({})), SIGNED_BODY);
        let retried = decode_body(
            &config(json!({})),
            &SIGNED_BODY.replace("\"attemptNumber\":0", "\"attemptNumber\":3"),
        );
        assert_eq!(first[0]["id"], retried[0]["id"]);
    }

    #[test]
    fn bodies_that_are_not_event_batches_are_invalid_input() {
        let inbound = Inbound {
            hook: "h".into(),
            method: "POST".into(),
            headers: vec![],
            body: br#"{"a": 1}"#.to_vec(),
        };
        assert!(matches!(
            decode(&config(json!({})), &inbound),
            Err(PluginError::InvalidInput(_))
        ));
        let inbound = Inbound {
            body: br#"[{"objectId": 1}]"#.to_vec(),
            ..inbound
        };
        assert!(
            matches!(decode(&config(json!({})), &inbound), Err(PluginError::InvalidInput(m)) if m.contains("subscriptionType"))
        );
        assert_eq!(change("associationChange"), "association_changed");
        assert_eq!(change("someNewKind"), "some_new_kind");
    }
}
