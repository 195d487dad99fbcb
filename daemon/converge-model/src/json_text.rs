//! JSON text written directly, where going through serde costs more than
//! the text: serde_json's escaper looks at a string a byte at a time. What
//! these functions append is the text serde_json writes of the same value
//! (the property tests of `entity_json` and the store's decision bodies
//! hold them to it).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Whether `text` goes into a JSON string as it is: it holds nothing that
/// serde_json escapes (control characters, `"` and `\`), so its JSON is
/// `"` + `text` + `"`.
pub fn is_plain(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `value` as serde_json writes it.
pub fn value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => string(out, text),
        Value::Object(members) => object(out, members),
        Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                self::value(out, item);
            }
            out.push(b']');
        }
        other => serialized(out, other),
    }
}

/// Appends `members` (a `serde_json::Map`, or a `BTreeMap` of values) as a
/// JSON object, in their order.
pub fn object<'a>(out: &mut Vec<u8>, members: impl IntoIterator<Item = (&'a String, &'a Value)>) {
    out.push(b'{');
    for (n, (name, member)) in members.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        string(out, name);
        out.push(b':');
        value(out, member);
    }
    out.push(b'}');
}

/// A JSON string: copied whole when nothing in it needs escaping (control
/// characters, `"` and `\`), else escaped by serde_json.
pub fn string(out: &mut Vec<u8>, text: &str) {
    if is_plain(text) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serialized(out, text);
    }
}

/// Appends `text` as a JSON string, or `null`.
pub fn optional_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `at` as the JSON string `rfc3339::serialize` writes.
pub fn time(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    out.push(b'"');
    out.extend_from_slice(crate::rfc3339::format(at).as_bytes());
    out.push(b'"');
}

/// Appends `at` as a JSON string, or `null`.
pub fn optional_time(out: &mut Vec<u8>, at: Option<&DateTime<Utc>>) {
    match at {
        Some(at) => time(out, at),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends what serde_json writes of `value`: for what is not worth
/// writing by hand (numbers, escapes).
pub fn serialized(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("plain data serializes");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn what_serde_escapes_is_not_plain() {
        for text in ["a\"b", "a\\b", "tab\t", "nul\u{0}", "\u{1f}"] {
            assert!(!is_plain(text), "{text:?}");
        }
        for text in ["", "plain words", "del \u{7f}", "é ☃", "/slash/"] {
            assert!(is_plain(text), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn plain_text_is_its_own_json(text in any::<String>()) {
            let json = serde_json::to_string(&text).unwrap();
            prop_assert_eq!(is_plain(&text), json == format!("\"{text}\""));
        }
    }
}
