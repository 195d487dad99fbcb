//! Building canonical events: CloudEvents 1.0 in the JSON format, with ids
//! that stay the same when a tool delivers or a poll reads the same change
//! twice, so the daemon's `(source, id)` deduplication drops the repeat.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One CloudEvent under construction. `id`, `source` and `type` are
/// required by the spec; the rest is optional.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    id: String,
    source: String,
    event_type: String,
    subject: Option<String>,
    time: Option<String>,
    data: Option<Value>,
}

impl CloudEvent {
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
    ) -> Self {
        CloudEvent {
            id: id.into(),
            source: source.into(),
            event_type: event_type.into(),
            subject: None,
            time: None,
            data: None,
        }
    }

    /// The entity the event is about: `campaign/spring-launch`,
    /// `jira-issue/PROJ-123`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// When the change happened, RFC 3339 (see [`rfc3339_from_millis`]).
    pub fn time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// Sets `time` when there is one.
    pub fn time_opt(mut self, time: Option<String>) -> Self {
        self.time = time;
        self
    }

    /// The event's data, a JSON value (an object, for the daemon to merge
    /// into the entity's state).
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The event as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut event = Map::new();
        event.insert("specversion".into(), "1.0".into());
        event.insert("id".into(), self.id.clone().into());
        event.insert("source".into(), self.source.clone().into());
        event.insert("type".into(), self.event_type.clone().into());
        if let Some(subject) = &self.subject {
            event.insert("subject".into(), subject.clone().into());
        }
        if let Some(time) = &self.time {
            event.insert("time".into(), time.clone().into());
        }
        if let Some(data) = &self.data {
            event.insert("datacontenttype".into(), "application/json".into());
            event.insert("data".into(), data.clone());
        }
        Value::Object(event)
    }

    /// The event as the CloudEvent JSON string a connector returns.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// A stable event id from the parts that identify one change: the same
/// parts give the same id on every delivery. For deliveries without an id
/// of their own (no delivery header), hash what the tool sends for the
/// change and leave out what differs between retries (attempt numbers).
pub fn event_id(prefix: &str, parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// `campaign/<name>` for a campaign name found by a mapping, or `None`
/// when the name is empty. Whitespace inside becomes `-`, because an entity
/// id has none.
pub fn campaign_subject(name: &str) -> Option<String> {
    let name: Vec<&str> = name.split_whitespace().collect();
    if name.is_empty() {
        return None;
    }
    Some(format!("campaign/{}", name.join("-")))
}

/// The campaign named by the first label starting with `prefix`
/// (`campaign:spring-launch` with prefix `campaign:` is `spring-launch`).
pub fn campaign_from_labels<'a>(
    labels: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> Option<String> {
    labels
        .into_iter()
        .filter_map(|label| label.strip_prefix(prefix))
        .map(str::trim)
        .find(|name| !name.is_empty())
        .map(str::to_owned)
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time with
/// millisecond precision, e.g. `2018-05-07T13:03:57.764Z`.
pub fn rfc3339_from_millis(millis: i64) -> Option<String> {
    let seconds = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days)?;
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    ))
}

/// Seconds since the Unix epoch as an RFC 3339 UTC time.
pub fn rfc3339_from_secs(seconds: i64) -> Option<String> {
    rfc3339_from_millis(seconds.checked_mul(1000)?)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`); `None` outside years 0..=9999, which RFC 3339 cannot
/// write.
fn civil_from_days(days: i64) -> Option<(i64, i64, i64)> {
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (0..=9999).contains(&year).then_some((year, month, day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_carry_the_required_attributes_and_data() {
        let event = CloudEvent::new("d-1", "https://github.com/o/r", "github.issue.opened")
            .subject("campaign/spring")
            .time("2019-05-15T15:20:18Z")
            .data(json!({"key": "o/r#1"}));
        assert_eq!(
            event.to_value(),
            json!({
                "specversion": "1.0",
                "id": "d-1",
                "source": "https://github.com/o/r",
                "type": "github.issue.opened",
                "subject": "campaign/spring",
                "time": "2019-05-15T15:20:18Z",
                "datacontenttype": "application/json",
                "data": {"key": "o/r#1"},
            })
        );
        let bare = CloudEvent::new("1", "s", "t").to_value();
        assert_eq!(bare.as_object().unwrap().len(), 4);
    }

    #[test]
    fn event_ids_are_stable_and_separate_their_parts() {
        let a = event_id("x-", &[b"ab", b"c"]);
        assert_eq!(a, event_id("x-", &[b"ab", b"c"]));
        assert_ne!(a, event_id("x-", &[b"a", b"bc"]));
        assert!(a.starts_with("x-"));
        assert_eq!(a.len(), 2 + 32);
    }

    #[test]
    fn campaign_names_become_subjects() {
        assert_eq!(
            campaign_subject(" Spring  Launch ").as_deref(),
            Some("campaign/Spring-Launch")
        );
        assert_eq!(campaign_subject("  "), None);
        assert_eq!(
            campaign_from_labels(["bug", "campaign: ", "campaign:spring"], "campaign:").as_deref(),
            Some("spring")
        );
        assert_eq!(campaign_from_labels(["bug"], "campaign:"), None);
    }

    #[test]
    fn epoch_times_format_as_rfc3339() {
        assert_eq!(
            rfc3339_from_millis(1_525_698_237_764).as_deref(),
            Some("2018-05-07T13:03:57.764Z")
        );
        assert_eq!(
            rfc3339_from_millis(0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339_from_secs(1_513_299_569).as_deref(),
            Some("2017-12-15T00:59:29.000Z")
        );
        assert_eq!(
            rfc3339_from_millis(951_782_400_000).as_deref(),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339_from_millis(-1).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339_from_millis(i64::MAX), None);
    }
}
