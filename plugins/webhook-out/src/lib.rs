//! The `webhook-out` action plugin: POSTs each action, with its decision,
//! event and entity, as one JSON document to an operator-configured URL.
//!
//! Config: `{"url": "https://...", "headers": {"x-name": "value"}, "credential": "name",
//! "select": ["/decision", "/event/id"]}`; only `url` is required. `select`
//! names, as JSON pointers, the members of that document to send instead of
//! all of it (see `Selection` below). Every request carries
//! `idempotency-key: <action id>`, which stays the same on every retry, so
//! receivers can drop duplicates.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use converge_plugin_sdk::{Action, ActionOutcome, ActionPlugin, PluginError, PluginInfo, http};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Headers the plugin sets itself, or that would carry a secret in plain
/// config (credentials are named with `credential` and injected by the host).
const RESERVED_HEADERS: &[&str] = &["content-type", "idempotency-key", "authorization"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    credential: Option<String>,
    #[serde(default)]
    select: Option<Vec<String>>,
    /// `select`, checked: the members to send; `None` sends the whole document.
    #[serde(skip)]
    selection: Option<Selection>,
}

thread_local! {
    /// The config last parsed, with its text. The host keeps an instance
    /// warm across actions, mostly of one route, so the pointers are parsed
    /// once rather than per action.
    static PARSED: RefCell<Option<(String, Rc<Config>)>> = const { RefCell::new(None) };
}

impl Config {
    /// The action's route's config: parsed, or as parsed before from the
    /// same text.
    fn current() -> Result<Rc<Self>, PluginError> {
        Config::cached(converge_plugin_sdk::config_json())
    }

    /// `json` parsed, or the config parsed last when that was the same text.
    fn cached(json: String) -> Result<Rc<Self>, PluginError> {
        PARSED.with_borrow_mut(|parsed| {
            if let Some((text, config)) = parsed.as_ref()
                && *text == json
            {
                return Ok(Rc::clone(config));
            }
            let config = Rc::new(Config::parse(&json)?);
            *parsed = Some((json, Rc::clone(&config)));
            Ok(config)
        })
    }

    fn parse(json: &str) -> Result<Self, PluginError> {
        let mut config: Config = converge_plugin_sdk::parse_config(json)?;
        config.validate()?;
        config.selection = config.select.as_deref().map(Selection::parse).transpose()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), PluginError> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(PluginError::InvalidInput(format!(
                "plugin config: url: must be an http:// or https:// URL, got {:?}",
                self.url
            )));
        }
        if let Some(name) = self
            .headers
            .keys()
            .find(|name| RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
        {
            return Err(PluginError::InvalidInput(format!(
                "plugin config: headers.{name}: set by the plugin or the host, not by config"
            )));
        }
        Ok(())
    }
}

/// The top-level members of the whole document, in its order.
const MEMBERS: &[&str] = &["action_id", "kind", "rule", "decision", "event", "entity"];

/// The members of the document that `select` names, each a JSON pointer
/// (RFC 6901) into `{action_id, kind, rule, decision, event, entity}`:
/// `/decision` is the whole decision, `/event/data/channel` one member of the
/// event's data. The document sent keeps the shape of the whole one, holding
/// only what was selected, in the order the pointers are listed:
/// `["/decision/kind", "/event/id"]` sends
/// `{"decision":{"kind":"notify"},"event":{"id":"e1"}}`. A member the action
/// does not have is left out, not sent as `null`. Pointers reach into objects
/// only: an array is selected whole.
#[derive(Debug, PartialEq)]
struct Selection {
    /// Each pointer's reference tokens, unescaped (`~1` is `/`, `~0` is `~`).
    pointers: Vec<Vec<String>>,
    /// The members selected in each of the decision, event and entity that
    /// pointers reach into: each document is read once, however many
    /// pointers go through it.
    within: Vec<(String, Vec<String>)>,
}

