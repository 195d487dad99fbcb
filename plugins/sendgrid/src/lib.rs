//! The `sendgrid` connector plugin: decodes SendGrid Event Webhook
//! deliveries (delivered, open, click, bounce, dropped, ...) into canonical
//! events, so a campaign's email sends can be followed after release. It
//! does not poll and performs no actions. Config keys and event types are
//! in `docs/connectors.md`.

use converge_plugin_sdk::event::{
    CloudEvent, campaign_from_labels, campaign_subject, event_id, rfc3339_from_secs,
};
use converge_plugin_sdk::{Connector, ConnectorInfo, Inbound, PluginError};
use serde::Deserialize;
use serde_json::{Map, Value};

const EVENT_TYPES: &[&str] = &[
    "sendgrid.message.processed",
    "sendgrid.message.deferred",
    "sendgrid.message.delivered",
    "sendgrid.message.opened",
    "sendgrid.message.clicked",
    "sendgrid.message.bounced",
    "sendgrid.message.dropped",
    "sendgrid.message.spam_reported",
    "sendgrid.message.unsubscribed",
    "sendgrid.message.group_unsubscribed",
    "sendgrid.message.group_resubscribed",
];

/// Members of a SendGrid event copied into the event's data as they are.
const FIELDS: &[&str] = &[
    "email",
    "sg_message_id",
    "smtp-id",
    "category",
    "reason",
    "status",
    "response",
    "attempt",
    "url",
    "useragent",
    "ip",
    "asm_group_id",
    "marketing_campaign_id",
    "marketing_campaign_name",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    campaign: CampaignMapping,
    /// The campaign channel these events are about (`data.channel`, so
    /// they land on the campaign's channel state).
    #[serde(default = "default_channel")]
    channel: String,
    #[serde(default = "yes")]
    include_raw: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignMapping {
    /// A custom arg (unique arg) of the send naming the campaign.
    #[serde(default)]
    custom_arg: Option<String>,
    /// Categories like `campaign:spring-launch` name the campaign.
    #[serde(default)]
    category_prefix: Option<String>,
}

fn default_channel() -> String {
    "email".to_owned()
}

fn yes() -> bool {
    true
}

/// SendGrid's event name as a past-tense verb.
fn verb(event: &str) -> String {
    match event {
        "open" => "opened".to_owned(),
        "click" => "clicked".to_owned(),
        "bounce" => "bounced".to_owned(),
        "spamreport" => "spam_reported".to_owned(),
        "unsubscribe" => "unsubscribed".to_owned(),
        "group_unsubscribe" => "group_unsubscribed".to_owned(),
        "group_resubscribe" => "group_resubscribed".to_owned(),
        other => other.to_owned(),
    }
}

impl Config {
    fn campaign(&self, event: &Value) -> Option<String> {
        let mapping = &self.campaign;
        let from_arg = mapping
            .custom_arg
            .as_deref()
            .and_then(|arg| match event.get(arg)? {
                Value::String(s) => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|name| !name.is_empty());
        let categories: Vec<&str> = match event.get("category") {
            Some(Value::String(c)) => vec![c.as_str()],
            Some(Value::Array(cs)) => cs.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        from_arg.or_else(|| {
            mapping
                .category_prefix
                .as_deref()
                .and_then(|prefix| campaign_from_labels(categories.iter().copied(), prefix))
        })
    }
}

fn event(config: &Config, event: &Value) -> Result<CloudEvent, PluginError> {
    let name = event.get("event").and_then(Value::as_str).ok_or_else(|| {
        PluginError::InvalidInput("SendGrid event without an event name".to_owned())
    })?;
    let message = event
        .get("sg_message_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let item = format!("sendgrid-message/{message}");
    let mut data = Map::new();
    data.insert("key".into(), message.into());
    data.insert("item".into(), item.clone().into());
    data.insert("event".into(), name.into());
    for field in FIELDS {
        if let Some(value) = event.get(*field) {
            data.insert(field.replace('-', "_"), value.clone());
        }
    }
    // A bounce's `type` is `bounce` or `blocked`.
    if let Some(kind) = event.get("type") {
        data.insert("bounce_type".into(), kind.clone());
    }
    let campaign = config.campaign(event);
    let subject = match campaign.as_deref().and_then(campaign_subject) {
        Some(subject) => {
            data.insert("campaign".into(), campaign.into());
            data.insert("channel".into(), config.channel.clone().into());
            subject
        }
        None => item,
    };
    if config.include_raw {
        data.insert("raw".into(), event.clone());
    }
    // sg_event_id is unique per event and the same on a redelivery; the
    // event name keeps ids apart where a sender reuses one.
    let id = match event.get("sg_event_id").and_then(Value::as_str) {
        Some(sg_event_id) => format!("{name}:{sg_event_id}"),
        None => event_id("sendgrid-", &[event.to_string().as_bytes()]),
    };
    Ok(CloudEvent::new(
        id,
        "https://sendgrid.com",
        format!("sendgrid.message.{}", verb(name)),
    )
    .subject(subject)
    .time_opt(
        event
            .get("timestamp")
            .and_then(Value::as_i64)
            .and_then(rfc3339_from_secs),
    )
    .data(Value::Object(data)))
}

fn decode(config: &Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
    let events: Vec<Value> = inbound.json()?;
    events.iter().map(|e| event(config, e)).collect()
}

struct SendGrid;

impl Connector for SendGrid {
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

converge_plugin_sdk::export_connector_plugin!(SendGrid);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/webhooks/sendgrid/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn config(json: Value) -> Config {
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn decode_body(config: &Config, body: Vec<u8>) -> Vec<Value> {
        let inbound = Inbound {
            hook: "sendgrid".into(),
            method: "POST".into(),
            headers: vec![],
            body,
        };
        decode(config, &inbound)
            .unwrap()
            .iter()
            .map(CloudEvent::to_value)
            .collect()
    }

    #[test]
    fn every_documented_event_type_decodes() {
        let events = decode_body(
            &config(json!({})),
            fixture("event_webhook.all_event_types.json"),
        );
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, EVENT_TYPES);
        let ids: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids.len(),
            events.len(),
            "the docs reuse one sg_event_id; ids stay apart"
        );
        assert!(
            events
                .iter()
                .all(|e| e["subject"] == "sendgrid-message/sg_message_id")
        );
    }

    #[test]
    fn single_events_carry_what_rules_read() {
        let config = config(json!({}));
        let delivered = &decode_body(&config, fixture("event_webhook.delivered.json"))[0];
        assert_eq!(delivered["type"], "sendgrid.message.delivered");
        assert_eq!(delivered["id"], "delivered:rWVYmVk90MjZJ9iohOBa3w==");
        assert_eq!(delivered["time"], "2017-12-15T00:59:29.000Z");
        assert_eq!(
            delivered["subject"],
            "sendgrid-message/14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
        );
        assert_eq!(delivered["data"]["response"], "250 OK");
        assert_eq!(
            delivered["data"]["smtp_id"],
            "<14c5d75ce93.dfd.64b469@ismtpd-555>"
        );

        let open = &decode_body(&config, fixture("event_webhook.open.json"))[0];
        assert_eq!(open["type"], "sendgrid.message.opened");
        let click = &decode_body(&config, fixture("event_webhook.click.json"))[0];
        assert_eq!(click["type"], "sendgrid.message.clicked");
        assert_eq!(click["data"]["url"], "http://www.sendgrid.com/");
        let bounce = &decode_body(&config, fixture("event_webhook.bounce.json"))[0];
        assert_eq!(bounce["type"], "sendgrid.message.bounced");
        assert_eq!(bounce["data"]["reason"], "500 unknown recipient");
        let blocked = &decode_body(&config, fixture("event_webhook.bounce_type_blocked.json"))[0];
        assert_eq!(blocked["type"], "sendgrid.message.bounced");
        assert_eq!(blocked["data"]["bounce_type"], "blocked");
        let dropped = &decode_body(&config, fixture("event_webhook.dropped.json"))[0];
        assert_eq!(dropped["type"], "sendgrid.message.dropped");
        assert_eq!(dropped["data"]["reason"], "Bounced Address");
    }

    #[test]
    fn a_category_or_custom_arg_maps_the_send_to_its_campaign() {
        let by_category = config(json!({"campaign": {"category_prefix": "cat "}}));
        let event = &decode_body(&by_category, fixture("event_webhook.delivered.json"))[0];
        assert_eq!(event["subject"], "campaign/facts");
        assert_eq!(event["data"]["campaign"], "facts");
        assert_eq!(event["data"]["channel"], "email");

        let by_arg = config(
            json!({"campaign": {"custom_arg": "campaign_id", "category_prefix": "cat "}, "channel": "newsletter"}),
        );
        let body = json!([{"event": "open", "sg_event_id": "e1", "sg_message_id": "m1", "timestamp": 1, "campaign_id": "spring-launch", "category": ["x"]}]);
        let event = &decode_body(&by_arg, body.to_string().into_bytes())[0];
        assert_eq!(event["subject"], "campaign/spring-launch");
        assert_eq!(event["data"]["channel"], "newsletter");
    }

    #[test]
    fn the_signed_known_answer_body_decodes() {
        let vector: Value =
            serde_json::from_slice(&fixture("signed_event_webhook.known_answer.json")).unwrap();
        let body = vector["raw_body"].as_str().unwrap().as_bytes().to_vec();
        let events = decode_body(&config(json!({"include_raw": false})), body);
        assert_eq!(events[0]["type"], "sendgrid.message.dropped");
        assert!(events[0]["data"].get("raw").is_none());
    }

    #[test]
    fn an_event_without_a_name_is_invalid_input() {
        let inbound = Inbound {
            hook: "h".into(),
            method: "POST".into(),
            headers: vec![],
            body: br#"[{"email": "a@b"}]"#.to_vec(),
        };
        assert!(matches!(
            decode(&config(json!({})), &inbound),
            Err(PluginError::InvalidInput(_))
        ));
    }
}
