//! The optional header at the top of a rule file: `//! key: value` lines,
//! Rhai comments, so the file stays a valid script.
//!
//! ```text
//! //! name: stalled_handoff
//! //! description: Escalate handoffs that do not move.
//! //! events: task.handoff, task.updated
//! //! order: 20
//! //! catch_up: skip
//! ```
//!
//! The header is the run of `//!` lines the file starts with (blank lines
//! before it are allowed); a `//!` line with nothing after it is allowed
//! inside the header. Every key is optional and may appear once.

use converge_model::CatchUp;

/// Where rules run when their header names no `order`.
pub const DEFAULT_ORDER: i64 = 100;

/// What a rule's header said, with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Metadata {
    pub name: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<String>>,
    pub order: i64,
    pub catch_up: CatchUp,
}

impl Default for Metadata {
    fn default() -> Metadata {
        Metadata {
            name: None,
            description: None,
            events: None,
            order: DEFAULT_ORDER,
            catch_up: CatchUp::default(),
        }
    }
}

/// A header problem: 1-based line and column, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Reads the header; every problem in it, not only the first.
pub(crate) fn parse(source: &str) -> Result<Metadata, Vec<HeaderError>> {
    let mut metadata = Metadata::default();
    let mut errors = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut in_header = false;
    for (index, line) in source.lines().enumerate() {
        let line_no = index + 1;
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        let Some(rest) = trimmed.strip_prefix("//!") else {
            if trimmed.is_empty() && !in_header {
                continue;
            }
            break;
        };
        in_header = true;
        let body_offset = indent + 3 + (rest.len() - rest.trim_start().len());
        let body = rest.trim();
        if body.is_empty() {
            continue;
        }
        let mut fail = |offset: usize, message: String| {
            errors.push(HeaderError {
                line: line_no,
                column: column_of(line, offset),
                message,
            });
        };
        let Some((key, value)) = body.split_once(':') else {
            fail(
                body_offset,
                format!("rule header: expected `key: value`, got `{body}`"),
            );
            continue;
        };
        let key = key.trim();
        let value_offset = body_offset
            + key.len()
            + (body.len() - key.len() - value.len())
            + (value.len() - value.trim_start().len());
        let value = value.trim();
        if seen.contains(&key) {
            fail(body_offset, format!("rule header: `{key}` is given twice"));
            continue;
        }
        let result = match key {
            "name" => parse_name(value).map(|v| metadata.name = Some(v)),
            "description" => {
                non_empty("description", value).map(|v| metadata.description = Some(v.to_string()))
            }
            "events" => parse_events(value).map(|v| metadata.events = Some(v)),
            "order" => value
                .parse::<i64>()
                .map(|v| metadata.order = v)
                .map_err(|_| format!("rule header: `order` must be an integer, got `{value}`")),
            "catch_up" => parse_catch_up(value).map(|v| metadata.catch_up = v),
            other => {
                fail(
                    body_offset,
                    format!(
                        "rule header: unknown key `{other}` (known: name, description, events, order, catch_up)"
                    ),
                );
                continue;
            }
        };
        seen.push(key);
        if let Err(message) = result {
            fail(value_offset, message);
        }
    }
    if errors.is_empty() {
        Ok(metadata)
    } else {
        Err(errors)
    }
}

/// Byte offset in `line` to a 1-based column in characters, as Rhai counts.
fn column_of(line: &str, offset: usize) -> usize {
    line.get(..offset).map_or(offset, |s| s.chars().count()) + 1
}

fn non_empty<'a>(key: &str, value: &'a str) -> Result<&'a str, String> {
    if value.is_empty() {
        Err(format!("rule header: `{key}` must not be empty"))
    } else {
        Ok(value)
    }
}

fn parse_catch_up(value: &str) -> Result<CatchUp, String> {
    match value {
        "fire_late" => Ok(CatchUp::FireLate),
        "skip" => Ok(CatchUp::Skip),
        other => Err(format!(
            "rule header: `catch_up` must be `fire_late` or `skip`, got `{other}`"
        )),
    }
}

fn parse_name(value: &str) -> Result<String, String> {
    let value = non_empty("name", value)?;
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        Ok(value.to_string())
    } else {
        Err(format!(
            "rule header: `name` may hold letters, digits, `_`, `-` and `.`, got `{value}`"
        ))
    }
}

/// `task.handoff, task.*`: event types, where `*` stands for any run of
/// characters.
fn parse_events(value: &str) -> Result<Vec<String>, String> {
    non_empty("events", value)?;
    value
        .split(',')
        .map(str::trim)
        .map(|pattern| {
            if pattern.is_empty() {
                Err(format!(
                    "rule header: `events` has an empty entry in `{value}`"
                ))
            } else if pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
            {
                Ok(pattern.to_string())
            } else {
                Err(format!(
                    "rule header: `{pattern}` is not an event type or pattern (letters, digits, `.`, `_`, `-`, and `*` for any run of characters)"
                ))
            }
        })
        .collect()
}

/// Whether `event_type` matches `pattern`, where `*` matches any run of
/// characters (also none, also dots): `task.*` matches `task.updated` and
/// `task.due.changed`, not `task`.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = event_type.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_event_types() {
        for (pattern, ty, expected) in [
            ("task.updated", "task.updated", true),
            ("task.updated", "task.updated2", false),
            ("task.*", "task.updated", true),
            ("task.*", "task.due.changed", true),
            ("task.*", "task", false),
            ("task.*", "tasks.updated", false),
            ("*", "anything", true),
            ("*.updated", "campaign.channel.updated", true),
            ("*.updated", "campaign.created", false),
            ("campaign.*.updated", "campaign.channel.updated", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
        ] {
            assert_eq!(matches(pattern, ty), expected, "{pattern} ~ {ty}");
        }
    }

    #[test]
    fn header_keys_and_defaults() {
        let m = parse(
            "\n//! name: stalled\n//!\n//! events: task.handoff, task.*\n//! order: -5\n//! catch_up: skip\n//! description: Escalate: stalled work.\nlet x = 1;\n//! order: not header any more\n",
        )
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("stalled"));
        assert_eq!(m.description.as_deref(), Some("Escalate: stalled work."));
        assert_eq!(
            m.events,
            Some(vec!["task.handoff".to_string(), "task.*".to_string()])
        );
        assert_eq!((m.order, m.catch_up), (-5, CatchUp::Skip));
        assert_eq!(parse("let x = 1;").unwrap(), Metadata::default());
    }

    #[test]
    fn header_errors_point_at_the_key_or_value() {
        let errors = parse(
            "//! nme: x\n//!   order: soon\n//! catch_up: later\n//! events: a,,b\n//! just text\n//! order: 1\n",
        )
        .unwrap_err();
        let found: Vec<(usize, usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column, e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    1,
                    5,
                    "rule header: unknown key `nme` (known: name, description, events, order, catch_up)"
                ),
                (2, 14, "rule header: `order` must be an integer, got `soon`"),
                (
                    3,
                    15,
                    "rule header: `catch_up` must be `fire_late` or `skip`, got `later`"
                ),
                (4, 13, "rule header: `events` has an empty entry in `a,,b`"),
                (5, 5, "rule header: expected `key: value`, got `just text`"),
                (6, 5, "rule header: `order` is given twice"),
            ]
        );
    }
}