impl Selection {
    fn parse(select: &[String]) -> Result<Self, PluginError> {
        let invalid =
            |message: String| PluginError::InvalidInput(format!("plugin config: {message}"));
        if select.is_empty() {
            return Err(invalid(
                "select: names no member; leave select out to send the whole document".into(),
            ));
        }
        let pointers: Vec<Vec<String>> = select
            .iter()
            .enumerate()
            .map(|(i, pointer)| {
                parse_pointer(pointer).map_err(|e| invalid(format!("select[{i}]: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let mut within: Vec<(String, Vec<String>)> = Vec::new();
        for tokens in &pointers {
            let [object, name, ..] = tokens.as_slice() else {
                continue;
            };
            let at = match within.iter().position(|(read, _)| read == object) {
                Some(at) => at,
                None => {
                    within.push((object.clone(), Vec::new()));
                    within.len() - 1
                }
            };
            if !within[at].1.contains(name) {
                within[at].1.push(name.clone());
            }
        }
        Ok(Selection { pointers, within })
    }

    /// The selected part of the action's document.
    fn pick<'a>(&'a self, action: &'a Action) -> Result<Node<'a>, PluginError> {
        let read = self
            .within
            .iter()
            .map(|(object, names)| {
                let Some(json) = document(action, object) else {
                    return Ok(None);
                };
                members_named(json, names).map_err(|e| {
                    PluginError::InvalidInput(format!("action {object}: not JSON: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut picked = Node::Members(Vec::new());
        for tokens in &self.pointers {
            let (first, rest) = tokens.split_first().expect("a parsed pointer has a token");
            let value = match rest.split_first() {
                None => member(action, first)?,
                Some((second, deeper)) => {
                    let mut value = self.read_member(&read, first, second);
                    for token in deeper {
                        value = match value {
                            Some(Value::Raw(raw)) => member_of(raw, token),
                            _ => None,
                        };
                    }
                    value
                }
            };
            if let Some(value) = value {
                picked.insert(tokens, value);
            }
        }
        Ok(picked)
    }

    /// The member `name` of the top-level member `object`, from what `pick`
    /// read of it.
    fn read_member<'a>(
        &self,
        read: &[Option<Vec<Option<&'a RawValue>>>],
        object: &str,
        name: &str,
    ) -> Option<Value<'a>> {
        let at = self.within.iter().position(|(read, _)| read == object)?;
        let names = &self.within[at].1;
        let found = read[at].as_ref()?;
        let raw = found[names.iter().position(|wanted| wanted == name)?]?;
        Some(Value::Raw(raw))
    }
}

/// A JSON pointer's reference tokens, or why it is not one this plugin can
/// follow.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON pointer: it starts with \"/\", as in \"/event/id\""
        ));
    };
    let tokens = rest
        .split('/')
        .map(|token| {
            unescape(token).ok_or_else(|| format!("{pointer:?}: ~ must be followed by 0 or 1"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let first = tokens[0].as_str();
    if !MEMBERS.contains(&first) {
        return Err(format!(
            "{pointer:?}: the document has no member {first:?} (it has {})",
            MEMBERS.join(", ")
        ));
    }
    if tokens.len() > 1 && matches!(first, "action_id" | "kind" | "rule") {
        return Err(format!("{pointer:?}: {first} is a string, with no members"));
    }
    Ok(tokens)
}

fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// The member `name` of a JSON object, as the host wrote it; `None` when
/// `raw` is not an object or has no such member.
fn member_of<'a>(raw: &'a RawValue, name: &str) -> Option<Value<'a>> {
    let found = members_named(raw.get(), &[name]).ok()??;
    found[0].map(Value::Raw)
}

/// A member's name: borrowed from the JSON unless it has escapes.
struct Name<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(Name(name.into()))
            }
            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(Name(name.to_owned().into()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The members `names` of the JSON object `json`, each as the host wrote
/// it, in the order of `names`; `None` when `json` is JSON but not an
/// object.
///
/// The host writes each object of an action naming each member once (the
/// WIT's `action` record), so the object is read only up to the last
/// member asked for: what follows it is neither parsed nor checked. The
/// race's `/decision/kind`, `/decision/to` and `/event/id` stop before the
/// decision's trace and right after the event's `id`; reading both
/// documents whole was about 16,000 of the 44,000 instructions of an
/// action's guest code (docs/performance.md).
fn members_named<'a>(
    json: &'a str,
    names: &[impl AsRef<str>],
) -> Result<Option<Vec<Option<&'a RawValue>>>, serde_json::Error> {
    let mut found = vec![None; names.len()];
    let mut all_found = false;
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let read = serde::Deserializer::deserialize_map(
        &mut deserializer,
        Named {
            names,
            found: &mut found,
            all_found: &mut all_found,
        },
    );
    match read {
        Ok(()) => {
            deserializer.end()?;
            Ok(Some(found))
        }
        // Every member asked for was found and the rest left unread: the
        // error is the reader's, finding the object not yet closed.
        Err(_) if all_found => Ok(Some(found)),
        // JSON of another type, or not JSON at all.
        Err(e) if e.is_data() => serde_json::from_str::<&RawValue>(json).map(|_| None),
        Err(e) => Err(e),
    }
}

/// Reads a JSON object's members until those named are found, skipping
/// the others' values.
struct Named<'n, 'f, 'a, N> {
    names: &'n [N],
    found: &'f mut Vec<Option<&'a RawValue>>,
    all_found: &'f mut bool,
}

impl<'de, N: AsRef<str>> serde::de::Visitor<'de> for Named<'_, '_, 'de, N> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut left = self.names.len();
        while left > 0 {
            let Some(name) = map.next_key::<Name<'de>>()? else {
                return Ok(());
            };
            match self.names.iter().position(|n| n.as_ref() == name.0) {
                Some(at) if self.found[at].is_none() => {
                    self.found[at] = Some(map.next_value::<&'de RawValue>()?);
                    left -= 1;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        *self.all_found = true;
        Ok(())
    }
}

/// A top-level member of the whole document; the decision, event and
/// entity are checked to be JSON only when selected.
fn member<'a>(action: &'a Action, name: &str) -> Result<Option<Value<'a>>, PluginError> {
    Ok(Some(match name {
        "action_id" => Value::Str(&action.id),
        "kind" => Value::Str(&action.kind),
        "rule" => Value::Str(&action.rule),
        _ => match document(action, name) {
            Some(json) => Value::Raw(raw(name, json)?),
            None => return Ok(None),
        },
    }))
}

/// The JSON text of the decision, event or entity.
fn document<'a>(action: &'a Action, name: &str) -> Option<&'a str> {
    match name {
        "decision" => Some(&action.decision_json),
        "event" => Some(&action.event_json),
        "entity" => Some(&action.entity_json),
        _ => None,
    }
}

/// One selected value: passed through as the host wrote it.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    Raw(&'a RawValue),
}

/// The document being sent: selected values, and the objects that lead to
/// them, with members in the order they were first selected.
#[derive(Debug)]
enum Node<'a> {
    Whole(Value<'a>),
    Members(Vec<(&'a str, Node<'a>)>),
}

impl<'a> Node<'a> {
    fn insert(&mut self, tokens: &'a [String], value: Value<'a>) {
        let Node::Members(members) = self else {
            // Already selected whole, by a shorter pointer.
            return;
        };
        let Some((first, rest)) = tokens.split_first() else {
            *self = Node::Whole(value);
            return;
        };
        let at = match members.iter().position(|(name, _)| name == first) {
            Some(at) => at,
            None => {
                members.push((first, Node::Members(Vec::new())));
                members.len() - 1
            }
        };
        members[at].1.insert(rest, value);
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Node::Whole(Value::Str(s)) => serializer.serialize_str(s),
            Node::Whole(Value::Raw(raw)) => raw.serialize(serializer),
            Node::Members(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (name, node) in members {
                    map.serialize_entry(name, node)?;
                }
                map.end()
            }
        }
    }
}

/// The document POSTed for one action. The decision, event and entity are
/// passed through as the host wrote them: checked to be JSON, not rebuilt.
#[derive(Serialize)]
struct Payload<'a> {
    action_id: &'a str,
    kind: &'a str,
    rule: &'a str,
    decision: &'a RawValue,
    event: &'a RawValue,
    entity: &'a RawValue,
}

