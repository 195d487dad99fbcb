//! Text shown to a person: a sender's value in an error, a cause in the
//! console.

use std::borrow::Cow;

/// The first `max` characters of `text`, with `…` when there were more.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]).into(),
        None => text.into(),
    }
}

/// A value a sender sent, in an error about it: in backticks, cut at 64
/// characters.
pub fn quoted(value: &str) -> String {
    format!("`{}`", cut(value, 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_not_a_byte() {
        assert_eq!(cut("short", 5), "short");
        assert_eq!(cut("longer", 5), "longe…");
        assert_eq!(cut("ééé€", 3), "ééé…");
        assert_eq!(quoted(&"9".repeat(100)), format!("`{}…`", "9".repeat(64)));
    }
}
