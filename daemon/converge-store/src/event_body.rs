//! How an event is stored in the `events.json` column: without the
//! attributes its row's columns already hold.
//!
//! An event's JSON (`converge_model::Event`) starts
//! `{"specversion":"1.0","id":..,"type":..,"source":..`, often followed by
//! `,"subject":..`; `id`, `type`, `source` and `subject` are columns of the
//! row. When the JSON starts exactly so, the stored text is `~` (or `~s`
//! when the subject followed too) and the rest of the JSON after them; a
//! read rebuilds the same bytes from the columns. Any other JSON, and every
//! row written before this layout, is stored and read whole: a stored text
//! starting with `{` is the JSON itself.
//!
//! Only text is compared and joined, never parsed: the write path pays a
//! few short string builds per event.

use std::borrow::Cow;

/// The attributes of an event that its row keeps in columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Columns<'a> {
    pub id: &'a str,
    pub ty: &'a str,
    pub source: &'a str,
    pub subject: Option<&'a str>,
}

impl Columns<'_> {
    /// `{"specversion":"1.0","id":..,"type":..,"source":..`
    fn head(&self) -> String {
        let mut head =
            String::with_capacity(48 + self.id.len() + self.ty.len() + self.source.len());
        head.push_str(r#"{"specversion":"1.0","id":"#);
        push_string(&mut head, self.id);
        head.push_str(r#","type":"#);
        push_string(&mut head, self.ty);
        head.push_str(r#","source":"#);
        push_string(&mut head, self.source);
        head
    }

    /// `,"subject":..`, when the event has one.
    fn subject(&self) -> Option<String> {
        self.subject.map(|subject| {
            let mut piece = String::with_capacity(16 + subject.len());
            piece.push_str(r#","subject":"#);
            push_string(&mut piece, subject);
            piece
        })
    }
}

/// `text` as a JSON string, escaped as serde_json escapes it (as the
/// event's JSON was written).
fn push_string(out: &mut String, text: &str) {
    // Writing a &str to a String cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// The text to store for an event's `json`.
pub(crate) fn encode<'a>(json: &'a str, columns: Columns<'_>) -> Cow<'a, str> {
    let Some(rest) = json.strip_prefix(columns.head().as_str()) else {
        return Cow::Borrowed(json);
    };
    match columns.subject() {
        Some(subject) if rest.starts_with(subject.as_str()) => {
            Cow::Owned(format!("~s{}", &rest[subject.len()..]))
        }
        _ => Cow::Owned(format!("~{rest}")),
    }
}

/// The event's JSON from its stored text and its row's columns. A text
/// that says its subject was left out, in a row without one, cannot be
/// completed (it never is written so): it is returned as stored, which
/// every reader refuses as not JSON rather than read a guess.
pub(crate) fn decode(stored: String, columns: Columns<'_>) -> String {
    let Some(rest) = stored.strip_prefix('~') else {
        return stored;
    };
    let mut json = columns.head();
    match (rest.strip_prefix('s'), columns.subject()) {
        (Some(rest), Some(subject)) => {
            json.push_str(&subject);
            json.push_str(rest);
        }
        (Some(_), None) => return stored,
        (None, _) => json.push_str(rest),
    }
    json
}

#[cfg(test)]
mod tests {
    use converge_model::Event;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn columns(event: &Event) -> Columns<'_> {
        Columns {
            id: &event.id,
            ty: &event.ty,
            source: &event.source,
            subject: event.subject.as_deref(),
        }
    }

    fn event(value: serde_json::Value) -> Event {
        Event::from_value(value).unwrap()
    }

    #[test]
    fn an_events_json_is_stored_without_its_columns_and_read_back_the_same() {
        let gate = event(json!({
            "specversion": "1.0", "id": "evt-5000", "type": "asset.updated",
            "source": "/race/r1", "subject": "campaign/c-1250",
            "data": {"channel": "email", "offer_code": "FALL25"}
        }));
        let stored = encode(&gate.json, columns(&gate));
        assert!(stored.starts_with("~s,\"data\""), "{stored}");
        assert_eq!(decode(stored.into_owned(), columns(&gate)), gate.json);

        let typed = event(json!({
            "specversion": "1.0", "id": "load-0", "type": "task.handoff",
            "source": "/converge-load", "datacontenttype": "application/json",
            "subject": "task/LOAD-0", "data": {"stage": "review"}
        }));
        let stored = encode(&typed.json, columns(&typed));
        assert!(stored.starts_with("~,\"datacontenttype\""), "{stored}");
        assert_eq!(decode(stored.into_owned(), columns(&typed)), typed.json);
    }

    #[test]
    fn json_in_another_shape_and_old_rows_are_kept_whole() {
        let other = r#"{"id":"a","specversion":"1.0","type":"t","source":"/s"}"#;
        let columns = Columns {
            id: "a",
            ty: "t",
            source: "/s",
            subject: None,
        };
        assert_eq!(encode(other, columns), other);
        assert_eq!(decode(other.to_string(), columns), other);
    }

    #[test]
    fn a_subject_left_out_without_the_column_stays_unreadable() {
        let columns = Columns {
            id: "a",
            ty: "t",
            source: "/s",
            subject: None,
        };
        let stored = decode("~s}".into(), columns);
        assert!(Event::from_journal(&stored).is_err(), "{stored}");
    }

    proptest! {
        /// Whatever the attributes hold (quotes, backslashes, control
        /// characters, non-ASCII), the stored text reads back byte for byte.
        #[test]
        fn any_event_reads_back_byte_for_byte(
            id in "\\PC{1,20}",
            ty in "[a-z.]{1,12}",
            source in "/\\PC{0,20}",
            subject in proptest::option::of("\\PC{1,20}"),
            data in "\\PC{0,20}",
        ) {
            let mut value = json!({
                "specversion": "1.0", "id": id, "type": ty, "source": source,
                "data": {"text": data}
            });
            if let Some(subject) = &subject {
                value["subject"] = json!(subject);
            }
            let Ok(event) = Event::from_value(value) else {
                return Ok(());
            };
            let stored = encode(&event.json, columns(&event));
            prop_assert_eq!(decode(stored.into_owned(), columns(&event)), event.json);
        }
    }
}