fn raw<'a>(member: &str, json: &'a str) -> Result<&'a RawValue, PluginError> {
    serde_json::from_str(json)
        .map_err(|e| PluginError::InvalidInput(format!("action {member}: not JSON: {e}")))
}

fn payload(action: &Action) -> Result<Payload<'_>, PluginError> {
    Ok(Payload {
        action_id: &action.id,
        kind: &action.kind,
        rule: &action.rule,
        decision: raw("decision", &action.decision_json)?,
        event: raw("event", &action.event_json)?,
        entity: raw("entity", &action.entity_json)?,
    })
}

fn request(config: &Config, action: &Action) -> Result<http::Request, PluginError> {
    let mut headers: Vec<(&str, &str)> = vec![("idempotency-key", &action.id)];
    headers.extend(config.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let (method, url, credential) = (
        http::Method::Post,
        &config.url,
        config.credential.as_deref(),
    );
    Ok(match &config.selection {
        None => http::json_request(method, url, &payload(action)?, credential, &headers),
        Some(selection) => {
            http::json_request(method, url, &selection.pick(action)?, credential, &headers)
        }
    })
}

struct WebhookOut;

impl ActionPlugin for WebhookOut {
    fn describe() -> PluginInfo {
        converge_plugin_sdk::plugin_info!()
    }

    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let config = Config::current()?;
        let response = http::send(&request(&config, &action)?)?;
        if !response.is_success() {
            return Err(response.error());
        }
        Ok(ActionOutcome::new(format!(
            "POST {} -> {}",
            config.url, response.status
        )))
    }
}

