//! What the channel action plugins (`mailchimp`, `sendgrid-campaigns`,
//! `meta-ads`, `linkedin-ads`) take from an action, so each reads it the
//! same way:
//!
//! - **the platform object** a decision acts on: the route config's fixed
//!   id when it has one, else the id its table maps the campaign to (the
//!   event's subject `campaign/<name>` names the campaign; any other
//!   subject is looked up whole);
//! - **the send time** of a schedule: a member of the event (by default
//!   `data.send_at`, which a `send.requested` event carries), RFC 3339;
//! - **vendor time formats**: a UTC time as `YYYY-MM-DDTHH:MM:SSZ`, and an
//!   HTTP `Date` header read as seconds, so a rate limit's reset time (an
//!   absolute time) becomes a delay without a clock in the sandbox.
//!
//! Pure code: it runs natively in unit tests and inside the plugins.

use std::collections::BTreeMap;

use converge_plugin_sdk::{Action, PluginError};
use serde::Deserialize;
use serde_json::Value;

/// One platform id, or several (a channel paused on three ad sets).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Ids {
    One(String),
    Many(Vec<String>),
}

impl Ids {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Ids::One(id) => vec![id.clone()],
            Ids::Many(ids) => ids.clone(),
        }
    }

    /// Whether `id` is this one, or one of these: the way back from a
    /// platform's object to the campaign a table maps onto it.
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Ids::One(one) => one == id,
            Ids::Many(ids) => ids.iter().any(|one| one == id),
        }
    }
}

/// The entity the action is about, as the config's tables name it: the
/// event subject without its `campaign/` prefix (`campaign/fall-26` is
/// `fall-26`), any other subject as it is.
pub fn campaign(action: &Action) -> Result<String, PluginError> {
    let event = action.event()?;
    match event.get("subject").and_then(Value::as_str) {
        Some(subject) if !subject.is_empty() => Ok(subject
            .strip_prefix("campaign/")
            .unwrap_or(subject)
            .to_owned()),
        _ => Err(PluginError::InvalidInput(
            "the event has no subject, so no campaign to look up: set a fixed id in the route's config"
                .to_owned(),
        )),
    }
}

/// The platform ids the action acts on: `fixed` (the route config's own
/// id) when set, else the campaign's entry in `table`, whose config key is
/// `table_key` (for the error). An unmapped campaign is `invalid-input`:
/// the operator must add it, a retry would not help.
pub fn targets(
    action: &Action,
    fixed: Option<&Ids>,
    table: &BTreeMap<String, Ids>,
    table_key: &str,
) -> Result<Vec<String>, PluginError> {
    let ids = match fixed {
        Some(ids) => ids.to_vec(),
        None => {
            let campaign = campaign(action)?;
            table.get(&campaign).map(Ids::to_vec).ok_or_else(|| {
                PluginError::InvalidInput(format!(
                    "plugin config: {table_key}: no entry for campaign `{campaign}`"
                ))
            })?
        }
    };
    if ids.is_empty() || ids.iter().any(|id| id.trim().is_empty()) {
        return Err(PluginError::InvalidInput(format!(
            "plugin config: {table_key}: an empty id"
        )));
    }
    Ok(ids)
}

/// The decision's channel, when it has one (the channel kinds do).
pub fn channel(action: &Action) -> Result<Option<String>, PluginError> {
    Ok(action
        .decision()?
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_owned))
}

/// The default member of the event that carries a schedule's time.
pub const DEFAULT_SEND_AT: &str = "/data/send_at";

/// The send time at `pointer` (a JSON pointer into the event), as seconds
/// since the epoch; `invalid-input` when it is missing or not RFC 3339.
pub fn send_at(action: &Action, pointer: &str) -> Result<i64, PluginError> {
    let event = action.event()?;
    let text = event
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            PluginError::InvalidInput(format!(
                "event{pointer}: missing (the time to schedule the send at, RFC 3339)"
            ))
        })?;
    parse_rfc3339(text).ok_or_else(|| {
        PluginError::InvalidInput(format!("event{pointer}: `{text}` is not an RFC 3339 time"))
    })
}

