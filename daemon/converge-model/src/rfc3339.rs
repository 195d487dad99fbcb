//! Times written into JSON exactly as chrono's own `Serialize` writes them
//! (RFC 3339, `Z`, as many fraction digits as the time has), only faster.
//! chrono formats through serde's `collect_str`, and serde_json escapes
//! what is collected piece by piece as the formatter writes it: about 2,000
//! instructions a time, and an event's entity state alone holds half a
//! dozen times, written again with every event about it. Formatted whole
//! first and written as one string: the journal writer's instructions per
//! gate event fell 5.7% (docs/reliability.md, "Speed: the gate race").
//!
//! For `#[serde(serialize_with = "...")]`; reading times back is chrono's.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// A time's text as chrono's `Serialize` writes it.
pub fn format(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A time as chrono writes it.
pub fn serialize<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(time))
}

/// An optional time as chrono writes it: `null` when there is none.
pub fn option<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_some(&Rfc3339(time)),
        None => serializer.serialize_none(),
    }
}

struct Rfc3339<'a>(&'a DateTime<Utc>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, serializer)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    #[derive(Serialize)]
    struct Ours {
        #[serde(serialize_with = "serialize")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct Chronos {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    fn same(at: DateTime<Utc>, maybe: Option<DateTime<Utc>>) {
        assert_eq!(
            serde_json::to_string(&Ours { at, maybe }).unwrap(),
            serde_json::to_string(&Chronos { at, maybe }).unwrap()
        );
    }

    #[test]
    fn written_as_chrono_writes_them() {
        let whole = Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap();
        let text = serde_json::to_string(&Ours {
            at: whole,
            maybe: None,
        })
        .unwrap();
        assert_eq!(text, r#"{"at":"2026-12-06T08:00:00Z","maybe":null}"#);
        for nanos in [0, 1_000_000, 120_000_000, 123_456_000, 1, 999_999_999] {
            let at = whole + chrono::Duration::nanoseconds(nanos);
            same(at, Some(at));
        }
        // Before the epoch, and far ahead.
        same(Utc.with_ymd_and_hms(1969, 7, 20, 20, 17, 40).unwrap(), None);
        same(
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            None,
        );
    }

    proptest! {
        #[test]
        fn any_time_is_written_as_chrono_writes_it(
            seconds in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
            some in any::<bool>(),
        ) {
            let at = Utc.timestamp_opt(seconds, nanos).unwrap();
            same(at, some.then_some(at));
        }
    }
}
