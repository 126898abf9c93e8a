//! A minimal DER writer: just what the certificate builders need.
//!
//! Certificates are written by hand rather than through rcgen so that minting costs one signature
//! and little else (see `docs/benchmarks.md`). Nested values are written in place and their header
//! is inserted afterwards, which moves a few hundred bytes per level: cheaper than measuring first.

use crate::CaError;

pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_UTF8_STRING: u8 = 0x0c;
pub(crate) const TAG_PRINTABLE_STRING: u8 = 0x13;
pub(crate) const TAG_UTC_TIME: u8 = 0x17;
pub(crate) const TAG_GENERALIZED_TIME: u8 = 0x18;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;

/// Appends DER values to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct DerWriter {
    buf: Vec<u8>,
}

impl DerWriter {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// Appends bytes that are already DER (a precomputed value).
    pub(crate) fn raw(&mut self, der: &[u8]) {
        self.buf.extend_from_slice(der);
    }

    /// Appends a primitive value.
    pub(crate) fn tlv(&mut self, tag: u8, content: &[u8]) {
        push_header(&mut self.buf, tag, content.len());
        self.buf.extend_from_slice(content);
    }

    /// Appends a constructed value whose content `f` writes.
    pub(crate) fn nested(&mut self, tag: u8, f: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        f(self);
        let len = self.buf.len() - start;
        let (header, n) = header(tag, len);
        self.buf.splice(start..start, header[..n].iter().copied());
    }

    pub(crate) fn sequence(&mut self, f: impl FnOnce(&mut Self)) {
        self.nested(TAG_SEQUENCE, f);
    }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    pub(crate) fn unsigned_integer(&mut self, magnitude: &[u8]) {
        let first_nonzero = magnitude.iter().position(|&b| b != 0);
        let trimmed = match first_nonzero {
            Some(i) => &magnitude[i..],
            None => &[0u8][..],
        };
        if trimmed[0] & 0x80 != 0 {
            push_header(&mut self.buf, TAG_INTEGER, trimmed.len() + 1);
            self.buf.push(0);
        } else {
            push_header(&mut self.buf, TAG_INTEGER, trimmed.len());
        }
        self.buf.extend_from_slice(trimmed);
    }

    /// A BIT STRING with no unused bits.
    pub(crate) fn bit_string(&mut self, bytes: &[u8]) {
        push_header(&mut self.buf, TAG_BIT_STRING, bytes.len() + 1);
        self.buf.push(0);
        self.buf.extend_from_slice(bytes);
    }

    /// UTCTime for 1950–2049 and GeneralizedTime otherwise, as RFC 5280 §4.1.2.5 requires.
    pub(crate) fn time(&mut self, unix_seconds: u64) -> Result<(), CaError> {
        let t = CivilTime::from_unix(unix_seconds)?;
        let mut digits = [0u8; 15];
        let mut n = 0;
        let mut push_2 = |v: u64| {
            digits[n] = b'0' + (v / 10 % 10) as u8;
            digits[n + 1] = b'0' + (v % 10) as u8;
            n += 2;
        };
        let tag = if (1950..2050).contains(&t.year) {
            push_2(t.year % 100);
            TAG_UTC_TIME
        } else {
            push_2(t.year / 100);
            push_2(t.year % 100);
            TAG_GENERALIZED_TIME
        };
        for v in [t.month, t.day, t.hour, t.minute, t.second] {
            push_2(v);
        }
        digits[n] = b'Z';
        self.tlv(tag, &digits[..=n]);
        Ok(())
    }
}

/// A tag and a definite length: the bytes and how many of them are used.
fn header(tag: u8, len: usize) -> ([u8; 10], usize) {
    let mut out = [0u8; 10];
    out[0] = tag;
    if len < 0x80 {
        out[1] = len as u8;
        return (out, 2);
    }
    let bytes = (len as u64).to_be_bytes();
    let skip = bytes.iter().position(|&b| b != 0).unwrap_or(7);
    out[1] = 0x80 | (8 - skip) as u8;
    out[2..2 + 8 - skip].copy_from_slice(&bytes[skip..]);
    (out, 2 + 8 - skip)
}

/// Writes a tag and a definite length.
pub(crate) fn push_header(buf: &mut Vec<u8>, tag: u8, len: usize) {
    let (h, n) = header(tag, len);
    buf.extend_from_slice(&h[..n]);
}

/// A UTC calendar time, from Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CivilTime {
    pub(crate) year: u64,
    pub(crate) month: u64,
    pub(crate) day: u64,
    pub(crate) hour: u64,
    pub(crate) minute: u64,
    pub(crate) second: u64,
}

/// 9999-12-31T23:59:59Z, the latest time GeneralizedTime's four-digit year can hold.
pub(crate) const MAX_CERT_TIME: u64 = 253_402_300_799;

impl CivilTime {
    pub(crate) fn from_unix(secs: u64) -> Result<Self, CaError> {
        if secs > MAX_CERT_TIME {
            return Err(CaError::TimeOutOfRange);
        }
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        Ok(Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn civil_time_matches_known_dates() {
        let cases = [
            (0, (1970, 1, 1, 0, 0, 0)),
            (951_782_400, (2000, 2, 29, 0, 0, 0)),
            (1_700_000_000, (2023, 11, 14, 22, 13, 20)),
            (2_524_607_999, (2049, 12, 31, 23, 59, 59)),
            (4_107_542_400, (2100, 3, 1, 0, 0, 0)),
            (MAX_CERT_TIME, (9999, 12, 31, 23, 59, 59)),
        ];
        for (secs, (y, mo, d, h, mi, s)) in cases {
            let t = CivilTime::from_unix(secs).unwrap();
            assert_eq!(
                (t.year, t.month, t.day, t.hour, t.minute, t.second),
                (y, mo, d, h, mi, s),
                "{secs}"
            );
        }
        assert!(matches!(
            CivilTime::from_unix(MAX_CERT_TIME + 1),
            Err(CaError::TimeOutOfRange)
        ));
    }

    #[test]
    fn time_switches_to_generalized_in_2050() {
        let mut w = DerWriter::default();
        w.time(2_524_607_999).unwrap();
        assert_eq!(w.into_vec(), b"\x17\x0d491231235959Z");
        let mut w = DerWriter::default();
        w.time(2_524_608_000).unwrap();
        assert_eq!(w.into_vec(), b"\x18\x0f20500101000000Z");
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        let mut w = DerWriter::default();
        w.unsigned_integer(&[0, 0, 0x80]);
        w.unsigned_integer(&[0, 0x7f]);
        w.unsigned_integer(&[0, 0]);
        assert_eq!(w.into_vec(), [2, 2, 0, 0x80, 2, 1, 0x7f, 2, 1, 0].to_vec());
    }

    #[test]
    fn long_lengths_are_encoded() {
        let mut w = DerWriter::default();
        w.nested(TAG_SEQUENCE, |w| w.tlv(TAG_OCTET_STRING, &[7u8; 300]));
        let v = w.into_vec();
        assert_eq!(&v[..8], &[0x30, 0x82, 0x01, 0x30, 0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(v.len(), 4 + 4 + 300);
    }
}