converge_plugin_sdk::export_action_plugin!(WebhookOut);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn action() -> Action {
        Action {
            id: "act-1".into(),
            kind: "escalate".into(),
            rule: "stalled".into(),
            decision_json: r#"{"kind": "escalate", "to": "owner", "reason": "late", "level": 1}"#
                .into(),
            event_json: r#"{"id": "e1", "subject": "PR-7"}"#.into(),
            entity_json: "null".into(),
        }
    }

    #[test]
    fn posts_the_action_as_one_document_with_its_idempotency_key() {
        let config = Config::parse(
            r#"{"url": "https://hooks.example.com/in", "headers": {"x-team": "mops"}, "credential": "hook_secret"}"#,
        )
        .unwrap();
        let request = request(&config, &action()).unwrap();
        assert_eq!(request.method, http::Method::Post);
        assert_eq!(request.url, "https://hooks.example.com/in");
        assert_eq!(request.credential.as_deref(), Some("hook_secret"));
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("content-type", "application/json"),
                ("idempotency-key", "act-1"),
                ("x-team", "mops")
            ]
        );
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "action_id": "act-1",
                "kind": "escalate",
                "rule": "stalled",
                "decision": {"kind": "escalate", "to": "owner", "reason": "late", "level": 1},
                "event": {"id": "e1", "subject": "PR-7"},
                "entity": null,
            })
        );
    }

    #[test]
    fn a_missing_or_bad_url_is_invalid_input() {
        for (config, needle) in [
            (r#"{}"#, "url"),
            (r#"{"url": "hooks.example.com"}"#, "url"),
            (r#"{"url": 7}"#, "url"),
            (r#"{"url": "https://x", "header": {}}"#, "header"),
            (
                r#"{"url": "https://x", "headers": {"Authorization": "Bearer s3cret"}}"#,
                "headers.Authorization",
            ),
        ] {
            let err = Config::parse(config).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.contains(needle)),
                "{config}: {err:?}"
            );
        }
    }

    #[test]
    fn a_malformed_action_is_invalid_input() {
        let action = Action {
            decision_json: "not json".into(),
            ..action()
        };
        assert!(matches!(
            payload(&action),
            Err(PluginError::InvalidInput(_))
        ));
    }

    #[test]
    fn a_member_is_found_by_its_name_with_its_escapes_read() {
        let object: &RawValue =
            serde_json::from_str(r#"{"a":1,"a\u0062":[2,{"x":3}],"c":{"d":null}}"#).unwrap();
        let found = |name: &str| match member_of(object, name) {
            Some(super::Value::Raw(raw)) => Some(raw.get().to_string()),
            Some(super::Value::Str(_)) => unreachable!("members are raw"),
            None => None,
        };
        assert_eq!(found("a").as_deref(), Some("1"));
        assert_eq!(found("ab").as_deref(), Some(r#"[2,{"x":3}]"#));
        assert_eq!(found("c").as_deref(), Some(r#"{"d":null}"#));
        assert_eq!(found("z"), None);
        let array: &RawValue = serde_json::from_str(r#"[{"a":1}]"#).unwrap();
        assert!(member_of(array, "a").is_none());
    }

    #[test]
    fn a_config_is_parsed_once_per_text() {
        let a = r#"{"url": "https://a.example.com/in", "select": ["/event/id"]}"#.to_string();
        let b = r#"{"url": "https://b.example.com/in"}"#.to_string();
        let first = Config::cached(a.clone()).unwrap();
        assert!(Rc::ptr_eq(&first, &Config::cached(a.clone()).unwrap()));
        let other = Config::cached(b.clone()).unwrap();
        assert_eq!(other.url, "https://b.example.com/in");
        assert!(other.selection.is_none());
        let again = Config::cached(a.clone()).unwrap();
        assert_eq!(again.url, "https://a.example.com/in");
        assert!(again.selection.is_some());
        // A config that does not parse is refused every time, and does not
        // replace the one parsed last.
        let bad = r#"{"url": "ftp://c.example.com"}"#.to_string();
        assert!(matches!(
            Config::cached(bad.clone()),
            Err(PluginError::InvalidInput(_))
        ));
        assert!(matches!(
            Config::cached(bad),
            Err(PluginError::InvalidInput(_))
        ));
        assert!(Rc::ptr_eq(&again, &Config::cached(a).unwrap()));
    }

    fn sent_with(select: &str, action: &Action) -> String {
        let config = Config::parse(&format!(
            r#"{{"url": "https://hooks.example.com/in", "select": {select}}}"#
        ))
        .unwrap();
        let request = request(&config, action).unwrap();
        String::from_utf8(request.body.unwrap()).unwrap()
    }

    fn rich_action() -> Action {
        Action {
            event_json: r#"{"id": "e1", "subject": "campaign/c-1", "data": {"channel": "email", "a/b~c": 1, "items": [{"x": 1}]}}"#.into(),
            entity_json: r#"{"kind": "campaign", "owner": null, "fields": {"owner": "ana"}}"#.into(),
            ..action()
        }
    }

    #[test]
    fn select_sends_only_the_named_members_in_the_order_listed() {
        let body = sent_with(
            r#"["/event/id", "/decision/kind", "/action_id", "/decision/to", "/entity/fields/owner"]"#,
            &rich_action(),
        );
        assert_eq!(
            body,
            r#"{"event":{"id":"e1"},"decision":{"kind":"escalate","to":"owner"},"action_id":"act-1","entity":{"fields":{"owner":"ana"}}}"#
        );
    }

    #[test]
    fn selected_values_are_passed_through_as_the_host_wrote_them() {
        let body = sent_with(r#"["/decision", "/kind"]"#, &rich_action());
        assert_eq!(
            body,
            r#"{"decision":{"kind": "escalate", "to": "owner", "reason": "late", "level": 1},"kind":"escalate"}"#
        );
    }

    #[test]
    fn a_member_the_action_lacks_is_left_out_and_null_stays_null() {
        let body = sent_with(
            r#"["/decision/channel", "/entity/owner", "/event/data/items/0", "/event/subject/x", "/event/id"]"#,
            &rich_action(),
        );
        assert_eq!(body, r#"{"entity":{"owner":null},"event":{"id":"e1"}}"#);
        assert_eq!(sent_with(r#"["/decision/nothing"]"#, &rich_action()), "{}");
    }

    #[test]
    fn pointers_through_the_same_objects_in_any_order_select_alike() {
        let body = sent_with(
            r#"["/event/data/channel", "/entity/kind", "/event/id", "/event/data/a~1b~0c", "/entity/fields/owner"]"#,
            &rich_action(),
        );
        assert_eq!(
            body,
            r#"{"event":{"data":{"channel":"email","a/b~c":1},"id":"e1"},"entity":{"kind":"campaign","fields":{"owner":"ana"}}}"#
        );
        // A selected member that is not JSON is refused, however many
        // pointers go through it.
        let broken = Action {
            decision_json: "not json".into(),
            ..rich_action()
        };
        let config = Config::parse(
            r#"{"url": "https://hooks.example.com/in", "select": ["/decision/kind", "/decision/to"]}"#,
        )
        .unwrap();
        let err = request(&config, &broken).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.starts_with("action decision: not JSON")),
            "{err:?}"
        );
    }

    #[test]
    fn members_are_read_through_select_up_to_the_last_one_selected() {
        // Names with escapes, values as the host wrote them, and nothing
        // read after the last member selected: the host names each member
        // once, so the rest cannot change what is sent.
        let action = Action {
            decision_json: r#"{"kind": "notify", "t\u006f": "ops", "trace": not read"#.into(),
            event_json: r#"[{"id": "e1"}]"#.into(),
            entity_json: r#""campaign""#.into(),
            ..rich_action()
        };
        assert_eq!(
            sent_with(
                r#"["/decision/to", "/decision/kind", "/event/id", "/entity/kind"]"#,
                &action
            ),
            r#"{"decision":{"to":"ops","kind":"notify"}}"#
        );
        // Not JSON up to what is selected, however it goes wrong, is
        // refused; so is anything after an object read to its end.
        for (broken, select) in [
            (r#"{"kind": "notify", "trace": not read"#, "/decision/trace"),
            (r#"{"kind": "notify", "trace": not read"#, "/decision/to"),
            (r#"{"to" "x"}"#, "/decision/to"),
            (r#"{"to": "x"} trailing"#, "/decision/to"),
            (r#"{"kind": "notify"}, 1"#, "/decision/to"),
            ("[1, 2", "/decision/to"),
            ("12x", "/decision/to"),
        ] {
            let action = Action {
                decision_json: broken.into(),
                ..rich_action()
            };
            let config = Config::parse(&format!(
                r#"{{"url": "https://hooks.example.com/in", "select": ["{select}"]}}"#
            ))
            .unwrap();
            let err = request(&config, &action).unwrap_err();
            assert!(
                matches!(&err, PluginError::InvalidInput(m) if m.starts_with("action decision: not JSON")),
                "{broken} {select}: {err:?}"
            );
        }
    }

    #[test]
    fn a_shorter_pointer_selects_the_whole_member_whatever_the_order() {
        let whole = r#"{"event":{"id": "e1", "subject": "PR-7"}}"#;
        assert_eq!(sent_with(r#"["/event/id", "/event"]"#, &action()), whole);
        assert_eq!(sent_with(r#"["/event", "/event/id"]"#, &action()), whole);
    }

    #[test]
    fn pointer_escapes_name_members_with_slashes_and_tildes() {
        let body = sent_with(r#"["/event/data/a~1b~0c"]"#, &rich_action());
        assert_eq!(body, r#"{"event":{"data":{"a/b~c":1}}}"#);
    }

    #[test]
    fn a_bad_select_is_invalid_input_naming_the_entry() {
        for (select, message) in [
            (
                r#"[]"#,
                "plugin config: select: names no member; leave select out to send the whole document",
            ),
            (
                r#"["/decision", "event.id"]"#,
                r#"plugin config: select[1]: "event.id" is not a JSON pointer: it starts with "/", as in "/event/id""#,
            ),
            (
                r#"["/events/id"]"#,
                r#"plugin config: select[0]: "/events/id": the document has no member "events" (it has action_id, kind, rule, decision, event, entity)"#,
            ),
            (
                r#"["/decision", "/decision", "/action_id/x"]"#,
                r#"plugin config: select[2]: "/action_id/x": action_id is a string, with no members"#,
            ),
            (
                r#"["/event/a~2"]"#,
                r#"plugin config: select[0]: "/event/a~2": ~ must be followed by 0 or 1"#,
            ),
            (
                r#"["/"]"#,
                r#"plugin config: select[0]: "/": the document has no member "" (it has action_id, kind, rule, decision, event, entity)"#,
            ),
        ] {
            let err = Config::parse(&format!(r#"{{"url": "https://x", "select": {select}}}"#))
                .unwrap_err();
            assert_eq!(err, PluginError::InvalidInput(message.into()), "{select}");
        }
        let err = Config::parse(r#"{"url": "https://x", "select": "/decision"}"#).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.starts_with("plugin config: select: ")),
            "{err:?}"
        );
    }
}
