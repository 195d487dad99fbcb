//! Mailchimp's audience webhooks decoded into canonical events: subscribes,
//! unsubscribes, profile updates, cleaned addresses, email changes and
//! campaign sending.
//!
//! Mailchimp POSTs a form (`application/x-www-form-urlencoded`): `type`,
//! `fired_at` (`YYYY-MM-DD HH:MM:SS`, UTC) and bracketed `data[...]` keys
//! (`data[merges][FNAME]`), read here into nested objects. It signs
//! nothing, so the hook checks a secret in its URL (`verify =
//! "url-secret"`), and it checks a new webhook's URL with a GET, which
//! carries no event.
//!
//! A member is `mailchimp-member/<audience>/<subscriber hash>`: the MD5 of
//! the lowercased address, Mailchimp's own id for a member in its API
//! (the form's `data[id]` is an older id, which cleaned addresses lack).
//! An event that names a campaign the `campaigns` table maps (a campaign
//! sent, an unsubscribe from it) is about that converge campaign, on its
//! email channel.

use std::collections::BTreeMap;

use channel_target::Ids;
use converge_plugin_sdk::event::{CloudEvent, campaign_subject, event_id};
use converge_plugin_sdk::{Inbound, PluginError};
use md5::{Digest as _, Md5};
use serde::Deserialize;
use serde_json::{Map, Value};

pub const EVENT_TYPES: &[&str] = &[
    "mailchimp.member.subscribed",
    "mailchimp.member.unsubscribed",
    "mailchimp.member.profile_updated",
    "mailchimp.member.email_changed",
    "mailchimp.member.cleaned",
    "mailchimp.campaign.sent",
    "mailchimp.campaign.<status>",
];

/// A hook's `config`: how deliveries map onto converge campaigns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Converge campaign name -> its Mailchimp campaign id(s), the same
    /// table as an action route's.
    #[serde(default)]
    campaigns: BTreeMap<String, Ids>,
    /// `data.channel` of the events about a converge campaign.
    #[serde(default = "email")]
    channel: String,
    #[serde(default = "yes")]
    include_raw: bool,
}

fn email() -> String {
    "email".to_owned()
}

fn yes() -> bool {
    true
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidInput(message.into())
}

/// One delivery to its event; Mailchimp's URL check (a GET) to none.
pub fn decode(config: &Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
    if inbound.method.eq_ignore_ascii_case("GET") {
        return Ok(Vec::new());
    }
    if let Some(content_type) = inbound.header("content-type")
        && !content_type
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    {
        return Err(invalid(format!(
            "hook {}: Mailchimp posts a form (application/x-www-form-urlencoded), not {content_type}",
            inbound.hook
        )));
    }
    let form = form(&inbound.body)?;
    let kind = text(&form, "type").ok_or_else(|| {
        invalid(format!(
            "hook {}: not a Mailchimp audience webhook: the form has no `type`",
            inbound.hook
        ))
    })?;
    let time =
        match text(&form, "fired_at") {
            Some(fired_at) => Some(rfc3339(fired_at).ok_or_else(|| {
                invalid(format!("fired_at `{fired_at}` is not YYYY-MM-DD HH:MM:SS"))
            })?),
            None => None,
        };
    let fields = match form.get("data") {
        Some(Value::Object(fields)) => fields.clone(),
        None => Map::new(),
        Some(_) => return Err(invalid("`data` is not a set of `data[...]` fields")),
    };
    let audience = text(&fields, "list_id").unwrap_or_default();
    let (noun, verb, item, mut data) = match kind {
        "campaign" => campaign(&fields)?,
        _ => member(kind, &fields)?,
    };
    data.insert("item".into(), item.clone().into());
    if !audience.is_empty() {
        data.insert("audience".into(), audience.into());
    }
    let mailchimp_campaign = match kind {
        "campaign" => text(&fields, "id"),
        _ => text(&fields, "campaign_id"),
    };
    let campaign = mailchimp_campaign
        .and_then(|id| converge_campaign(config, id))
        .and_then(|name| Some((name, campaign_subject(name)?)));
    let subject = match campaign {
        Some((name, subject)) => {
            data.insert("campaign".into(), name.into());
            data.insert("channel".into(), config.channel.clone().into());
            subject
        }
        None => item,
    };
    if config.include_raw {
        data.insert("raw".into(), Value::Object(form));
    }
    let source = if audience.is_empty() {
        "/mailchimp".to_owned()
    } else {
        format!("/mailchimp/audiences/{audience}")
    };
    // Mailchimp sends no delivery id; a retry sends the same form.
    let id = event_id("mailchimp-", &[&inbound.body]);
    Ok(vec![
        CloudEvent::new(id, source, format!("mailchimp.{noun}.{verb}"))
            .subject(subject)
            .time_opt(time)
            .data(Value::Object(data)),
    ])
}

