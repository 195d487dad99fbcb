//! The sources of the events converge journals itself. Intake refuses every
//! source under [`RESERVED_PREFIX`] from outside, so nothing from outside
//! can pose as converge; the engine tells converge's own events by them.

/// What every source of converge's own events starts with.
pub const RESERVED_PREFIX: &str = "converge/";
/// Events of fired timers (`schedule` and `expect` decisions).
pub const TIMERS: &str = "converge/timers";
/// Events of `emit` decisions.
pub const RULES: &str = "converge/rules";
/// Events of people acting through the admin API (gate overrides).
pub const ADMIN: &str = "converge/admin";
/// Occurrences of `[[schedules]]`.
pub const SCHEDULES: &str = "converge/schedules";

/// Whether `source` is converge's own, which no one outside may use.
pub fn is_reserved(source: &str) -> bool {
    source.starts_with(RESERVED_PREFIX)
}

/// Whether a name the config gives a hook, a poll or a schedule may be
/// used: it goes into event ids and sources, keys and URLs, so it is
/// letters, digits, '-' or '_', and not empty.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_letters_digits_dashes_and_underscores() {
        for name in ["jira", "Weekly-digest_2", "a", "0"] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", "two words", "a/b", "é", "x.y", "../up"] {
            assert!(!valid_name(name), "{name:?}");
        }
    }
}
