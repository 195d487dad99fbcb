//! The `trello` connector plugin: decodes Trello webhook deliveries (one
//! board action each) into canonical events, polls a board's actions, and
//! acts on cards: create, comment, move to a list, add a member. Config keys
//! and event types are in `docs/connectors.md`.

use std::collections::BTreeMap;

use converge_plugin_sdk::event::{CloudEvent, campaign_subject};
use converge_plugin_sdk::http::{self, Method, percent_encode};
use converge_plugin_sdk::task::{self, Operation, TaskConnector};
use converge_plugin_sdk::{Action, ActionOutcome, Inbound, PluginError, PollResult, connector};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_api_url")]
    api_url: String,
    /// Granted credential the host sends as
    /// `authorization: OAuth oauth_consumer_key="<key>", oauth_token="<token>"`.
    #[serde(default = "default_credential")]
    credential: String,
    /// Board id or short link: what `poll` reads.
    #[serde(default)]
    board: Option<String>,
    #[serde(default)]
    campaign: CampaignMapping,
    #[serde(default = "yes")]
    include_raw: bool,
    #[serde(default)]
    poll: PollConfig,
    #[serde(default)]
    action: Option<Operation>,
    /// A fixed card id to act on instead of the event's `data.key`.
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    assignee: Option<String>,
    /// converge owner names -> Trello member ids.
    #[serde(default)]
    users: BTreeMap<String, String>,
    /// The list new cards are created in.
    #[serde(default)]
    list: Option<String>,
    /// converge stages -> list ids, for `transition` (move).
    #[serde(default)]
    lists: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignMapping {
    /// Label names like `campaign:spring-launch` (on label actions).
    #[serde(default)]
    label_prefix: Option<String>,
    /// List id -> campaign (the card's list after the action).
    #[serde(default)]
    lists: BTreeMap<String, String>,
    /// Board id or short link -> campaign.
    #[serde(default)]
    boards: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollConfig {
    /// Start of the first poll: a date (`2024-03-01T00:00:00Z`) or an
    /// action id; without it, the board's whole history.
    #[serde(default)]
    since: Option<String>,
    #[serde(default = "default_limit")]
    limit: u32,
    /// Trello's action `filter`, e.g. `createCard,updateCard,commentCard`.
    #[serde(default)]
    filter: Option<String>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            since: None,
            limit: default_limit(),
            filter: None,
        }
    }
}

fn default_api_url() -> String {
    "https://api.trello.com/1".to_owned()
}

fn default_credential() -> String {
    "trello".to_owned()
}

fn default_limit() -> u32 {
    50
}

fn yes() -> bool {
    true
}

impl Config {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.api_url.trim_end_matches('/'))
    }

    fn campaign(&self, data: &Value) -> Option<String> {
        let mapping = &self.campaign;
        let label = data.pointer("/label/name").and_then(Value::as_str);
        let from_label = mapping
            .label_prefix
            .as_deref()
            .zip(label)
            .and_then(|(prefix, label)| label.strip_prefix(prefix))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned);
        let list = ["/listAfter/id", "/list/id", "/card/idList"]
            .iter()
            .find_map(|p| data.pointer(p).and_then(Value::as_str));
        from_label
            .or_else(|| list.and_then(|l| mapping.lists.get(l).cloned()))
            .or_else(|| {
                ["/board/id", "/board/shortLink"]
                    .iter()
                    .filter_map(|p| data.pointer(p).and_then(Value::as_str))
                    .find_map(|b| mapping.boards.get(b).cloned())
            })
    }
}

