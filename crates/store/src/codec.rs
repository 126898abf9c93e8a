//! Conversions between lanyard-core values and column values, and the keys derived from them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use lanyard_core::SelectorSet;

use crate::{Error, Result};

/// Microseconds since the Unix epoch (negative before it). Sub-microsecond precision is dropped.
pub(crate) fn time_to_us(field: &'static str, time: SystemTime) -> Result<i64> {
    let out_of_range = || Error::InvalidArgument {
        field,
        reason: "time is out of the range the store holds".to_owned(),
    };
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).map_err(|_| out_of_range()),
        Err(before) => {
            // Round toward the past, as truncation of a positive time does toward the epoch.
            let d = before.duration();
            let micros = d.as_micros() + u128::from(d.subsec_nanos() % 1000 != 0);
            i64::try_from(micros)
                .map(|m| -m)
                .map_err(|_| out_of_range())
        }
    }
}

/// The inverse of [`time_to_us`]; `None` if the platform cannot represent the time.
pub(crate) fn us_to_time(us: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

pub(crate) fn duration_to_us(field: &'static str, duration: Duration) -> Result<i64> {
    i64::try_from(duration.as_micros()).map_err(|_| Error::InvalidArgument {
        field,
        reason: "duration is out of the range the store holds".to_owned(),
    })
}

/// The inverse of [`duration_to_us`]; `None` for a negative value.
pub(crate) fn us_to_duration(us: i64) -> Option<Duration> {
    u64::try_from(us).ok().map(Duration::from_micros)
}

/// A counter, sequence or revision as a column value.
pub(crate) fn u64_to_i64(field: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidArgument {
        field,
        reason: format!(
            "{value} is above the largest value the store holds ({})",
            i64::MAX
        ),
    })
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The canonical text of a selector set: `type:value` lines in sorted order. Unambiguous because
/// selector types contain no `:` and neither part may contain a control character.
pub(crate) fn canonical_selectors(selectors: &SelectorSet) -> String {
    let mut out = String::new();
    for (i, selector) in selectors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(selector.kind());
        out.push(':');
        out.push_str(selector.value());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[test]
    fn times_round_trip_at_microsecond_precision() {
        for us in [
            0,
            1,
            -1,
            1_700_000_000_123_456,
            -86_400_000_000,
            i64::MAX / 2,
        ] {
            let t = us_to_time(us).unwrap();
            assert_eq!(time_to_us("t", t).unwrap(), us);
        }
    }

    #[test]
    fn sub_microsecond_times_round_toward_the_past() {
        let after = UNIX_EPOCH + Duration::from_nanos(1_500);
        assert_eq!(time_to_us("t", after).unwrap(), 1);
        let before = UNIX_EPOCH - Duration::from_nanos(1_500);
        assert_eq!(time_to_us("t", before).unwrap(), -2);
    }

    #[test]
    fn negative_durations_are_refused() {
        assert_eq!(us_to_duration(-1), None);
        assert_eq!(us_to_duration(5), Some(Duration::from_micros(5)));
    }

    #[test]
    fn hex_and_sha256() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn canonical_selectors_are_sorted_lines() {
        let set: SelectorSet = ["unix:uid:1000", "k8s:ns:default", "unix:gid:5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            canonical_selectors(&set),
            "k8s:ns:default\nunix:gid:5\nunix:uid:1000"
        );
    }
}
