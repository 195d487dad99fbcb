//! How a row becomes an event: its stable id, type, subject, time and data.

use chrono::DateTime;
use converge_model::{Event, sources};
use serde_json::{Map, Value, json};

use crate::config::{DropConfig, Format, scalar};
use crate::rows::Position;

/// How many hex digits of the file's SHA-256 start a derived id (128 bits).
pub(crate) const ID_HASH_HEX: usize = 32;

/// What every row of one file shares.
pub(crate) struct FileContext {
    pub source: String,
    pub format: Format,
    /// The file's SHA-256, hex.
    pub sha256: String,
    /// The file's modification time, RFC 3339: the default event time.
    pub mtime: Option<String>,
}

pub(crate) fn build_event(
    config: &DropConfig,
    file: &FileContext,
    at: Position,
    row: Map<String, Value>,
) -> Result<Event, String> {
    if file.format != Format::Csv && row.contains_key("specversion") {
        return pass_through(row);
    }
    let id = match &config.id_field {
        Some(column) => scalar(&row, column)?,
        None => format!("{}:{}", &file.sha256[..ID_HASH_HEX], at.number()),
    };
    let ty = match (&config.type_field, &config.event_type) {
        (Some(column), fallback) => match (scalar(&row, column), fallback) {
            (Ok(ty), _) => ty,
            (Err(_), Some(fallback)) => fallback.clone(),
            (Err(e), None) => return Err(e),
        },
        (None, Some(ty)) => ty.clone(),
        (None, None) => unreachable!("validation requires `type` or `type_field`"),
    };
    let subject = match &config.subject {
        Some(template) => Some(template.render(&row).map_err(|e| format!("subject: {e}"))?),
        None => None,
    };
    let time = match &config.time_field {
        Some(column) => {
            let text = scalar(&row, column)?;
            let time = DateTime::parse_from_rfc3339(&text).map_err(|e| {
                format!("column `{column}`: `{text}` is not an RFC 3339 time ({e})")
            })?;
            Some(time.to_rfc3339())
        }
        None => file.mtime.clone(),
    };
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": file.source,
        "type": ty,
        "datacontenttype": "application/json",
        "data": Value::Object(row),
    });
    if let Some(subject) = subject {
        event["subject"] = Value::String(subject);
    }
    if let Some(time) = time {
        event["time"] = Value::String(time);
    }
    Event::from_value(event).map_err(|e| e.to_string())
}

/// A row that is already a CloudEvent is taken as it is, except that the
/// daemon's own sources stay its own.
fn pass_through(row: Map<String, Value>) -> Result<Event, String> {
    let event = Event::from_value(Value::Object(row)).map_err(|e| e.to_string())?;
    if sources::is_reserved(&event.source) {
        return Err(format!(
            "source `{}`: sources starting with `{}` are reserved for the daemon",
            event.source,
            sources::RESERVED_PREFIX
        ));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{RawDrop, validate};

    fn config(edit: impl FnOnce(&mut RawDrop)) -> DropConfig {
        let mut raw = RawDrop::new("briefs", "inbox");
        raw.event_type = Some("brief.imported".into());
        edit(&mut raw);
        validate(raw, "file_drops[0]", &|dir: &Path| Path::new("/").join(dir)).unwrap()
    }

    fn file(format: Format) -> FileContext {
        FileContext {
            source: "converge-filedrop/briefs".into(),
            format,
            sha256: "ab".repeat(32),
            mtime: Some("2026-03-01T10:00:00+00:00".into()),
        }
    }

    fn row(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn derived_ids_are_the_file_hash_and_the_position() {
        let c = config(|r| r.subject = Some("campaign/{campaign_id}".into()));
        let e = build_event(
            &c,
            &file(Format::Csv),
            Position::Line(3),
            row(json!({"campaign_id": "c-42"})),
        )
        .unwrap();
        assert_eq!(e.id, format!("{}:3", "ab".repeat(16)));
        assert_eq!(e.source, "converge-filedrop/briefs");
        assert_eq!(e.ty, "brief.imported");
        assert_eq!(e.subject.as_deref(), Some("campaign/c-42"));
        assert_eq!(e.time.unwrap().to_rfc3339(), "2026-03-01T10:00:00+00:00");
        assert_eq!(e.data, json!({"campaign_id": "c-42"}));
    }

    #[test]
    fn columns_give_id_type_and_time() {
        let c = config(|r| {
            r.id_field = Some("ref".into());
            r.type_field = Some("kind".into());
            r.time_field = Some("at".into());
        });
        let f = file(Format::Json);
        let e = build_event(
            &c,
            &f,
            Position::Element(1),
            row(json!({"ref": 17, "kind": "asset.listed", "at": "2026-04-01T08:30:00+02:00"})),
        )
        .unwrap();
        assert_eq!((e.id.as_str(), e.ty.as_str()), ("17", "asset.listed"));
        assert_eq!(e.time.unwrap().to_rfc3339(), "2026-04-01T06:30:00+00:00");
        let fallback = build_event(
            &c,
            &f,
            Position::Element(2),
            row(json!({"ref": "r", "at": "2026-04-01T08:30:00Z"})),
        )
        .unwrap();
        assert_eq!(fallback.ty, "brief.imported");
        let bad_time = build_event(
            &c,
            &f,
            Position::Element(3),
            row(json!({"ref": "r", "at": "tomorrow"})),
        );
        assert!(
            bad_time
                .unwrap_err()
                .starts_with("column `at`: `tomorrow` is not an RFC 3339 time")
        );
        let no_id = build_event(
            &c,
            &f,
            Position::Element(4),
            row(json!({"at": "2026-04-01T08:30:00Z"})),
        );
        assert_eq!(no_id.unwrap_err(), "column `ref` is missing");
    }

    #[test]
    fn a_missing_subject_column_is_a_bad_row() {
        let c = config(|r| r.subject = Some("campaign/{campaign_id}".into()));
        let err = build_event(
            &c,
            &file(Format::Csv),
            Position::Line(2),
            row(json!({"x": "1"})),
        );
        assert_eq!(err.unwrap_err(), "subject: column `campaign_id` is missing");
    }

    #[test]
    fn cloudevents_pass_through_but_not_with_reserved_sources() {
        let c = config(|_| {});
        let e = build_event(
            &c,
            &file(Format::Ndjson),
            Position::Line(1),
            row(json!({"specversion": "1.0", "id": "x-1", "source": "/crm", "type": "lead.created", "data": {"a": 1}})),
        )
        .unwrap();
        assert_eq!((e.id.as_str(), e.source.as_str()), ("x-1", "/crm"));
        let reserved = build_event(
            &c,
            &file(Format::Ndjson),
            Position::Line(2),
            row(json!({"specversion": "1.0", "id": "t", "source": "converge/timers", "type": "t"})),
        );
        assert!(reserved.unwrap_err().contains("reserved"));
        let invalid = build_event(
            &c,
            &file(Format::Json),
            Position::Element(1),
            row(json!({"specversion": "1.0", "id": "t", "source": "/crm"})),
        );
        assert!(invalid.unwrap_err().contains("`type` is missing"));
        // In a CSV file `specversion` is only a column.
        let csv = build_event(
            &c,
            &file(Format::Csv),
            Position::Line(2),
            row(json!({"specversion": "1.0"})),
        )
        .unwrap();
        assert_eq!(csv.source, "converge-filedrop/briefs");
    }
}