/// The event type of a Trello action type: `updateCard` with a list change
/// is `trello.card.moved`; other types read as verb + noun
/// (`copyChecklist` -> `trello.checklist.copied`).
fn event_type(action_type: &str, data: &Value) -> String {
    let card = match action_type {
        "updateCard" if data.get("listAfter").is_some() => Some("moved"),
        "updateCard"
            if data.pointer("/old/closed").is_some()
                && data.pointer("/card/closed") == Some(&Value::Bool(true)) =>
        {
            Some("archived")
        }
        "createCard" => Some("created"),
        "updateCard" => Some("updated"),
        "deleteCard" => Some("deleted"),
        "copyCard" => Some("copied"),
        "commentCard" => Some("commented"),
        "addMemberToCard" => Some("member_added"),
        "removeMemberFromCard" => Some("member_removed"),
        "addLabelToCard" => Some("label_added"),
        "removeLabelFromCard" => Some("label_removed"),
        "addChecklistToCard" => Some("checklist_added"),
        "updateCheckItemStateOnCard" => Some("checkitem_updated"),
        "addAttachmentToCard" => Some("attachment_added"),
        "moveCardToBoard" => Some("moved_to_board"),
        "moveCardFromBoard" => Some("moved_from_board"),
        _ => None,
    };
    if let Some(verb) = card {
        return format!("trello.card.{verb}");
    }
    let split = action_type
        .find(|c: char| c.is_ascii_uppercase())
        .unwrap_or(action_type.len());
    let (verb, noun) = action_type.split_at(split);
    let verb = match verb {
        "create" | "update" | "delete" | "enable" | "disable" | "remove" | "move" | "close"
        | "convert" => format!("{verb}d"),
        "copy" => "copied".to_owned(),
        "add" | "comment" => format!("{verb}ed"),
        other => other.to_owned(),
    };
    let mut snake = String::new();
    for (i, c) in noun.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    if snake.is_empty() {
        snake.push_str("board");
    }
    format!("trello.{snake}.{verb}")
}

/// One Trello action as a canonical event.
fn action_event(config: &Config, action: &Value) -> Result<CloudEvent, PluginError> {
    let id = action
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| PluginError::InvalidInput("Trello action without an id".to_owned()))?;
    let action_type = action
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let data = action.get("data").cloned().unwrap_or(Value::Null);
    let card_id = data.pointer("/card/id").and_then(Value::as_str);
    let board_id = data.pointer("/board/id").and_then(Value::as_str);
    let item = match (card_id, board_id) {
        (Some(card), _) => format!("trello-card/{card}"),
        (None, Some(board)) => format!("trello-board/{board}"),
        (None, None) => "trello/unknown".to_owned(),
    };
    let list = data.get("listAfter").or_else(|| data.get("list"));
    let mut fields = Map::new();
    fields.insert("key".into(), card_id.or(board_id).into());
    fields.insert("item".into(), item.clone().into());
    fields.insert(
        "title".into(),
        data.pointer("/card/name").cloned().unwrap_or(Value::Null),
    );
    fields.insert(
        "list".into(),
        list.and_then(|l| l.get("name"))
            .cloned()
            .unwrap_or(Value::Null),
    );
    fields.insert(
        "list_id".into(),
        list.and_then(|l| l.get("id"))
            .cloned()
            .unwrap_or(Value::Null),
    );
    fields.insert(
        "board".into(),
        data.pointer("/board/name").cloned().unwrap_or(Value::Null),
    );
    fields.insert("board_id".into(), board_id.into());
    fields.insert(
        "user".into(),
        action
            .pointer("/memberCreator/fullName")
            .cloned()
            .unwrap_or(Value::Null),
    );
    let mut changes = Vec::new();
    if let (Some(before), Some(after)) = (data.get("listBefore"), data.get("listAfter")) {
        changes.push(json!({"field": "list", "from": before.get("name"), "to": after.get("name")}));
    }
    if let Some(old) = data.get("old").and_then(Value::as_object) {
        for (field, from) in old.iter().filter(|(field, _)| *field != "idList") {
            let to = data
                .pointer(&format!("/card/{field}"))
                .cloned()
                .unwrap_or(Value::Null);
            changes.push(json!({"field": field, "from": from, "to": to}));
        }
    }
    fields.insert("changes".into(), changes.into());
    if let Some(text) = data.get("text") {
        fields.insert("comment".into(), json!({"text": text}));
    }
    if let Some(label) = data.pointer("/label/name") {
        fields.insert("label".into(), label.clone());
    }
    let subject = match config.campaign(&data).as_deref().and_then(campaign_subject) {
        Some(subject) => {
            fields.insert("campaign".into(), subject["campaign/".len()..].into());
            subject
        }
        None => item,
    };
    if config.include_raw {
        fields.insert("raw".into(), action.clone());
    }
    let source = match data.pointer("/board/shortLink").and_then(Value::as_str) {
        Some(short) => format!("https://trello.com/b/{short}"),
        None => "https://trello.com".to_owned(),
    };
    Ok(CloudEvent::new(id, source, event_type(action_type, &data))
        .subject(subject)
        .time_opt(
            action
                .get("date")
                .and_then(Value::as_str)
                .map(str::to_owned),
        )
        .data(Value::Object(fields)))
}

