//! Streaming readers for the three formats. Each hands rows, one at a time,
//! to a callback, with memory bounded by `max_row_bytes` whatever the input:
//! a row over the limit is reported as a bad row (CSV, NDJSON) or ends the
//! reading (JSON, whose elements cannot be skipped without being parsed).

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize as _, Serialize};
use serde_json::{Map, Value};

use crate::config::Format;

/// Where a row is in its file: the line it starts on (CSV, NDJSON) or its
/// 1-based index in a JSON array (a single JSON object is element 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Line(u64),
    Element(u64),
}

impl Position {
    pub fn number(self) -> u64 {
        match self {
            Position::Line(n) | Position::Element(n) => n,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Element(n) => write!(f, "element {n}"),
        }
    }
}

/// One row as read: its columns, or why it is bad.
#[derive(Debug)]
pub(crate) struct RawRow {
    pub at: Position,
    pub fields: Result<Map<String, Value>, String>,
}

/// The callback's consumer is gone: stop reading.
#[derive(Debug)]
pub(crate) struct Stopped;

#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file, or its rest, is not readable as the format: rows already
    /// handed on stay good.
    Format(String),
    Io(io::Error),
    Stopped,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<Stopped> for ReadError {
    fn from(_: Stopped) -> Self {
        ReadError::Stopped
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_row_bytes: usize,
    pub csv_delimiter: u8,
}

/// More columns than any export has; bounds the header's memory.
const MAX_COLUMNS: usize = 4096;
const BUFFER: usize = 64 * 1024;

pub(crate) fn read_rows<R: Read>(
    format: Format,
    input: R,
    limits: Limits,
    emit: &mut dyn FnMut(RawRow) -> Result<(), Stopped>,
) -> Result<(), ReadError> {
    let input = BufReader::with_capacity(BUFFER, input);
    match format {
        Format::Csv => read_csv(input, limits, emit),
        Format::Ndjson => read_ndjson(input, limits, emit),
        Format::Json => read_json(input, limits, emit),
    }
}

// ---- CSV ----

/// Records pulled from `csv_core` into fixed buffers, so a huge field costs
/// nothing beyond `max_row_bytes` (the `csv` crate's reader would grow its
/// record to hold it).
struct CsvRecords {
    parser: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Line breaks skipped here rather than by the parser, so the line a
    /// record starts on is known.
    skipped_newlines: u64,
    last_line: u64,
}

struct RecordInfo {
    line: u64,
    fields: usize,
    too_long: bool,
    too_many_fields: bool,
}

impl CsvRecords {
    fn next(
        &mut self,
        input: &mut impl BufRead,
        max_fields: usize,
    ) -> io::Result<Option<RecordInfo>> {
        loop {
            let buf = input.fill_buf()?;
            let skip = buf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if skip == 0 {
                break;
            }
            self.skipped_newlines += buf[..skip].iter().filter(|&&b| b == b'\n').count() as u64;
            input.consume(skip);
        }
        // `line()` is 1-based: the line the parser is on. It counts `\n` only;
        // with lone `\r` line breaks the records still get increasing numbers,
        // which derived ids need to stay unique.
        let line = (self.skipped_newlines + self.parser.line()).max(self.last_line + 1);
        self.last_line = line;
        let ends_cap = max_fields.min(self.ends.len());
        let (mut nout, mut nend) = (0, 0);
        let (mut too_long, mut too_many_fields) = (false, false);
        loop {
            let buf = input.fill_buf()?;
            let at_end = buf.is_empty();
            let (result, nin, o, e) =
                self.parser
                    .read_record(buf, &mut self.out[nout..], &mut self.ends[nend..ends_cap]);
            input.consume(nin);
            nout += o;
            nend += e;
            match result {
                csv_core::ReadRecordResult::InputEmpty if at_end => {
                    return Ok(None);
                }
                csv_core::ReadRecordResult::InputEmpty => {}
                // Keep parsing to find the record's end, dropping its bytes.
                csv_core::ReadRecordResult::OutputFull => {
                    too_long = true;
                    nout = 0;
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    too_many_fields = true;
                    nend = 0;
                }
                csv_core::ReadRecordResult::Record => {
                    return Ok(Some(RecordInfo {
                        line,
                        fields: nend,
                        too_long,
                        too_many_fields,
                    }));
                }
                csv_core::ReadRecordResult::End => return Ok(None),
            }
        }
    }

    fn field(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.out[start..self.ends[index]]
    }
}

fn read_csv(
    mut input: impl BufRead,
    limits: Limits,
    emit: &mut dyn FnMut(RawRow) -> Result<(), Stopped>,
) -> Result<(), ReadError> {
    let mut records = CsvRecords {
        parser: csv_core::ReaderBuilder::new()
            .delimiter(limits.csv_delimiter)
            .build(),
        out: vec![0; limits.max_row_bytes],
        ends: vec![0; MAX_COLUMNS + 1],
        skipped_newlines: 0,
        last_line: 0,
    };
    let Some(header) = records.next(&mut input, MAX_COLUMNS + 1)? else {
        return Ok(());
    };
    if header.too_long {
        return Err(ReadError::Format(format!(
            "the header line is longer than max_row_bytes ({} bytes)",
            limits.max_row_bytes
        )));
    }
    if header.too_many_fields {
        return Err(ReadError::Format(format!(
            "the header has more than {MAX_COLUMNS} columns"
        )));
    }
    let mut names: Vec<String> = Vec::with_capacity(header.fields);
    for index in 0..header.fields {
        let Ok(name) = std::str::from_utf8(records.field(index)) else {
            return Err(ReadError::Format(format!(
                "column {} of the header is not UTF-8 text: is this a CSV file, exported as UTF-8?",
                index + 1
            )));
        };
        let name = match name.trim() {
            "" => format!("column_{}", index + 1),
            name => name.to_string(),
        };
        if names.contains(&name) {
            return Err(ReadError::Format(format!(
                "column `{name}` appears twice in the header"
            )));
        }
        names.push(name);
    }

    while let Some(record) = records.next(&mut input, names.len() + 1)? {
        let at = Position::Line(record.line);
        let fields = if record.too_long {
            Err(format!(
                "the row is longer than max_row_bytes ({} bytes)",
                limits.max_row_bytes
            ))
        } else if record.too_many_fields || record.fields != names.len() {
            let count = if record.too_many_fields {
                format!("more than {}", names.len() + 1)
            } else {
                record.fields.to_string()
            };
            Err(format!(
                "the row has {count} fields, the header has {}",
                names.len()
            ))
        } else {
            csv_row(&records, &names)
        };
        // A row of empty cells (spreadsheets export a few at the end) is no row.
        if matches!(&fields, Ok(row) if row.is_empty()) {
            continue;
        }
        emit(RawRow { at, fields })?;
    }
    Ok(())
}

/// Header name -> cell text; empty cells are left out.
fn csv_row(records: &CsvRecords, names: &[String]) -> Result<Map<String, Value>, String> {
    let mut row = Map::new();
    for (index, name) in names.iter().enumerate() {
        let bytes = records.field(index);
        if bytes.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(format!("the value of column `{name}` is not UTF-8 text"));
        };
        row.insert(name.clone(), Value::String(text.to_string()));
    }
    Ok(row)
}

