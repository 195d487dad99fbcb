//! A drop's configuration in two stages: [`RawDrop`] mirrors one
//! `[[file_drops]]` table of the daemon's TOML file (unknown keys are errors,
//! defaults are explicit), and [`DropConfig`] is the validated form: path
//! resolved, durations parsed, the subject template compiled. Validation reports
//! every problem at once, each message starting with its key path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Prefix of every event `source` a drop produces; `converge/` is reserved for
/// the daemon's own events.
pub const SOURCE_PREFIX: &str = "converge-filedrop/";

/// How a file's rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line, then one record per row; every value is a string.
    Csv,
    /// A JSON array of objects, or one object.
    Json,
    /// One JSON object per line (`.ndjson` or `.jsonl`).
    Ndjson,
}

impl Format {
    /// The format a file name's extension declares (case-insensitive).
    pub fn from_file_name(name: &str) -> Option<Format> {
        let (_, extension) = name.rsplit_once('.')?;
        match extension.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            _ => None,
        }
    }

    fn parse(text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" => Some(Format::Ndjson),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
        })
    }
}

/// One `[[file_drops]]` table as written. Defaults are the ones documented in
/// `docs/file-drops.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrop {
    pub name: String,
    pub dir: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    #[serde(default)]
    pub type_field: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub id_field: Option<String>,
    #[serde(default)]
    pub time_field: Option<String>,
    #[serde(default = "defaults::settle")]
    pub settle: String,
    #[serde(default = "defaults::settle_warn_after")]
    pub settle_warn_after: String,
    #[serde(default = "defaults::rescan")]
    pub rescan: String,
    #[serde(default = "defaults::max_row_bytes")]
    pub max_row_bytes: u64,
    #[serde(default = "defaults::chunk_rows")]
    pub chunk_rows: u64,
    #[serde(default = "defaults::csv_delimiter")]
    pub csv_delimiter: String,
}

mod defaults {
    pub fn settle() -> String {
        "2s".into()
    }
    pub fn settle_warn_after() -> String {
        "10m".into()
    }
    pub fn rescan() -> String {
        "10s".into()
    }
    pub fn max_row_bytes() -> u64 {
        1024 * 1024
    }
    pub fn chunk_rows() -> u64 {
        500
    }
    pub fn csv_delimiter() -> String {
        ",".into()
    }
}

impl RawDrop {
    /// A drop with every optional key at its default.
    pub fn new(name: impl Into<String>, dir: impl Into<String>) -> RawDrop {
        RawDrop {
            name: name.into(),
            dir: dir.into(),
            format: None,
            event_type: None,
            type_field: None,
            subject: None,
            id_field: None,
            time_field: None,
            settle: defaults::settle(),
            settle_warn_after: defaults::settle_warn_after(),
            rescan: defaults::rescan(),
            max_row_bytes: defaults::max_row_bytes(),
            chunk_rows: defaults::chunk_rows(),
            csv_delimiter: defaults::csv_delimiter(),
        }
    }
}

/// A validated drop: everything [`crate::run`] and [`crate::take_file`] need.
#[derive(Debug, Clone)]
pub struct DropConfig {
    /// Names the drop in logs and in the event source `converge-filedrop/<name>`.
    pub name: String,
    /// The watched folder (the inbox); `processed/` and `failed/` live inside it.
    pub dir: PathBuf,
    /// Forces every file's format; `None` reads the extension and leaves files
    /// with other extensions alone.
    pub format: Option<Format>,
    /// The event type, or the fallback when `type_field` is empty in a row.
    pub event_type: Option<String>,
    /// The column whose value is the event type.
    pub type_field: Option<String>,
    /// The event subject, built from the row's columns.
    pub subject: Option<Template>,
    /// The column holding the row's own stable id; `None` derives the id from
    /// the file content and the row's position.
    pub id_field: Option<String>,
    /// The column holding the event time (RFC 3339); `None` uses the file's
    /// modification time.
    pub time_field: Option<String>,
    /// How long size and modification time must stay unchanged before a file
    /// is taken.
    pub settle: Duration,
    /// A file still changing this long after it was first seen is reported once.
    pub settle_warn_after: Duration,
    /// The periodic rescan that catches what the file watcher missed.
    pub rescan: Duration,
    /// A longer row is a bad row (and, in a JSON array, ends the reading).
    pub max_row_bytes: usize,
    /// At most this many events per append to the sink.
    pub chunk_rows: usize,
    pub csv_delimiter: u8,
}

impl DropConfig {
    /// The CloudEvents `source` of every event this drop builds.
    pub fn source(&self) -> String {
        format!("{SOURCE_PREFIX}{}", self.name)
    }
}

