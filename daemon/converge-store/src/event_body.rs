//! How an event is stored in the `events.json` column: without the
//! attributes its row's columns already hold.
//!
//! An event's JSON (`converge_model::Event`) starts
//! `{"specversion":"1.0","id":..,"type":..,"source":..`; further on it
//! usually has `,"subject":..` and, once it came in on a hook,
//! `,"convergehook":..`. `id`, `type`, `source`, `subject` and `hook` are
//! columns of the row. When the JSON starts with that head, the stored text
//! is `~`, then a mark for each piece cut out of the rest, then the rest:
//!
//! - `s`: the subject piece followed the head directly (the usual place);
//!   `s<n>;`: it was at byte `n` of the rest.
//! - `h<n>;`: the hook piece was at byte `n` of the rest, once the subject
//!   piece was cut.
//!
//! A read rebuilds the same bytes from the columns: each piece goes back
//! where it was cut, so it does not matter whether the occurrence cut was
//! the attribute or the same text inside the data. The rest always starts
//! with `,` or `}`, so the marks cannot be mistaken for it. Any other JSON,
//! and every row written before this layout, is stored and read whole: a
//! stored text starting with `{` is the JSON itself.
//!
//! Only text is compared and joined, never parsed: the write path pays a
//! few short string builds and searches per event.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The attributes of an event that its row keeps in columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Columns<'a> {
    pub id: &'a str,
    pub ty: &'a str,
    pub source: &'a str,
    pub subject: Option<&'a str>,
    /// The hook it came in on; `None` (or empty, for rows written before
    /// hooks were recorded) when none.
    pub hook: Option<&'a str>,
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
        self.subject.map(|subject| piece("subject", subject))
    }

    /// `,"convergehook":..`, when the event came in on a hook.
    fn hook(&self) -> Option<String> {
        self.hook
            .filter(|hook| !hook.is_empty())
            .map(|hook| piece(converge_model::HOOK_EXTENSION, hook))
    }
}

/// `,"<name>":<value as a JSON string>`
fn piece(name: &str, value: &str) -> String {
    let mut piece = String::with_capacity(8 + name.len() + value.len());
    piece.push_str(",\"");
    piece.push_str(name);
    piece.push_str("\":");
    push_string(&mut piece, value);
    piece
}

/// `text` as a JSON string, escaped as serde_json escapes it (as the
/// event's JSON was written).
fn push_string(out: &mut String, text: &str) {
    if converge_model::json_text::is_plain(text) {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        // Writing a &str to a String cannot fail.
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
    }
}

/// `rest` without an occurrence of `piece`, and where it was: where the
/// attributes usually are first (the subject right after the head, the
/// hook last, where `Event::arrived_on` put it), then the first occurrence.
/// Any occurrence decodes to the same text; looking at those two places
/// first spares building a substring searcher for nearly every event.
fn cut(rest: &str, piece: Option<&str>) -> Option<(usize, String)> {
    let piece = piece?;
    let last = rest.len().checked_sub(piece.len() + 1);
    let at = if rest.starts_with(piece) {
        0
    } else if let Some(last) =
        last.filter(|&at| rest.get(at..).is_some_and(|tail| tail.starts_with(piece)))
    {
        last
    } else {
        rest.find(piece)?
    };
    let mut cut = String::with_capacity(rest.len() - piece.len());
    cut.push_str(&rest[..at]);
    cut.push_str(&rest[at + piece.len()..]);
    Some((at, cut))
}

/// The text to store for an event's `json`.
pub(crate) fn encode<'a>(json: &'a str, columns: Columns<'_>) -> Cow<'a, str> {
    let Some(rest) = json.strip_prefix(columns.head().as_str()) else {
        return Cow::Borrowed(json);
    };
    let mut stored = String::with_capacity(rest.len() + 12);
    stored.push('~');
    let subject = columns.subject();
    let mut rest = Cow::Borrowed(rest);
    if let Some((at, cut)) = cut(&rest, subject.as_deref()) {
        match at {
            0 => stored.push('s'),
            at => _ = write!(stored, "s{at};"),
        }
        rest = Cow::Owned(cut);
    }
    let hook = columns.hook();
    if let Some((at, cut)) = cut(&rest, hook.as_deref()) {
        _ = write!(stored, "h{at};");
        rest = Cow::Owned(cut);
    }
    stored.push_str(&rest);
    Cow::Owned(stored)
}

/// A mark's offset: `<n>;` at the start of `text`, and what follows it.
fn offset(text: &str) -> Option<(usize, &str)> {
    let (digits, after) = text.split_once(';')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, after))
}

/// `rest` with `piece` put back at byte `at`, if `at` is a place in it.
fn put_back(rest: &mut String, at: usize, piece: Option<String>) -> Option<()> {
    let piece = piece?;
    if !rest.is_char_boundary(at) {
        return None;
    }
    rest.insert_str(at, &piece);
    Some(())
}

/// The event's JSON from its stored text and its row's columns. A text
/// whose marks the columns cannot complete (a subject or hook left out in
/// a row without one, an offset past the text) is never written so: it is
/// returned as stored, which every reader refuses as not JSON rather than
/// read a guess.
pub(crate) fn decode(stored: String, columns: Columns<'_>) -> String {
    rebuild(&stored, columns).unwrap_or(stored)
}