/// Where the next poll starts. Trello lists a board's actions newest first,
/// so one pass after `since` reads pages backwards (`before` the oldest
/// action seen) until a page is not full; `newest` keeps the newest action
/// of the pass, which becomes the next pass's `since`.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    newest: Option<String>,
}

fn parse_cursor(config: &Config, cursor: Option<&str>) -> Result<Cursor, PluginError> {
    let first = Cursor {
        since: config.poll.since.clone(),
        ..Cursor::default()
    };
    connector::parse_cursor(cursor, first)
}

fn poll_url(config: &Config, cursor: &Cursor) -> Result<String, PluginError> {
    let board = config.board.as_deref().ok_or_else(|| {
        PluginError::InvalidInput("plugin config: board: required to poll".to_owned())
    })?;
    let limit = config.poll.limit.to_string();
    let mut query = vec![("limit", limit.as_str())];
    if let Some(since) = &cursor.since {
        query.push(("since", since));
    }
    if let Some(before) = &cursor.before {
        query.push(("before", before));
    }
    if let Some(filter) = &config.poll.filter {
        query.push(("filter", filter));
    }
    Ok(http::url_with_query(
        &config.api(&format!("/boards/{}/actions", percent_encode(board))),
        &query,
    ))
}

fn poll_page(
    config: &Config,
    cursor: &Cursor,
    actions: &[Value],
) -> Result<PollResult, PluginError> {
    // Oldest first, so the events of a page are journaled in order.
    let events = actions
        .iter()
        .rev()
        .map(|action| action_event(config, action).map(|e| e.to_json()))
        .collect::<Result<Vec<_>, _>>()?;
    let id = |action: Option<&Value>| {
        action
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let newest = cursor.newest.clone().or_else(|| id(actions.first()));
    let full = actions.len() >= config.poll.limit as usize;
    let next = if full {
        Cursor {
            since: cursor.since.clone(),
            before: id(actions.last()),
            newest,
        }
    } else {
        Cursor {
            since: newest.or_else(|| cursor.since.clone()),
            before: None,
            newest: None,
        }
    };
    let cursor = serde_json::to_string(&next).expect("a cursor always serializes");
    Ok(PollResult::page(events, cursor, full))
}

fn card_path(card: &str, rest: &str) -> String {
    format!("/cards/{}{rest}", percent_encode(card))
}

fn send(config: &Config, method: Method, path: &str, body: &Value) -> Result<Value, PluginError> {
    http::send_json(method, &config.api(path), body, Some(&config.credential))?.json()
}

struct Trello;

impl TaskConnector for Trello {
    type Config = Config;

    const EVENT_TYPES: &'static [&'static str] = &[
        "trello.card.created",
        "trello.card.updated",
        "trello.card.moved",
        "trello.card.archived",
        "trello.card.commented",
        "trello.card.member_added",
        "trello.card.label_added",
        "trello.<noun>.<verb>",
    ];

    fn decode(config: &Config, inbound: &Inbound) -> Result<Vec<CloudEvent>, PluginError> {
        // Trello checks a callback URL with a HEAD before it creates a webhook.
        if inbound.method.eq_ignore_ascii_case("HEAD") || inbound.body.is_empty() {
            return Ok(Vec::new());
        }
        let body: Value = inbound.json()?;
        let action = body.get("action").ok_or_else(|| {
            PluginError::InvalidInput(format!(
                "hook {}: no action: not a Trello delivery",
                inbound.hook
            ))
        })?;
        Ok(vec![action_event(config, action)?])
    }

    fn poll(config: &Config, cursor: Option<&str>) -> Result<PollResult, PluginError> {
        let cursor = parse_cursor(config, cursor)?;
        let actions: Vec<Value> =
            http::get_json(&poll_url(config, &cursor)?, Some(&config.credential))?;
        poll_page(config, &cursor, &actions)
    }

    fn execute(config: &Config, action: &Action) -> Result<ActionOutcome, PluginError> {
        match task::operation(config.action)? {
            Operation::CreateTask => {
                let list = config.list.as_deref().ok_or_else(|| {
                    PluginError::InvalidInput(
                        "plugin config: list: required to create cards".into(),
                    )
                })?;
                let text = task::text(action)?;
                let body = json!({"idList": list, "name": text.title, "desc": text.body});
                let card = send(config, Method::Post, "/cards", &body)?;
                let id = card.get("id").and_then(Value::as_str).unwrap_or_default();
                Ok(ActionOutcome::new(format!("created card {id}")).with_external_id(id))
            }
            Operation::Comment => {
                let card = task::target_key(action, config.key.as_deref())?;
                let text = task::text(action)?;
                let path = card_path(&card, "/actions/comments");
                let comment = send(config, Method::Post, &path, &json!({"text": text.body}))?;
                let outcome = ActionOutcome::new(format!("commented on card {card}"));
                Ok(match comment.get("id").and_then(Value::as_str) {
                    Some(id) => outcome.with_external_id(id),
                    None => outcome,
                })
            }
            Operation::Transition => {
                let card = task::target_key(action, config.key.as_deref())?;
                let stage = task::target_stage(action, config.to.as_deref())?;
                let list = task::lookup(&config.lists, &format!("lists.{stage}"), &stage)?;
                send(
                    config,
                    Method::Put,
                    &card_path(&card, ""),
                    &json!({"idList": list}),
                )?;
                Ok(
                    ActionOutcome::new(format!("moved card {card} to list {list}"))
                        .with_external_id(card),
                )
            }
            Operation::Assign => {
                let card = task::target_key(action, config.key.as_deref())?;
                let member = task::assignee(action, config.assignee.as_deref(), &config.users)?;
                send(
                    config,
                    Method::Post,
                    &card_path(&card, "/idMembers"),
                    &json!({"value": member}),
                )?;
                Ok(ActionOutcome::new(format!("added {member} to card {card}"))
                    .with_external_id(card))
            }
        }
    }
}