/// A subject template such as `campaign/{campaign_id}`: text with `{column}`
/// placeholders; `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut column = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!(
                                    "unclosed `{{` in `{text}` (write `{{{{` for a literal brace)"
                                ));
                            }
                            Some(c) => column.push(c),
                        }
                    }
                    let column = column.trim();
                    if column.is_empty() {
                        return Err(format!("empty `{{}}` in `{text}`: name a column"));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Column(column.to_string()));
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` in `{text}` (write `}}}}` for a literal brace)"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Template { parts })
    }

    /// Fills the placeholders from a row; a missing, empty, or non-scalar
    /// column is an error naming it.
    pub fn render(&self, row: &Map<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Column(column) => out.push_str(&scalar(row, column)?),
            }
        }
        Ok(out)
    }
}

/// A column's value as text: strings as they are, numbers and booleans printed.
pub(crate) fn scalar(row: &Map<String, Value>, column: &str) -> Result<String, String> {
    match row.get(column) {
        None | Some(Value::Null) => Err(format!("column `{column}` is missing")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("column `{column}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(format!(
            "column `{column}` must be a string or a number, not an array or object"
        )),
    }
}

/// Validates one drop. `key_path` prefixes every message (`file_drops[0]`);
/// `resolve` turns the `dir` written in the config into the folder watched
/// (the daemon's resolves a relative one from the config file's folder, as
/// it does every path of its config).
pub fn validate(
    raw: RawDrop,
    key_path: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<DropConfig, Vec<String>> {
    let mut errors = Vec::new();
    let mut error =
        |key: &str, message: String| errors.push(format!("{key_path}.{key}: {message}"));

    let name = raw.name.trim().to_string();
    if name.is_empty() {
        error("name", "must not be empty".into());
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        error(
            "name",
            format!("`{name}` may contain only ASCII letters, digits, `-`, `_` and `.`"),
        );
    }

    let dir = if raw.dir.trim().is_empty() {
        error("dir", "must name a folder".into());
        PathBuf::new()
    } else {
        resolve(Path::new(raw.dir.trim()))
    };

    let format = match raw.format.as_deref().map(str::trim) {
        None => None,
        Some(text) => {
            let format = Format::parse(text);
            if format.is_none() {
                error(
                    "format",
                    format!("`{text}` is not one of \"csv\", \"json\", \"ndjson\""),
                );
            }
            format
        }
    };

    let has_type = raw.event_type.is_some() || raw.type_field.is_some();
    let mut field = |key: &str, value: Option<String>| -> Option<String> {
        let value = value?.trim().to_string();
        if value.is_empty() {
            error(key, "must not be empty when given".into());
            return None;
        }
        Some(value)
    };
    let event_type = field("type", raw.event_type);
    let type_field = field("type_field", raw.type_field);
    let id_field = field("id_field", raw.id_field);
    let time_field = field("time_field", raw.time_field);
    let subject_text = field("subject", raw.subject);

    if !has_type {
        error(
            "type",
            "give `type` (the event type) or `type_field` (the column holding it)".into(),
        );
    }
    let subject = subject_text.and_then(|text| match Template::parse(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            error("subject", e);
            None
        }
    });

    let mut duration =
        |key: &str, text: &str, min: Duration| match humantime::parse_duration(text.trim()) {
            Ok(d) if d >= min => d,
            Ok(_) => {
                error(
                    key,
                    format!("must be at least {}", humantime::format_duration(min)),
                );
                min
            }
            Err(e) => {
                error(
                    key,
                    format!("`{text}` is not a duration like \"500ms\", \"2s\" or \"10m\": {e}"),
                );
                min
            }
        };
    let settle = duration("settle", &raw.settle, Duration::ZERO);
    let settle_warn_after = duration(
        "settle_warn_after",
        &raw.settle_warn_after,
        Duration::from_secs(1),
    );
    let rescan = duration("rescan", &raw.rescan, Duration::from_millis(100));

    let mut count = |key: &str, value: u64, min: u64, max: u64| {
        if !(min..=max).contains(&value) {
            error(key, format!("must be between {min} and {max}"));
        }
        usize::try_from(value.clamp(min, max)).unwrap_or(usize::MAX)
    };
    let max_row_bytes = count("max_row_bytes", raw.max_row_bytes, 1024, 64 * 1024 * 1024);
    let chunk_rows = count("chunk_rows", raw.chunk_rows, 1, 10_000);

    let csv_delimiter = match raw.csv_delimiter.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\r' | b'\n') => *b,
        _ => {
            error(
                "csv_delimiter",
                format!(
                    "`{}` must be one ASCII character other than a quote or a line break",
                    raw.csv_delimiter
                ),
            );
            b','
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(DropConfig {
        name,
        dir,
        format,
        event_type,
        type_field,
        subject,
        id_field,
        time_field,
        settle,
        settle_warn_after,
        rescan,
        max_row_bytes,
        chunk_rows,
        csv_delimiter,
    })
}

/// Validates every drop of the daemon's `file_drops` list (`key` is its key
/// path, `resolve` as for [`validate`]), and checks that names and folders
/// are not shared between drops: folders as resolved, so two ways of
/// writing one folder are one folder.
pub fn validate_drops(
    raws: Vec<RawDrop>,
    key: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Vec<DropConfig>, Vec<String>> {
    let mut errors = Vec::new();
    let mut drops = Vec::new();
    for (index, raw) in raws.into_iter().enumerate() {
        match validate(raw, &format!("{key}[{index}]"), resolve) {
            Ok(drop) => drops.push((index, drop)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let mut names = BTreeMap::new();
    let mut dirs = BTreeMap::new();
    for (index, drop) in &drops {
        if let Some(first) = names.insert(drop.name.clone(), *index) {
            errors.push(format!(
                "{key}[{index}].name: `{}` is already the name of {key}[{first}]",
                drop.name
            ));
        }
        if let Some(first) = dirs.insert(drop.dir.clone(), *index) {
            errors.push(format!(
                "{key}[{index}].dir: `{}` is already watched by {key}[{first}]",
                drop.dir.display()
            ));
        }
    }
    if errors.is_empty() {
        Ok(drops.into_iter().map(|(_, d)| d).collect())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw() -> RawDrop {
        let mut raw = RawDrop::new("briefs", "inbox");
        raw.event_type = Some("brief.imported".into());
        raw
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let drop = validate(raw(), "file_drops[0]", &|dir: &Path| {
            Path::new("/etc/converge").join(dir)
        })
        .unwrap();
        assert_eq!(drop.dir, Path::new("/etc/converge/inbox"));
        assert_eq!(drop.settle, Duration::from_secs(2));
        assert_eq!(drop.settle_warn_after, Duration::from_secs(600));
        assert_eq!(drop.rescan, Duration::from_secs(10));
        assert_eq!(drop.max_row_bytes, 1024 * 1024);
        assert_eq!(drop.chunk_rows, 500);
        assert_eq!(drop.csv_delimiter, b',');
        assert_eq!(drop.format, None);
        assert_eq!(drop.source(), "converge-filedrop/briefs");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key_path() {
        let mut raw = RawDrop::new("bad name", " ");
        raw.format = Some("xlsx".into());
        raw.subject = Some("campaign/{campaign_id".into());
        raw.settle = "soon".into();
        raw.rescan = "1ms".into();
        raw.max_row_bytes = 10;
        raw.chunk_rows = 0;
        raw.csv_delimiter = "ab".into();
        raw.id_field = Some("".into());
        let errors =
            validate(raw, "file_drops[2]", &|dir: &Path| Path::new(".").join(dir)).unwrap_err();
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "file_drops[2].name",
                "file_drops[2].dir",
                "file_drops[2].format",
                "file_drops[2].id_field",
                "file_drops[2].type",
                "file_drops[2].subject",
                "file_drops[2].settle",
                "file_drops[2].rescan",
                "file_drops[2].max_row_bytes",
                "file_drops[2].chunk_rows",
                "file_drops[2].csv_delimiter",
            ],
            "{errors:#?}"
        );
    }

    #[test]
    fn names_and_folders_are_not_shared() {
        let mut other = raw();
        other.dir = "./inbox".into();
        let mut third = raw();
        third.name = "assets".into();
        third.dir = "assets".into();
        let errors = validate_drops(vec![raw(), other, third], "file_drops", &|dir: &Path| {
            Path::new("/c").join(dir)
        })
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "file_drops[1].name: `briefs` is already the name of file_drops[0]",
                "file_drops[1].dir: `/c/./inbox` is already watched by file_drops[0]",
            ]
        );
    }

    #[test]
    fn format_follows_the_extension_in_any_case() {
        assert_eq!(Format::from_file_name("a.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_file_name("a.b.json"), Some(Format::Json));
        assert_eq!(Format::from_file_name("a.jsonl"), Some(Format::Ndjson));
        assert_eq!(Format::from_file_name("a.ndjson"), Some(Format::Ndjson));
        assert_eq!(Format::from_file_name("a.xlsx"), None);
        assert_eq!(Format::from_file_name("csv"), None);
    }

    #[test]
    fn templates_fill_columns_and_name_the_missing_one() {
        let t = Template::parse("campaign/{campaign_id}/{{x}}-{n}").unwrap();
        let row = json!({"campaign_id": "c-42", "n": 7});
        assert_eq!(
            t.render(row.as_object().unwrap()).unwrap(),
            "campaign/c-42/{x}-7"
        );
        let row = json!({"campaign_id": ""});
        assert_eq!(
            t.render(row.as_object().unwrap()).unwrap_err(),
            "column `campaign_id` is empty"
        );
        let row = json!({"campaign_id": "c", "n": {"a": 1}});
        assert!(t.render(row.as_object().unwrap()).is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("a{}b").is_err());
        assert!(Template::parse("a{b{c}}").is_err());
        assert!(Template::parse("").is_err());
    }
}