type Decoded = (&'static str, String, String, Map<String, Value>);

/// A campaign's sending status: `mailchimp.campaign.sent` and the like.
fn campaign(fields: &Map<String, Value>) -> Result<Decoded, PluginError> {
    let id = text(fields, "id").ok_or_else(|| invalid("a campaign event without data[id]"))?;
    let status = text(fields, "status").unwrap_or_default();
    let verb = if !status.is_empty() && status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        status.to_owned()
    } else {
        "changed".to_owned()
    };
    let mut data = Map::new();
    data.insert("key".into(), id.into());
    copy(fields, "subject", &mut data, "title");
    copy(fields, "status", &mut data, "status");
    copy(fields, "reason", &mut data, "reason");
    Ok(("campaign", verb, format!("mailchimp-campaign/{id}"), data))
}

/// A member's change: subscribed, unsubscribed, profile updated, email
/// changed, cleaned.
fn member(kind: &str, fields: &Map<String, Value>) -> Result<Decoded, PluginError> {
    let (verb, status) = match kind {
        "subscribe" => ("subscribed", Some("subscribed")),
        "unsubscribe" => ("unsubscribed", Some("unsubscribed")),
        "profile" => ("profile_updated", None),
        "upemail" => ("email_changed", None),
        "cleaned" => ("cleaned", Some("cleaned")),
        other => {
            return Err(invalid(format!(
                "unknown Mailchimp webhook type `{}`: expected subscribe, unsubscribe, profile, \
                 upemail, cleaned or campaign",
                other.escape_debug()
            )));
        }
    };
    let address = match kind {
        "upemail" => text(fields, "new_email"),
        _ => text(fields, "email"),
    }
    .ok_or_else(|| {
        invalid(format!(
            "a `{kind}` event without the member's address (data[{}])",
            if kind == "upemail" {
                "new_email"
            } else {
                "email"
            }
        ))
    })?;
    let audience = text(fields, "list_id").unwrap_or("-");
    let hash = subscriber_hash(address);
    let mut data = Map::new();
    data.insert("key".into(), hash.clone().into());
    data.insert("email".into(), address.into());
    if let Some(status) = status {
        data.insert("status".into(), status.into());
    }
    copy(fields, "id", &mut data, "member_id");
    copy(fields, "new_id", &mut data, "member_id");
    copy(fields, "old_email", &mut data, "old_email");
    copy(fields, "action", &mut data, "action");
    copy(fields, "reason", &mut data, "reason");
    copy(fields, "campaign_id", &mut data, "campaign_id");
    if let Some(merges) = fields.get("merges") {
        data.insert("merges".into(), merges.clone());
    }
    Ok((
        "member",
        verb.to_owned(),
        format!("mailchimp-member/{audience}/{hash}"),
        data,
    ))
}

/// Mailchimp's id for a member in its API: the MD5 of the lowercased
/// address, in hex.
fn subscriber_hash(address: &str) -> String {
    let digest = Md5::digest(address.trim().to_lowercase().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The converge campaign whose Mailchimp campaigns include `id`.
fn converge_campaign<'c>(config: &'c Config, id: &str) -> Option<&'c str> {
    config
        .campaigns
        .iter()
        .find(|(_, ids)| ids.contains(id))
        .map(|(name, _)| name.as_str())
}

/// A non-empty text member.
fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn copy(fields: &Map<String, Value>, from: &str, data: &mut Map<String, Value>, to: &str) {
    if let Some(value) = text(fields, from) {
        data.insert(to.into(), value.into());
    }
}

