//! Durations as people write them on a command line or in a config file: `30s`, `5m`, `1h`,
//! `1h30m`, `2d`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration parsed from `<number><unit>…` with units `s`, `m`, `h`, `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HumanDuration(Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    #[error("duration is empty; write it like 30s, 5m, 1h or 1h30m")]
    Empty,
    #[error("`{0}` is not a duration; write it like 30s, 5m, 1h or 1h30m (units: s, m, h, d)")]
    Malformed(String),
    #[error("`{0}` is too long a duration")]
    Overflow(String),
}

impl HumanDuration {
    pub(crate) fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let malformed = || DurationError::Malformed(s.to_owned());
        let overflow = || DurationError::Overflow(s.to_owned());
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(malformed)?;
            if digits == 0 {
                return Err(malformed());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| overflow())?;
            let unit_seconds = match rest.as_bytes()[digits] {
                b's' => 1,
                b'm' => 60,
                b'h' => 3600,
                b'd' => 86_400,
                _ => return Err(malformed()),
            };
            let seconds = number.checked_mul(unit_seconds).ok_or_else(overflow)?;
            total = total.checked_add(seconds).ok_or_else(overflow)?;
            rest = &rest[digits + 1..];
        }
        // Bound to what fits an i64 of seconds, the wire type of every TTL.
        if total > i64::MAX as u64 {
            return Err(overflow());
        }
        Ok(Self(Duration::from_secs(total)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format_duration(self.0))
    }
}

/// Formats whole seconds the way they are parsed: `1h30m`, `45s`, `0s`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        let cases = [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("2d", 172_800),
            ("1h30m", 5400),
            ("0s", 0),
        ];
        for (text, secs) in cases {
            assert_eq!(
                text.parse::<HumanDuration>().unwrap().get().as_secs(),
                secs,
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for text in ["", "5", "m", "-5m", "5x", "1.5h", "h1", "5m ", " 5m", "٣s"] {
            assert!(
                text.parse::<HumanDuration>().is_err(),
                "{text:?} should be refused"
            );
        }
        assert_eq!(
            "99999999999999999999s".parse::<HumanDuration>(),
            Err(DurationError::Overflow("99999999999999999999s".into()))
        );
        assert!(matches!(
            "9999999999999999d".parse::<HumanDuration>(),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for text in ["0s", "45s", "5m", "1h30m", "2d3h4m5s"] {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.to_string().parse::<HumanDuration>().unwrap(), parsed);
        }
    }
}