/// Seconds since the epoch of an RFC 3339 time
/// (`2026-11-23T10:00:00Z`, `2026-11-23T11:00:00.250+01:00`); fractions
/// of a second are dropped.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let (date, rest) = text.split_at(10);
    let time = &rest[1..];
    let mut date_parts = date.split('-');
    let year: i64 = digits(date_parts.next()?, 4)?;
    let month: u32 = digits(date_parts.next()?, 2)?;
    let day: u32 = digits(date_parts.next()?, 2)?;
    if date_parts.next().is_some() {
        return None;
    }
    let hour: i64 = digits(time.get(0..2)?, 2)?;
    let minute: i64 = digits(time.get(3..5)?, 2)?;
    let second: i64 = digits(time.get(6..8)?, 2)?;
    if time.get(2..3)? != ":" || time.get(5..6)? != ":" {
        return None;
    }
    let mut zone = &time[8..];
    if let Some(fraction) = zone.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return None;
        }
        zone = &fraction[end..];
    }
    let offset = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if zone.len() != 6 || &zone[3..4] != ":" {
                return None;
            }
            let hours: i64 = digits(&zone[1..3], 2)?;
            let minutes: i64 = digits(&zone[4..6], 2)?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// A time as `YYYY-MM-DDTHH:MM:SSZ`, the form the vendors' references show.
pub fn format_utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Seconds since the epoch of an HTTP date in its preferred form
/// (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`), as servers send `Date`.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let day: u32 = digits(day, 2)?;
    let year: i64 = digits(year, 4)?;
    let mut clock = time.split(':');
    let hour: i64 = digits(clock.next()?, 2)?;
    let minute: i64 = digits(clock.next()?, 2)?;
    let second: i64 = digits(clock.next()?, 2)?;
    if day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// A rate limit's reset time (seconds since the epoch) as a wait in
/// milliseconds, measured against the response's own `Date` header, so
/// the sandbox needs no clock; `None` when either is missing or unreadable.
pub fn wait_until_reset_ms(reset: Option<&str>, date: Option<&str>) -> Option<u32> {
    let reset: i64 = reset?.trim().parse().ok()?;
    let now = parse_http_date(date?)?;
    let seconds = (reset - now).max(1);
    Some(u32::try_from(seconds.saturating_mul(1000)).unwrap_or(u32::MAX))
}

fn digits<T: std::str::FromStr>(text: &str, len: usize) -> Option<T> {
    if text.len() == len && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The status a pause or resume sets on an ad platform's campaign or ad
/// set (Meta, LinkedIn): `status` in the plugin's config, or the one the
/// decision implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Paused,
    Active,
}