fn rebuild(stored: &str, columns: Columns<'_>) -> Option<String> {
    let mut marks = stored.strip_prefix('~')?;
    let mut subject_at = None;
    if let Some(after) = marks.strip_prefix('s') {
        (subject_at, marks) = match offset(after) {
            Some((at, after)) => (Some(at), after),
            None => (Some(0), after),
        };
    }
    let mut hook_at = None;
    if let Some(after) = marks.strip_prefix('h') {
        let (at, after) = offset(after)?;
        (hook_at, marks) = (Some(at), after);
    }
    let mut rest = marks.to_string();
    if let Some(at) = hook_at {
        put_back(&mut rest, at, columns.hook())?;
    }
    if let Some(at) = subject_at {
        put_back(&mut rest, at, columns.subject())?;
    }
    let mut json = columns.head();
    json.push_str(&rest);
    Some(json)
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
            hook: event.hook.as_deref(),
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
        assert!(stored.starts_with("~s37;,\"datacontenttype\""), "{stored}");
        assert!(!stored.contains("task/LOAD-0"), "{stored}");
        assert_eq!(decode(stored.into_owned(), columns(&typed)), typed.json);
    }

    #[test]
    fn the_hook_an_event_came_in_on_is_left_out_and_read_back() {
        let hooked = event(json!({
            "specversion": "1.0", "id": "load-0", "type": "task.handoff",
            "source": "/converge-load", "datacontenttype": "application/json",
            "subject": "task/LOAD-0", "data": {"stage": "review"}
        }))
        .arrived_on(
            "load",
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        let stored = encode(&hooked.json, columns(&hooked));
        assert!(stored.starts_with("~s37;h"), "{stored}");
        assert!(!stored.contains("convergehook"), "{stored}");
        assert_eq!(decode(stored.into_owned(), columns(&hooked)), hooked.json);
        let journaled = Event::from_journal(&hooked.json).unwrap();
        assert_eq!(journaled.hook.as_deref(), Some("load"));
    }

    #[test]
    fn rows_stored_before_the_marks_had_offsets_read_the_same() {
        let columns = Columns {
            id: "a",
            ty: "t",
            source: "/s",
            subject: Some("task/T-1"),
            hook: Some("jira"),
        };
        let head = r#"{"specversion":"1.0","id":"a","type":"t","source":"/s""#;
        // `~s` then the rest: the subject right after the head, and the
        // hook (not left out then) still in the rest.
        let old = r#"~s,"data":{},"convergehook":"jira"}"#;
        assert_eq!(
            decode(old.into(), columns),
            format!(r#"{head},"subject":"task/T-1","data":{{}},"convergehook":"jira"}}"#)
        );
        assert_eq!(
            decode(r#"~,"data":{}}"#.into(), columns),
            format!(r#"{head},"data":{{}}}}"#)
        );
    }

    #[test]
    fn json_in_another_shape_and_old_rows_are_kept_whole() {
        let other = r#"{"id":"a","specversion":"1.0","type":"t","source":"/s"}"#;
        let columns = Columns {
            id: "a",
            ty: "t",
            source: "/s",
            subject: None,
            hook: None,
        };
        assert_eq!(encode(other, columns), other);
        assert_eq!(decode(other.to_string(), columns), other);
    }

    #[test]
    fn marks_the_columns_cannot_complete_stay_unreadable() {
        let columns = Columns {
            id: "a",
            ty: "t",
            source: "/s",
            subject: None,
            hook: None,
        };
        let with_both = Columns {
            subject: Some("task/T-1"),
            hook: Some("jira"),
            ..columns
        };
        for (stored, columns) in [
            ("~s}", columns),
            ("~s2;,\"a\":1}", columns),
            ("~h1;}", columns),
            // Offsets past the rest, or a hook mark without its offset.
            ("~s99;}", with_both),
            ("~h99;}", with_both),
            ("~h}", with_both),
        ] {
            let read = decode(stored.into(), columns);
            assert!(
                Event::from_journal(&read).is_err(),
                "{stored} read as {read}"
            );
        }
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
            hook in proptest::option::of("[a-z0-9-]{1,12}"),
            data in "\\PC{0,20}",
            echo in 0..3_u8,
        ) {
            // The data may hold the same pieces as the attributes, before
            // or after them: whichever occurrence is cut goes back there.
            let data = match echo {
                // "a" first, so each echo follows a comma as the pieces do.
                0 => json!({"text": data}),
                1 => json!({"a": data, "subject": subject}),
                _ => json!({"a": data, "convergehook": hook, "subject": subject}),
            };
            let mut value = json!({
                "specversion": "1.0", "id": id, "type": ty, "source": source, "data": data
            });
            if let Some(subject) = &subject {
                value["subject"] = json!(subject);
            }
            let Ok(mut event) = Event::from_value(value) else {
                return Ok(());
            };
            if let Some(hook) = &hook {
                event = event.arrived_on(hook, None);
            }
            let stored = encode(&event.json, columns(&event));
            prop_assert_eq!(decode(stored.into_owned(), columns(&event)), event.json);
        }
    }
}