/// `2009-03-26 21:35:57` (UTC) as RFC 3339.
fn rfc3339(fired_at: &str) -> Option<String> {
    let (date, time) = fired_at.trim().split_once(' ')?;
    let written = format!("{date}T{time}Z");
    channel_target::parse_rfc3339(&written).map(|_| written)
}

/// The form's fields, `data[merges][FNAME]` nested as `data.merges.FNAME`.
/// A field given twice keeps its last value, as PHP reads a form (Mailchimp's
/// own shape of it).
fn form(body: &[u8]) -> Result<Map<String, Value>, PluginError> {
    let mut root = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let path = path(&name);
        let (last, parents) = path.split_last().expect("a path has at least one part");
        let mut object = &mut root;
        for parent in parents {
            let child = object
                .entry(parent.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            object = child.as_object_mut().ok_or_else(|| {
                invalid(format!(
                    "form field `{}` is inside `{parent}`, which has a value of its own",
                    name.escape_debug()
                ))
            })?;
        }
        if object.get(*last).is_some_and(Value::is_object) {
            return Err(invalid(format!(
                "form field `{}` has a value and fields of its own",
                name.escape_debug()
            )));
        }
        object.insert(last.to_string(), Value::String(value.into_owned()));
    }
    Ok(root)
}

/// `data[merges][FNAME]` -> `["data", "merges", "FNAME"]`. A name whose
/// brackets do not close is one key, as written.
fn path(name: &str) -> Vec<&str> {
    let Some(open) = name.find('[') else {
        return vec![name];
    };
    let mut parts = vec![&name[..open]];
    let mut rest = &name[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return vec![name];
        };
        parts.push(&inner[..close]);
        rest = &inner[close + 1..];
    }
    if rest.is_empty() { parts } else { vec![name] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The published subscribe delivery: its field/value pairs, as JSON.
    const SUBSCRIBE: &str = include_str!(
        "../../../tests/fixtures/webhooks/mailchimp/marketing_webhook.subscribe.form_fields.json"
    );

    /// A form body of these pairs, encoded as Mailchimp sends it.
    fn body(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            form.append_pair(name, value);
        }
        form.finish().into_bytes()
    }

    fn fixture_body() -> Vec<u8> {
        let fields: Map<String, Value> = serde_json::from_str(SUBSCRIBE).unwrap();
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str().unwrap()))
            .collect();
        body(&pairs)
    }

    fn config(json: Value) -> Config {
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    fn post(body: Vec<u8>) -> Inbound {
        Inbound {
            hook: "mailchimp".into(),
            method: "POST".into(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body,
        }
    }

    fn decoded(config: &Config, body: Vec<u8>) -> Value {
        let events = decode(config, &post(body)).unwrap();
        assert_eq!(events.len(), 1);
        events[0].to_value()
    }

    #[test]
    fn the_published_subscribe_is_about_the_member_by_its_subscriber_hash() {
        let event = decoded(&config(json!({})), fixture_body());
        assert_eq!(event["type"], "mailchimp.member.subscribed");
        // MD5 of "api@mailchimp.com".
        let hash = "6def22f266be37015519943ce0c3ae6b";
        assert_eq!(hash, subscriber_hash("API@mailchimp.com"));
        assert_eq!(
            event["subject"],
            format!("mailchimp-member/a6b5da1054/{hash}")
        );
        assert_eq!(event["source"], "/mailchimp/audiences/a6b5da1054");
        assert_eq!(event["time"], "2009-03-26T21:35:57Z");
        let data = &event["data"];
        assert_eq!(data["key"], hash);
        assert_eq!(data["email"], "api@mailchimp.com");
        assert_eq!(data["status"], "subscribed");
        assert_eq!(data["member_id"], "8a25ff1d98");
        assert_eq!(data["audience"], "a6b5da1054");
        assert_eq!(
            data["merges"],
            json!({"EMAIL": "api@mailchimp.com", "FNAME": "MailChimp", "LNAME": "API", "INTERESTS": "Group1,Group2"})
        );
        assert_eq!(data["raw"]["data"]["ip_signup"], "10.20.10.30");
        assert_eq!(data["raw"]["fired_at"], "2009-03-26 21:35:57");
        assert!(data.get("campaign").is_none());
    }

    #[test]
    fn the_same_delivery_again_has_the_same_id_and_another_has_another() {
        let config = config(json!({}));
        let first = decoded(&config, fixture_body());
        assert_eq!(first["id"], decoded(&config, fixture_body())["id"]);
        let other = fixture_body()
            .into_iter()
            .chain(b"&data%5Bmerges%5D%5BFNAME%5D=Ana".iter().copied())
            .collect();
        assert_ne!(first["id"], decoded(&config, other)["id"]);
    }

    #[test]
    fn a_campaign_sent_lands_on_the_converge_campaign_the_table_maps_it_to() {
        let config = config(json!({
            "campaigns": {"spring-launch": ["b03bfc5a93", "4d2b1d8f70"], "fall": "0c5b3fa1a2"},
        }));
        let sent = body(&[
            ("type", "campaign"),
            ("fired_at", "2026-03-02 09:00:12"),
            ("data[id]", "4d2b1d8f70"),
            ("data[subject]", "Spring is here: 20% off"),
            ("data[status]", "sent"),
            ("data[reason]", ""),
            ("data[list_id]", "a6b5da1054"),
        ]);
        let event = decoded(&config, sent);
        assert_eq!(event["type"], "mailchimp.campaign.sent");
        assert_eq!(event["subject"], "campaign/spring-launch");
        let data = &event["data"];
        assert_eq!(data["campaign"], "spring-launch");
        assert_eq!(data["channel"], "email");
        assert_eq!(data["item"], "mailchimp-campaign/4d2b1d8f70");
        assert_eq!(data["key"], "4d2b1d8f70");
        assert_eq!(data["title"], "Spring is here: 20% off");
        assert_eq!(data["status"], "sent");
        assert!(data.get("reason").is_none(), "an empty reason is left out");

        // A campaign the table does not name is about itself; a status
        // that is not a plain word is `changed`.
        let other = body(&[
            ("type", "campaign"),
            ("data[id]", "ffff000011"),
            ("data[status]", "Canceled by admin"),
        ]);
        let event = decoded(&config, other);
        assert_eq!(event["type"], "mailchimp.campaign.changed");
        assert_eq!(event["subject"], "mailchimp-campaign/ffff000011");
        assert_eq!(event["source"], "/mailchimp");
        assert!(event.get("time").is_none());
    }

    #[test]
    fn an_unsubscribe_from_a_mapped_campaign_is_about_that_campaign() {
        let config = config(
            json!({"campaigns": {"spring-launch": "4d2b1d8f70"}, "channel": "newsletter", "include_raw": false}),
        );
        let unsubscribed = body(&[
            ("type", "unsubscribe"),
            ("fired_at", "2026-03-02 10:11:12"),
            ("data[action]", "unsub"),
            ("data[reason]", "abuse"),
            ("data[id]", "8a25ff1d98"),
            ("data[list_id]", "a6b5da1054"),
            ("data[email]", "ana@example.com"),
            ("data[campaign_id]", "4d2b1d8f70"),
        ]);
        let event = decoded(&config, unsubscribed);
        assert_eq!(event["type"], "mailchimp.member.unsubscribed");
        assert_eq!(event["subject"], "campaign/spring-launch");
        let data = &event["data"];
        assert_eq!(data["channel"], "newsletter");
        assert_eq!(data["reason"], "abuse");
        assert_eq!(data["action"], "unsub");
        assert_eq!(data["campaign_id"], "4d2b1d8f70");
        assert_eq!(
            data["item"],
            format!(
                "mailchimp-member/a6b5da1054/{}",
                subscriber_hash("ana@example.com")
            )
        );
        assert!(data.get("raw").is_none());
    }

    #[test]
    fn cleaned_profile_and_email_changes_are_about_the_member() {
        let config = config(json!({}));
        let cleaned = decoded(
            &config,
            body(&[
                ("type", "cleaned"),
                ("data[list_id]", "a6b5da1054"),
                ("data[campaign_id]", "4d2b1d8f70"),
                ("data[reason]", "hard"),
                ("data[email]", "Gone@Example.com"),
            ]),
        );
        assert_eq!(cleaned["type"], "mailchimp.member.cleaned");
        assert_eq!(
            cleaned["subject"],
            format!(
                "mailchimp-member/a6b5da1054/{}",
                subscriber_hash("gone@example.com")
            )
        );
        assert_eq!(cleaned["data"]["status"], "cleaned");
        assert_eq!(cleaned["data"]["reason"], "hard");

        let changed = decoded(
            &config,
            body(&[
                ("type", "upemail"),
                ("data[list_id]", "a6b5da1054"),
                ("data[new_id]", "51aa6b2a4f"),
                ("data[new_email]", "new@example.com"),
                ("data[old_email]", "old@example.com"),
            ]),
        );
        assert_eq!(changed["type"], "mailchimp.member.email_changed");
        assert_eq!(changed["data"]["key"], subscriber_hash("new@example.com"));
        assert_eq!(changed["data"]["old_email"], "old@example.com");
        assert_eq!(changed["data"]["member_id"], "51aa6b2a4f");
        assert!(changed["data"].get("status").is_none());

        let profile = decoded(
            &config,
            body(&[
                ("type", "profile"),
                ("data[email]", "ana@example.com"),
                ("data[merges][FNAME]", "Ana"),
            ]),
        );
        assert_eq!(profile["type"], "mailchimp.member.profile_updated");
        assert_eq!(
            profile["subject"],
            format!("mailchimp-member/-/{}", subscriber_hash("ana@example.com"))
        );
        assert_eq!(profile["data"]["merges"], json!({"FNAME": "Ana"}));
    }

    #[test]
    fn the_url_check_is_no_event() {
        let check = Inbound {
            method: "GET".into(),
            headers: vec![],
            body: vec![],
            ..post(vec![])
        };
        assert!(decode(&config(json!({})), &check).unwrap().is_empty());
    }

    #[test]
    fn what_is_not_an_audience_webhook_is_invalid_input_saying_why() {
        let config = config(json!({}));
        let refused = |inbound: Inbound| match decode(&config, &inbound) {
            Err(PluginError::InvalidInput(message)) => message,
            other => panic!("{other:?}"),
        };
        let json = Inbound {
            headers: vec![("content-type".into(), "application/json".into())],
            ..post(br#"{"type":"subscribe"}"#.to_vec())
        };
        assert_eq!(
            refused(json),
            "hook mailchimp: Mailchimp posts a form (application/x-www-form-urlencoded), not application/json"
        );
        assert_eq!(
            refused(post(b"fired_at=2009-03-26+21%3A35%3A57".to_vec())),
            "hook mailchimp: not a Mailchimp audience webhook: the form has no `type`"
        );
        assert_eq!(
            refused(post(body(&[
                ("type", "subscribe"),
                ("fired_at", "yesterday")
            ]))),
            "fired_at `yesterday` is not YYYY-MM-DD HH:MM:SS"
        );
        assert_eq!(
            refused(post(body(&[("type", "deleted"), ("data[email]", "a@b.c")]))),
            "unknown Mailchimp webhook type `deleted`: expected subscribe, unsubscribe, profile, upemail, cleaned or campaign"
        );
        assert_eq!(
            refused(post(body(&[("type", "subscribe"), ("data[list_id]", "x")]))),
            "a `subscribe` event without the member's address (data[email])"
        );
        assert_eq!(
            refused(post(body(&[
                ("type", "subscribe"),
                ("data", "x"),
                ("data[email]", "a@b.c")
            ]))),
            "form field `data[email]` is inside `data`, which has a value of its own"
        );
        assert!(config_error(json!({"campaign": {}})).contains("unknown field `campaign`"));
    }

    fn config_error(json: Value) -> String {
        match converge_plugin_sdk::parse_config::<Config>(&json.to_string()) {
            Err(PluginError::InvalidInput(message)) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bracketed_names_nest_and_malformed_ones_stay_whole() {
        assert_eq!(path("type"), ["type"]);
        assert_eq!(path("data[merges][FNAME]"), ["data", "merges", "FNAME"]);
        assert_eq!(path("data[merges][GROUPINGS][0][id]").len(), 5);
        assert_eq!(path("data[merges"), ["data[merges"]);
        assert_eq!(path("data[a]b"), ["data[a]b"]);
        assert_eq!(path("[x]"), ["", "x"]);
    }
}