converge_plugin_sdk::export_connector_plugin!(Trello);

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/webhooks/trello/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn config(json: Value) -> Config {
        converge_plugin_sdk::parse_config(&json.to_string()).unwrap()
    }

    /// A delivery: the captured `action` in Trello's envelope.
    fn delivery(body: Value) -> Inbound {
        Inbound {
            hook: "trello".into(),
            method: "POST".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn decode_action(config: &Config, file: &str) -> Value {
        let body = json!({"model": {"id": "board"}, "action": fixture(file)});
        let events = Trello::decode(config, &delivery(body)).unwrap();
        assert_eq!(events.len(), 1);
        events[0].to_value()
    }

    #[test]
    fn a_card_moved_between_lists() {
        let event = decode_action(&config(json!({})), "action.updateCard.moved_list.json");
        assert_eq!(event["type"], "trello.card.moved");
        assert_eq!(event["id"], "55900c950fbd86334d5c4071");
        assert_eq!(event["source"], "https://trello.com/b/7hs3uLZE");
        assert_eq!(event["subject"], "trello-card/550df104f244348fb46ce2b5");
        assert_eq!(event["time"], "2015-06-28T15:02:45.235Z");
        let data = &event["data"];
        assert_eq!(data["key"], "550df104f244348fb46ce2b5");
        assert_eq!(data["title"], "posts-per-page");
        assert_eq!(data["list"], "an empty List");
        assert_eq!(data["user"], "Alfred Molyneaux");
        assert_eq!(
            data["changes"],
            json!([{"field": "list", "from": "_preferences", "to": "an empty List"}])
        );
    }

    #[test]
    fn boards_and_lists_map_cards_to_campaigns() {
        let by_list = config(
            json!({"campaign": {"lists": {"5514564da07f76c2633f07f0": "spring"}, "boards": {"7hs3uLZE": "site"}}}),
        );
        let event = decode_action(&by_list, "action.updateCard.moved_list.json");
        assert_eq!(event["subject"], "campaign/spring");
        assert_eq!(event["data"]["campaign"], "spring");
        assert_eq!(
            event["data"]["item"],
            "trello-card/550df104f244348fb46ce2b5"
        );
        let by_board = config(json!({"campaign": {"boards": {"7hs3uLZE": "site"}}}));
        let event = decode_action(&by_board, "action.createCard.json");
        assert_eq!(event["type"], "trello.card.created");
        assert_eq!(event["subject"], "campaign/site");
    }

    #[test]
    fn comments_keep_their_text() {
        let event = decode_action(
            &config(json!({"include_raw": false})),
            "action.commentCard.json",
        );
        assert_eq!(event["type"], "trello.card.commented");
        assert_eq!(event["data"]["comment"]["text"], "alô!");
        assert_eq!(event["data"]["board"], "idéias");
        assert!(event["data"].get("raw").is_none());
    }

    #[test]
    fn the_full_envelope_decodes_other_action_types() {
        let body = fixture("envelope.copyChecklist.full_body.json");
        let events = Trello::decode(&config(json!({})), &delivery(body)).unwrap();
        let event = events[0].to_value();
        assert_eq!(event["type"], "trello.checklist.copied");
        assert_eq!(event["id"], "59bc8e2ddbd7af0e1474fb0e");
        assert_eq!(event["subject"], "trello-board/597f3c854baa6e43db4f07d7");
        assert_eq!(event["source"], "https://trello.com/b/CGKHU6vL");
    }

    #[test]
    fn the_creation_check_and_non_trello_bodies() {
        let head = Inbound {
            method: "HEAD".into(),
            body: Vec::new(),
            ..delivery(json!({}))
        };
        assert!(
            Trello::decode(&config(json!({})), &head)
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            Trello::decode(&config(json!({})), &delivery(json!({"model": {}}))),
            Err(PluginError::InvalidInput(m)) if m.contains("no action")
        ));
    }

    #[test]
    fn action_types_read_as_noun_and_verb() {
        let none = Value::Null;
        assert_eq!(event_type("createList", &none), "trello.list.created");
        assert_eq!(
            event_type("addMemberToBoard", &none),
            "trello.member_to_board.added"
        );
        assert_eq!(
            event_type(
                "updateCard",
                &json!({"old": {"closed": false}, "card": {"closed": true}})
            ),
            "trello.card.archived"
        );
        assert_eq!(
            event_type("updateCard", &json!({"old": {"name": "a"}})),
            "trello.card.updated"
        );
    }

    fn action(id: &str) -> Value {
        json!({"id": id, "type": "createCard", "date": "2024-03-01T10:00:00.000Z",
               "data": {"card": {"id": format!("card-{id}"), "name": id}, "board": {"id": "b1", "shortLink": "abc"}}})
    }

    #[test]
    fn polls_read_backwards_through_a_pass_then_start_after_its_newest() {
        let config =
            config(json!({"board": "abc", "poll": {"limit": 2, "since": "2024-03-01T00:00:00Z"}}));
        let cursor = parse_cursor(&config, None).unwrap();
        assert_eq!(
            poll_url(&config, &cursor).unwrap(),
            "https://api.trello.com/1/boards/abc/actions?limit=2&since=2024-03-01T00%3A00%3A00Z"
        );
        let page = poll_page(&config, &cursor, &[action("a4"), action("a3")]).unwrap();
        assert!(page.more);
        let ids: Vec<String> = page
            .events
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(e).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, ["a3", "a4"]);
        let next = parse_cursor(&config, page.cursor.as_deref()).unwrap();
        assert_eq!(
            next,
            Cursor {
                since: Some("2024-03-01T00:00:00Z".into()),
                before: Some("a3".into()),
                newest: Some("a4".into())
            }
        );
        let page = poll_page(&config, &next, &[action("a2")]).unwrap();
        assert!(!page.more);
        let next = parse_cursor(&config, page.cursor.as_deref()).unwrap();
        assert_eq!(
            next,
            Cursor {
                since: Some("a4".into()),
                before: None,
                newest: None
            }
        );
        let empty = poll_page(&config, &next, &[]).unwrap();
        assert_eq!(
            parse_cursor(&config, empty.cursor.as_deref())
                .unwrap()
                .since
                .as_deref(),
            Some("a4")
        );
    }
}