// ---- NDJSON ----

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line into `line` (without its `\n`), keeping at most `cap`
/// bytes: the rest of a longer line is skipped, never buffered.
fn read_line_capped(input: &mut impl BufRead, line: &mut Vec<u8>, cap: usize) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(match (read_any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        read_any = true;
        let (chunk, found_end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        if !too_long {
            if line.len() + chunk.len() > cap {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(found_end);
        input.consume(used);
        if found_end {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

fn read_ndjson(
    mut input: impl BufRead,
    limits: Limits,
    emit: &mut dyn FnMut(RawRow) -> Result<(), Stopped>,
) -> Result<(), ReadError> {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        number += 1;
        let at = Position::Line(number);
        match read_line_capped(&mut input, &mut line, limits.max_row_bytes)? {
            Line::Eof => return Ok(()),
            Line::TooLong => emit(RawRow {
                at,
                fields: Err(format!(
                    "the line is longer than max_row_bytes ({} bytes)",
                    limits.max_row_bytes
                )),
            })?,
            Line::Complete => {
                let mut text = line.as_slice();
                if number == 1 {
                    text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
                }
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let fields = match serde_json::from_slice::<Value>(text) {
                    Ok(Value::Object(row)) => Ok(row),
                    Ok(other) => Err(format!("the line is {}, not a JSON object", kind(&other))),
                    Err(e) => Err(format!("not valid JSON: {e}")),
                };
                emit(RawRow { at, fields })?;
            }
        }
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---- JSON ----

/// Counts the bytes the JSON parser takes since the current element began,
/// and fails the read past the limit: serde_json would otherwise build an
/// element of any size in memory.
struct Budgeted<'a, R> {
    inner: R,
    used: &'a Cell<usize>,
    limit: usize,
    exceeded: &'a Cell<bool>,
}

impl<R: Read> Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.limit.saturating_sub(self.used.get());
        if left == 0 {
            self.exceeded.set(true);
            return Err(io::Error::other("row larger than max_row_bytes"));
        }
        let take = buf.len().min(left);
        let n = self.inner.read(&mut buf[..take])?;
        self.used.set(self.used.get() + n);
        Ok(n)
    }
}

struct JsonState<'a> {
    used: &'a Cell<usize>,
    stopped: &'a Cell<bool>,
    element: &'a Cell<u64>,
}

/// Streams the top-level value: each element of an array, or one object.
struct TopLevel<'a, 'e> {
    state: &'a JsonState<'a>,
    emit: &'e mut dyn FnMut(RawRow) -> Result<(), Stopped>,
}

impl TopLevel<'_, '_> {
    fn hand_on<E: de::Error>(&mut self, value: Value) -> Result<(), E> {
        let at = Position::Element(self.state.element.get());
        let fields = match value {
            Value::Object(row) => Ok(row),
            other => Err(format!(
                "the element is {}, not a JSON object",
                kind(&other)
            )),
        };
        (self.emit)(RawRow { at, fields }).map_err(|Stopped| {
            self.state.stopped.set(true);
            E::custom("stopped")
        })
    }
}

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of objects, or one object")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.state.used.set(0);
            self.state.element.set(self.state.element.get() + 1);
            match seq.next_element::<Value>()? {
                Some(value) => self.hand_on(value)?,
                None => return Ok(()),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        self.state.element.set(1);
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.hand_on(value)
    }
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn read_json(
    mut input: impl BufRead,
    limits: Limits,
    emit: &mut dyn FnMut(RawRow) -> Result<(), Stopped>,
) -> Result<(), ReadError> {
    // A file of only whitespace (or a BOM) is an empty file, not a bad one.
    let mut start = true;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut skip = 0;
        if start && buf.starts_with(b"\xEF\xBB\xBF") {
            skip = 3;
        }
        start = false;
        skip += buf[skip..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        let rest = buf.len() - skip;
        input.consume(skip);
        if rest > 0 {
            break;
        }
    }

    let used = Cell::new(0);
    let exceeded = Cell::new(false);
    let stopped = Cell::new(false);
    let element = Cell::new(0);
    let state = JsonState {
        used: &used,
        stopped: &stopped,
        element: &element,
    };
    let reader = Budgeted {
        inner: input,
        used: &used,
        limit: limits.max_row_bytes,
        exceeded: &exceeded,
    };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let result = TopLevel {
        state: &state,
        emit,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| {
        // Trailing whitespace is fine; the budget is not an element's any more.
        used.set(0);
        deserializer.end()
    });
    match result {
        Ok(()) => Ok(()),
        Err(_) if stopped.get() => Err(ReadError::Stopped),
        Err(_) if exceeded.get() => Err(ReadError::Format(format!(
            "element {} is larger than max_row_bytes ({} bytes); the rest of the file was not \
             read (export large lists as NDJSON, one object per line)",
            element.get(),
            limits.max_row_bytes
        ))),
        Err(e) if e.is_io() => Err(ReadError::Io(e.into())),
        Err(e) if element.get() > 0 => Err(ReadError::Format(format!(
            "element {}: {e}; the rest of the file was not read",
            element.get()
        ))),
        Err(e) => Err(ReadError::Format(format!("not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_row_bytes: 1024,
        csv_delimiter: b',',
    };

    type Rows = Vec<(Position, Result<Value, String>)>;

    /// Every row as `(position, Ok(json) | Err(reason))`, and how reading ended.
    fn rows(format: Format, input: &[u8]) -> (Rows, Result<(), String>) {
        rows_with(format, input, LIMITS)
    }

    fn rows_with(format: Format, input: &[u8], limits: Limits) -> (Rows, Result<(), String>) {
        let mut out = Vec::new();
        let end = read_rows(format, input, limits, &mut |row| {
            out.push((row.at, row.fields.map(Value::Object)));
            Ok(())
        });
        let end = end.map_err(|e| match e {
            ReadError::Format(m) => m,
            ReadError::Io(e) => format!("io: {e}"),
            ReadError::Stopped => "stopped".into(),
        });
        (out, end)
    }

    #[test]
    fn csv_rows_are_header_to_text_and_empty_cells_are_left_out() {
        let input = "\u{feff}id, name ,note\r\n1,Spring,\r\n\r\n2,\"Fall, \"\"big\"\"\nlaunch\",x\r\n,,\r\n";
        let (rows, end) = rows(Format::Csv, input.as_bytes());
        end.unwrap();
        assert_eq!(
            rows,
            [
                (Position::Line(2), Ok(json!({"id": "1", "name": "Spring"}))),
                (
                    Position::Line(4),
                    Ok(json!({"id": "2", "name": "Fall, \"big\"\nlaunch", "note": "x"}))
                ),
            ]
        );
    }

    #[test]
    fn csv_bad_rows_are_named_and_reading_goes_on() {
        let mut input = b"a,b\n1,2\n1,2,3\n1\n".to_vec();
        input.extend_from_slice(b"\xff\xfe,2\n");
        input.extend_from_slice(format!("{},2\n", "x".repeat(2000)).as_bytes());
        input.extend_from_slice(b"1,2,3,4,5,6\n3,4");
        let (rows, end) = rows(Format::Csv, &input);
        end.unwrap();
        let summary: Vec<(u64, bool)> = rows.iter().map(|(p, r)| (p.number(), r.is_ok())).collect();
        assert_eq!(
            summary,
            [
                (2, true),
                (3, false),
                (4, false),
                (5, false),
                (6, false),
                (7, false),
                (8, true)
            ]
        );
        assert_eq!(
            rows[1].1,
            Err("the row has 3 fields, the header has 2".into())
        );
        assert_eq!(
            rows[3].1,
            Err("the value of column `a` is not UTF-8 text".into())
        );
        assert_eq!(
            rows[4].1,
            Err("the row is longer than max_row_bytes (1024 bytes)".into())
        );
        assert_eq!(
            rows[5].1,
            Err("the row has more than 3 fields, the header has 2".into())
        );
    }

    #[test]
    fn csv_header_problems_are_file_problems() {
        assert_eq!(rows(Format::Csv, b""), (vec![], Ok(())));
        assert_eq!(rows(Format::Csv, b"a,b\r\n"), (vec![], Ok(())));
        assert_eq!(
            rows(Format::Csv, b"a,a\n1,2\n").1,
            Err("column `a` appears twice in the header".into())
        );
        assert!(rows(Format::Csv, b"\xff\xd8\xff\xe0,b\n").1.is_err());
        let (named, end) = rows(Format::Csv, b"a,,c\n1,2,3\n");
        end.unwrap();
        assert_eq!(named[0].1, Ok(json!({"a": "1", "column_2": "2", "c": "3"})));
    }

    #[test]
    fn csv_rows_split_by_lone_carriage_returns_keep_distinct_positions() {
        let (rows, end) = rows(Format::Csv, b"a\r1\r2\r3");
        end.unwrap();
        let lines: Vec<u64> = rows.iter().map(|(at, _)| at.number()).collect();
        assert_eq!(lines, [2, 3, 4]);
    }

    #[test]
    fn csv_delimiter_is_configurable() {
        let limits = Limits {
            csv_delimiter: b';',
            ..LIMITS
        };
        let (rows, _) = rows_with(Format::Csv, b"a;b\n1,5;2\n", limits);
        assert_eq!(rows[0].1, Ok(json!({"a": "1,5", "b": "2"})));
    }

    #[test]
    fn ndjson_lines_are_objects() {
        let long = format!("{{\"a\":\"{}\"}}\n", "x".repeat(2000));
        let input = format!("{{\"a\":1}}\r\n\n  \n[1]\nnot json\n{long}{{\"a\":2}}");
        let (rows, end) = rows(Format::Ndjson, input.as_bytes());
        end.unwrap();
        let summary: Vec<(u64, bool)> = rows.iter().map(|(p, r)| (p.number(), r.is_ok())).collect();
        assert_eq!(
            summary,
            [(1, true), (4, false), (5, false), (6, false), (7, true)]
        );
        assert_eq!(
            rows[1].1,
            Err("the line is an array, not a JSON object".into())
        );
        assert_eq!(
            rows[3].1,
            Err("the line is longer than max_row_bytes (1024 bytes)".into())
        );
        assert_eq!(rows[4].1, Ok(json!({"a": 2})));
    }

    #[test]
    fn json_streams_an_array_or_takes_one_object() {
        let (array, end) = rows(Format::Json, br#" [{"a":1}, 2, {"b":[1,2]}] "#);
        end.unwrap();
        assert_eq!(
            array,
            [
                (Position::Element(1), Ok(json!({"a": 1}))),
                (
                    Position::Element(2),
                    Err("the element is a number, not a JSON object".into())
                ),
                (Position::Element(3), Ok(json!({"b": [1, 2]}))),
            ]
        );
        let (one, end) = rows(Format::Json, br#"{"a":1}"#);
        end.unwrap();
        assert_eq!(one, [(Position::Element(1), Ok(json!({"a": 1})))]);
        assert_eq!(rows_of(b"  \n"), (0, Ok(())));
        assert_eq!(rows_of(b"[]"), (0, Ok(())));
    }

    fn rows_of(input: &[u8]) -> (usize, Result<(), String>) {
        let (rows, end) = rows(Format::Json, input);
        (rows.len(), end)
    }

    #[test]
    fn json_problems_keep_the_rows_before_them() {
        let (n, end) = rows_of(br#"[{"a":1},{"a":"#);
        assert_eq!(n, 1);
        assert!(end.unwrap_err().starts_with("element 2: EOF while parsing"));
        let (n, end) = rows_of(br#"[{"a":1}] x"#);
        assert_eq!(n, 1);
        assert!(end.unwrap_err().contains("trailing characters"));
        let (n, end) = rows_of(b"42");
        assert_eq!(n, 0);
        assert!(
            end.unwrap_err()
                .contains("expected a JSON array of objects, or one object")
        );
        let big = format!(r#"[{{"a":1}},{{"a":"{}"}},{{"a":3}}]"#, "x".repeat(5000));
        let (n, end) = rows_of(big.as_bytes());
        assert_eq!(n, 1);
        assert!(
            end.unwrap_err()
                .starts_with("element 2 is larger than max_row_bytes")
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        let (limits, format) = (
            Limits {
                max_row_bytes: 1 << 20,
                ..LIMITS
            },
            Format::Json,
        );
        assert!(rows_with(format, deep.as_bytes(), limits).1.is_err());
        let line = format!("{}\n", "[".repeat(100_000));
        let (rows, end) = rows_with(Format::Ndjson, line.as_bytes(), limits);
        end.unwrap();
        assert!(rows[0].1.is_err());
    }

    #[test]
    fn a_gone_consumer_stops_every_reader() {
        for (format, input) in [
            (Format::Csv, &b"a\n1\n2\n"[..]),
            (Format::Ndjson, b"{}\n{}\n"),
            (Format::Json, b"[{},{}]"),
        ] {
            let mut seen = 0;
            let end = read_rows(format, input, LIMITS, &mut |_| {
                seen += 1;
                Err(Stopped)
            });
            assert!(matches!(end, Err(ReadError::Stopped)), "{format}");
            assert_eq!(seen, 1);
        }
    }

    /// Derived ids are `<hash>:<position>`: positions must never repeat.
    fn positions_increase(rows: &[(Position, Result<Value, String>)]) -> bool {
        rows.windows(2).all(|w| w[0].0.number() < w[1].0.number())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for format in [Format::Csv, Format::Ndjson, Format::Json] {
                let (rows, _) = rows_with(format, &bytes, Limits { max_row_bytes: 64, csv_delimiter: b',' });
                prop_assert!(positions_increase(&rows), "{format}");
            }
        }

        #[test]
        fn csv_like_text_never_panics(text in "[a-c,\"\r\n\u{feff}é]{0,400}") {
            let (rows, _) = rows_with(Format::Csv, text.as_bytes(), Limits { max_row_bytes: 32, csv_delimiter: b',' });
            prop_assert!(positions_increase(&rows));
            prop_assert!(rows.iter().all(|(at, _)| at.number() >= 2));
        }

        #[test]
        fn ndjson_like_text_never_panics(text in "[{}\\[\\]\":,a1 \r\n]{0,400}") {
            let (rows, _) = rows_with(Format::Ndjson, text.as_bytes(), Limits { max_row_bytes: 32, csv_delimiter: b',' });
            prop_assert!(positions_increase(&rows));
        }
    }
}
