//! The requests and answers of converge's `/v1` HTTP API: what the daemon
//! sends (`web`) and what its commands read (`converge status`, `converge
//! gates`, `converge dlq`), one definition for both sides.
//!
//! These types are the wire format: a field's name, whether it is `null`
//! or left out, and its number type are what clients and docs rely on, and
//! each module's tests pin the JSON. No I/O.
//!
//! - [`status`]: `GET /v1/status`;
//! - [`gates`]: `GET /v1/gates`, `GET /v1/gates/{kind}/{id}`, and
//!   `POST /v1/gates/{kind}/{id}/override`;
//! - [`dlq`]: `GET /v1/dlq`, `GET /v1/dlq/{id}`, and
//!   `POST /v1/dlq/{id}/retry|drop`;
//! - [`timers`]: `POST /v1/timers/cancel`;
//! - [`clock`]: `GET` and `POST /v1/clock`;
//! - [`ErrorBody`]: every error answer.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod clock;
pub mod dlq;
pub mod gates;
pub mod status;
pub mod timers;

/// A time as the API writes it: RFC 3339 in UTC with milliseconds
/// (`2026-11-25T10:00:00.000Z`), whatever its precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub DateTime<Utc>);

impl Time {
    /// The time `ms` milliseconds after the Unix epoch; `None` beyond the
    /// years chrono represents.
    pub fn from_millis(ms: i64) -> Option<Time> {
        DateTime::from_timestamp_millis(ms).map(Time)
    }

    /// A time the daemon's store kept as milliseconds, for an answer.
    /// Stored times come from the daemon's clock, so always within
    /// chrono's years; a corrupt one shows as the epoch rather than
    /// failing the whole answer.
    pub fn stored(ms: i64) -> Time {
        Time::from_millis(ms).unwrap_or(Time(DateTime::UNIX_EPOCH))
    }
}

impl From<DateTime<Utc>> for Time {
    fn from(time: DateTime<Utc>) -> Time {
        Time(time)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Time, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Time(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time: {e}")))
    }
}

/// Every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, per cause (`unauthorized`, `nothing_held`, `not_dead_letter`...):
    /// what a client branches on.
    pub code: String,
    /// For people; its wording may change.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Helpers of the modules' tests: a value's JSON is the literal, and reads
/// back as the same value.
#[cfg(test)]
pub(crate) fn assert_wire<T>(value: &T, wire: serde_json::Value)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
{
    assert_eq!(serde_json::to_value(value).unwrap(), wire);
    let read: T = serde_json::from_value(wire).unwrap();
    assert_eq!(&read, value);
}

#[cfg(test)]
pub(crate) fn time(text: &str) -> Time {
    serde_json::from_value(serde_json::Value::String(text.into())).unwrap()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_time_is_rfc3339_utc_with_milliseconds() {
        let at = Time::from_millis(1_764_576_000_000).unwrap();
        assert_wire(&at, json!("2025-12-01T08:00:00.000Z"));
        let precise: Time = DateTime::parse_from_rfc3339("2025-12-01T08:00:00.123456789+00:00")
            .unwrap()
            .with_timezone(&Utc)
            .into();
        assert_eq!(json!(precise), json!("2025-12-01T08:00:00.123Z"));
        assert_eq!(time("2025-12-01T09:00:00.000+01:00"), at);
        let wrong = serde_json::from_value::<Time>(json!("yesterday")).unwrap_err();
        assert!(wrong.to_string().contains("`yesterday`"), "{wrong}");
    }

    #[test]
    fn a_stored_time_beyond_chronos_years_shows_as_the_epoch() {
        assert_eq!(
            Time::stored(1_764_576_000_000),
            Time::from_millis(1_764_576_000_000).unwrap()
        );
        assert_eq!(
            json!(Time::stored(i64::MAX)),
            json!("1970-01-01T00:00:00.000Z")
        );
    }

    #[test]
    fn an_error_body() {
        assert_wire(
            &ErrorBody::new("nothing_held", "campaign/c-1 has no held send"),
            json!({"error": {"code": "nothing_held", "message": "campaign/c-1 has no held send"}}),
        );
    }
}