impl Status {
    pub fn for_action(configured: Option<Status>, kind: &str) -> Result<Status, PluginError> {
        if let Some(status) = configured {
            return Ok(status);
        }
        match kind {
            "pause_channel" | "hold_send" => Ok(Status::Paused),
            "resume_channel" | "release_send" => Ok(Status::Active),
            _ => Err(PluginError::InvalidInput(format!(
                "plugin config: status: required for `{kind}` decisions (PAUSED or ACTIVE)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Paused => "PAUSED",
            Status::Active => "ACTIVE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(subject: Option<&str>, data: Value) -> Action {
        let mut event = json!({"id": "e1", "type": "send.requested", "data": data});
        if let Some(subject) = subject {
            event["subject"] = subject.into();
        }
        Action {
            id: "converge-0123456789abcdef-action-7".into(),
            kind: "release_send".into(),
            rule: "gate".into(),
            decision_json: json!({"kind": "release_send", "channel": "email", "reason": "ok"})
                .to_string(),
            event_json: event.to_string(),
            entity_json: "null".into(),
        }
    }

    fn table(pairs: &[(&str, Ids)]) -> BTreeMap<String, Ids> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn a_campaign_is_found_in_the_table_by_its_subject() {
        let campaigns = table(&[
            ("fall-26", Ids::One("b03bfc2d6e".into())),
            ("asset/banner", Ids::Many(vec!["1".into(), "2".into()])),
        ]);
        let fall = action(Some("campaign/fall-26"), json!({}));
        assert_eq!(
            targets(&fall, None, &campaigns, "campaigns").unwrap(),
            ["b03bfc2d6e"]
        );
        let banner = action(Some("asset/banner"), json!({}));
        assert_eq!(
            targets(&banner, None, &campaigns, "campaigns").unwrap(),
            ["1", "2"]
        );
        assert_eq!(channel(&fall).unwrap().as_deref(), Some("email"));
    }

    #[test]
    fn a_fixed_id_wins_and_an_unmapped_campaign_is_invalid_input() {
        let campaigns = table(&[("fall-26", Ids::One("x".into()))]);
        let fall = action(Some("campaign/fall-26"), json!({}));
        let fixed = Ids::One("fixed".into());
        assert_eq!(
            targets(&fall, Some(&fixed), &campaigns, "campaigns").unwrap(),
            ["fixed"]
        );
        let spring = action(Some("campaign/spring"), json!({}));
        assert_eq!(
            targets(&spring, None, &campaigns, "campaigns"),
            Err(PluginError::InvalidInput(
                "plugin config: campaigns: no entry for campaign `spring`".into()
            ))
        );
        let nowhere = action(None, json!({}));
        assert!(matches!(
            targets(&nowhere, None, &campaigns, "campaigns"),
            Err(PluginError::InvalidInput(m)) if m.contains("no subject")
        ));
        let empty = table(&[("fall-26", Ids::Many(vec![]))]);
        assert!(matches!(
            targets(&fall, None, &empty, "ad_sets"),
            Err(PluginError::InvalidInput(m)) if m.contains("ad_sets: an empty id")
        ));
    }

    #[test]
    fn ids_are_one_string_or_a_list() {
        let ids: BTreeMap<String, Ids> =
            serde_json::from_str(r#"{"a": "1", "b": ["2", "3"]}"#).unwrap();
        assert_eq!(ids["a"], Ids::One("1".into()));
        assert_eq!(ids["b"], Ids::Many(vec!["2".into(), "3".into()]));
    }

    #[test]
    fn rfc3339_times_parse_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00Z"), Some(1_795_428_000));
        assert_eq!(
            parse_rfc3339("2026-11-23T11:00:00.250+01:00"),
            Some(1_795_428_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59-00:30"),
            Some(1_709_251_199 + 1_800)
        );
        for bad in [
            "2026-11-23",
            "2026-11-23T10:00:00",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00+0100",
            "tomorrow at ten",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn utc_times_format_as_the_vendors_show_them() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_795_428_000), "2026-11-23T10:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        for text in [
            "2024-02-29T12:34:56Z",
            "2099-12-31T23:59:59Z",
            "1999-03-01T00:00:00Z",
        ] {
            assert_eq!(format_utc(parse_rfc3339(text).unwrap()), text);
        }
    }

    #[test]
    fn a_send_time_comes_from_the_event() {
        let at = action(
            Some("campaign/fall-26"),
            json!({"channel": "email", "send_at": "2026-11-23T10:15:00Z"}),
        );
        assert_eq!(send_at(&at, DEFAULT_SEND_AT).unwrap(), 1_795_428_900);
        let missing = action(Some("campaign/fall-26"), json!({}));
        assert!(matches!(
            send_at(&missing, DEFAULT_SEND_AT),
            Err(PluginError::InvalidInput(m)) if m.starts_with("event/data/send_at: missing")
        ));
        let bad = action(Some("campaign/fall-26"), json!({"send_at": "soon"}));
        assert!(matches!(
            send_at(&bad, DEFAULT_SEND_AT),
            Err(PluginError::InvalidInput(m)) if m.contains("`soon` is not an RFC 3339 time")
        ));
    }

    #[test]
    fn a_reset_time_becomes_a_wait_against_the_response_date() {
        let date = "Mon, 23 Nov 2026 10:00:00 GMT";
        assert_eq!(parse_http_date(date), Some(1_795_428_000));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(
            wait_until_reset_ms(Some("1795428030"), Some(date)),
            Some(30_000)
        );
        // A reset already past still waits a moment, never zero.
        assert_eq!(
            wait_until_reset_ms(Some("1795427000"), Some(date)),
            Some(1000)
        );
        assert_eq!(wait_until_reset_ms(Some("1795428030"), None), None);
        assert_eq!(wait_until_reset_ms(None, Some(date)), None);
        assert_eq!(wait_until_reset_ms(Some("later"), Some(date)), None);
    }
}
