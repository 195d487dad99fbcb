//! Reading the signature headers and signed timestamps strictly: one value per
//! header, visible ASCII, digits only for timestamps.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderName};

use crate::error::VerifyError;

/// Standard base64, with or without padding, and with the unused bits of the
/// last symbol ignored, as the reference libraries' decoders do: secrets
/// written by hand are often unpadded or not canonical.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Delivery ids longer than this are not trusted as dedupe keys.
const MAX_DELIVERY_ID_LEN: usize = 256;

/// The one value of a required header.
pub(crate) fn required<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<&'a str, VerifyError> {
    optional(headers, name)?.ok_or_else(|| VerifyError::MissingHeader(name.clone()))
}

/// The one value of a header, if sent. A repeated header is refused rather
/// than picking one, so that no two layers can disagree on which was checked.
pub(crate) fn optional<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed(name, "is sent more than once"));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| malformed(name, "is not visible ASCII"))
}

/// A delivery id usable for dedupe, or `None` when absent or unusable. Only
/// read after the signature is checked.
pub(crate) fn delivery_id(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    optional(headers, name)
        .ok()
        .flatten()
        .filter(|id| !id.is_empty() && id.len() <= MAX_DELIVERY_ID_LEN)
        .map(str::to_string)
}

pub(crate) fn malformed(header: &HeaderName, problem: &'static str) -> VerifyError {
    VerifyError::Malformed {
        header: header.clone(),
        problem,
    }
}

/// A timestamp as senders write it: decimal digits only (no sign, no
/// fraction, no spaces), fitting an `i64`.
pub(crate) fn parse_timestamp(header: &HeaderName, value: &str) -> Result<i64, VerifyError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(header, "is not a whole number timestamp"));
    }
    value
        .parse()
        .map_err(|_| malformed(header, "is out of range"))
}

/// The hex digits after `prefix`, decoded.
pub(crate) fn hex_after(
    header: &HeaderName,
    value: &str,
    prefix: &str,
    problem: &'static str,
) -> Result<Vec<u8>, VerifyError> {
    let digits = value
        .strip_prefix(prefix)
        .ok_or_else(|| malformed(header, problem))?;
    hex::decode(digits).map_err(|_| malformed(header, problem))
}

/// Refuses a signed time more than `tolerance_secs` from now, either way:
/// a sender's clock may run ahead, but not by more than the window.
pub(crate) fn check_fresh(
    signed_ms: i64,
    now_unix_secs: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let skew_ms = i128::from(now_unix_secs) * 1000 - i128::from(signed_ms);
    if skew_ms.unsigned_abs() > u128::from(tolerance_secs) * 1000 {
        let skew_secs = (skew_ms / 1000).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        return Err(VerifyError::Stale {
            skew_secs: skew_secs as i64,
            tolerance_secs,
        });
    }
    Ok(())
}

/// [`check_fresh`] for a timestamp in seconds.
pub(crate) fn check_fresh_secs(
    signed_secs: i64,
    now_unix_secs: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let signed_ms = i128::from(signed_secs) * 1000;
    // Out of range in milliseconds means centuries away: stale either way.
    let signed_ms = signed_ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    check_fresh(signed_ms, now_unix_secs, tolerance_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_digits_only() {
        let name = HeaderName::from_static("x-ts");
        assert_eq!(parse_timestamp(&name, "1614265330"), Ok(1614265330));
        for bad in [
            "",
            "161426533.0",
            "-161426533",
            "+1",
            " 1",
            "1 ",
            "hello",
            "0x10",
        ] {
            assert!(parse_timestamp(&name, bad).is_err(), "{bad:?}");
        }
        assert!(parse_timestamp(&name, "99999999999999999999").is_err());
    }

    #[test]
    fn freshness_is_symmetric_and_inclusive() {
        assert!(check_fresh_secs(1000, 1300, 300).is_ok());
        assert!(check_fresh_secs(1000, 700, 300).is_ok());
        assert_eq!(
            check_fresh_secs(1000, 1301, 300),
            Err(VerifyError::Stale {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check_fresh_secs(1000, 699, 300),
            Err(VerifyError::Stale {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        assert!(check_fresh_secs(i64::MAX, i64::MIN, 300).is_err());
        assert!(check_fresh(i64::MIN, i64::MAX, u64::MAX).is_ok());
    }
}
