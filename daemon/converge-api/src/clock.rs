//! The daemon's clock: `GET /v1/clock`, and `POST /v1/clock` to move a
//! manual one (a testing aid, `clock.mode = "manual"`).

use serde::{Deserialize, Serialize};

use crate::Time;

/// The answer of `GET /v1/clock` and of a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockNow {
    pub now: Time,
    pub mode: ClockMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    Manual,
    System,
}

/// The body of `POST /v1/clock`: `{"advance": "48h"}` (a duration, as
/// humantime reads it) or `{"set": "2026-11-25T10:00:00Z"}` (RFC 3339).
/// The daemon parses the text, so its error can quote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ClockMove {
    Advance(String),
    Set(String),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{assert_wire, time};

    #[test]
    fn the_clock_and_its_moves() {
        assert_wire(
            &ClockNow {
                now: time("2026-11-25T10:00:00.000Z"),
                mode: ClockMode::Manual,
            },
            json!({"now": "2026-11-25T10:00:00.000Z", "mode": "manual"}),
        );
        assert_wire(
            &ClockNow {
                now: time("2026-11-25T10:00:00.007Z"),
                mode: ClockMode::System,
            },
            json!({"now": "2026-11-25T10:00:00.007Z", "mode": "system"}),
        );
        assert_wire(&ClockMove::Advance("48h".into()), json!({"advance": "48h"}));
        assert_wire(
            &ClockMove::Set("2026-11-25T10:00:00Z".into()),
            json!({"set": "2026-11-25T10:00:00Z"}),
        );
        for wrong in [
            json!({"advance": "1h", "set": "2026-11-25T10:00:00Z"}),
            json!({"rewind": "1h"}),
            json!({}),
        ] {
            assert!(serde_json::from_value::<ClockMove>(wrong).is_err());
        }
    }
}
