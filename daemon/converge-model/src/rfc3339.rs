//! Times written into JSON exactly as chrono's own `Serialize` writes them
//! (RFC 3339, `Z`, as many fraction digits as the time has), only faster.
//! chrono formats through serde's `collect_str`, and serde_json escapes
//! what is collected piece by piece as the formatter writes it: about 2,000
//! instructions a time, and an event's entity state alone holds half a
//! dozen times, written again with every event about it. Formatted whole
//! first and written as one string: the journal writer's instructions per
//! gate event fell 5.7% (docs/performance.md).
//!
//! The text itself is written digit by digit for the years 0 to 9999
//! (chrono's `to_rfc3339_opts` goes through `fmt` for every field: about
//! 680 instructions a time, against about 280 here, its allocation
//! included), and by chrono for any other year and for leap seconds.
//!
//! For `#[serde(serialize_with = "...")]`; reading times back is chrono's.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};

/// A time's text as chrono's `Serialize` writes it: `2026-12-06T08:00:00Z`,
/// with `.` and 3, 6 or 9 digits when the time has a fraction of a second
/// (as few as hold it all).
pub fn format(time: &DateTime<Utc>) -> String {
    let year = time.year();
    let nanos = time.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // A sign and more digits, or a leap second's `:60`.
        return time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    }
    let mut text = String::with_capacity(30);
    push_digits(&mut text, year.unsigned_abs(), 4);
    text.push('-');
    push_digits(&mut text, time.month(), 2);
    text.push('-');
    push_digits(&mut text, time.day(), 2);
    text.push('T');
    push_digits(&mut text, time.hour(), 2);
    text.push(':');
    push_digits(&mut text, time.minute(), 2);
    text.push(':');
    push_digits(&mut text, time.second(), 2);
    if nanos != 0 {
        text.push('.');
        if nanos.is_multiple_of(1_000_000) {
            push_digits(&mut text, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            push_digits(&mut text, nanos / 1_000, 6);
        } else {
            push_digits(&mut text, nanos, 9);
        }
    }
    text.push('Z');
    text
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(text: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place) % 10) as u8;
        text.push(char::from(b'0' + digit));
    }
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
        // The years either side of four digits, and a leap second.
        for year in [-1, 0, 1, 10_000] {
            same(Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap(), None);
        }
        let leap = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap();
        same(leap, Some(leap));
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

        #[test]
        fn years_of_other_widths_and_leap_seconds_are_written_as_chrono_writes_them(
            seconds in -8_000_000_000_000i64..8_000_000_000_000,
            nanos in 0u32..2_000_000_000,
        ) {
            // Leap seconds (a fraction of 1 or more) fall on a minute's
            // 59th second only.
            let seconds = if nanos >= 1_000_000_000 { seconds - seconds.rem_euclid(60) + 59 } else { seconds };
            let at = Utc.timestamp_opt(seconds, nanos).unwrap();
            same(at, Some(at));
        }
    }
}
