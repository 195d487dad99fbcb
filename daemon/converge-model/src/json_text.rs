//! JSON text written directly, where going through serde costs more than
//! the text: serde_json's escaper looks at a string a byte at a time.

/// Whether `text` goes into a JSON string as it is: it holds nothing that
/// serde_json escapes (control characters, `"` and `\`), so its JSON is
/// `"` + `text` + `"`.
pub fn is_plain(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
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
