//! One audit record and its canonical encoding, the bytes a Merkle leaf commits to.
//!
//! Encoding (version 1), all integers big-endian:
//!
//! ```text
//! 0x01                                  format version
//! u64  seq                              the leaf index, 0-based
//! u64  time                             microseconds since the Unix epoch
//! u32  len || kind                      UTF-8
//! u32  len || actor                     UTF-8
//! u32  len || subject                   UTF-8
//! u32  len || details                   canonical JSON (see below)
//! ```
//!
//! Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, strings escaped as
//! `serde_json` escapes them, numbers as `serde_json` prints them. `1` and `1.0` are different
//! values and give different bytes; key order in the input never matters.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::merkle::{Hash, leaf_hash};

/// Longest `kind`, in bytes.
pub const MAX_KIND_LEN: usize = 64;
/// Longest `actor` or `subject`, in bytes (a SPIFFE ID is at most 2048).
pub const MAX_NAME_LEN: usize = 2048;
/// Longest canonical `details` JSON, in bytes.
pub const MAX_DETAILS_LEN: usize = 64 * 1024;
/// Deepest nesting of arrays and objects in `details`.
pub const MAX_DETAILS_DEPTH: usize = 32;

const ENCODING_VERSION: u8 = 1;

/// Why an audit record could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// `kind` is empty.
    #[error("audit record kind is empty")]
    EmptyKind,
    /// `kind` holds something other than ASCII letters, digits, `.`, `_`, `-`.
    #[error("audit record kind may hold only ASCII letters, digits, '.', '_' and '-'")]
    InvalidKind,
    /// A field is longer than its bound.
    #[error("audit record field {field} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// `details` nests deeper than [`MAX_DETAILS_DEPTH`].
    #[error("audit record details nest deeper than {MAX_DETAILS_DEPTH} levels")]
    DetailsTooDeep,
    /// `time` is before the Unix epoch or past what a `u64` of microseconds holds.
    #[error("audit record time is before 1970 or too far in the future")]
    TimeOutOfRange,
}

/// One audit log record: leaf `seq` of the Merkle log. Fields are private so that a record that
/// exists is within its bounds and encodes deterministically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    seq: u64,
    /// Microseconds since the Unix epoch; the record keeps no finer precision.
    time_micros: u64,
    kind: String,
    actor: String,
    subject: String,
    details: Value,
    /// `details` in canonical form, computed once at construction.
    details_canonical: String,
}

// === impl AuditRecord ===

impl AuditRecord {
    /// Builds a record. `time` is truncated to whole microseconds. `kind` is a short dotted name
    /// such as `svid.x509.issued`; `details` must never hold a secret (tokens only as SHA-256).
    pub fn new(
        seq: u64,
        time: SystemTime,
        kind: impl Into<String>,
        actor: impl Into<String>,
        subject: impl Into<String>,
        details: Value,
    ) -> Result<Self, RecordError> {
        let kind = kind.into();
        let actor = actor.into();
        let subject = subject.into();
        if kind.is_empty() {
            return Err(RecordError::EmptyKind);
        }
        check_len("kind", kind.len(), MAX_KIND_LEN)?;
        if !kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(RecordError::InvalidKind);
        }
        check_len("actor", actor.len(), MAX_NAME_LEN)?;
        check_len("subject", subject.len(), MAX_NAME_LEN)?;
        let time_micros = time
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_micros()).ok())
            .ok_or(RecordError::TimeOutOfRange)?;
        let mut details_canonical = String::new();
        write_canonical(&details, 0, &mut details_canonical)?;
        check_len("details", details_canonical.len(), MAX_DETAILS_LEN)?;
        Ok(Self {
            seq,
            time_micros,
            kind,
            actor,
            subject,
            details,
            details_canonical,
        })
    }

    /// The record's sequence number, which is its 0-based leaf index in the Merkle log.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When the record was written, to the microsecond.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.time_micros)
    }

    /// What happened, e.g. `entry.created`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Who did it (a SPIFFE ID, `admin:<uid>`, `server`).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// What it was done to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Free-form details as given.
    pub fn details(&self) -> &Value {
        &self.details
    }

    /// `details` as canonical JSON: sorted keys, no whitespace.
    pub fn details_canonical(&self) -> &str {
        &self.details_canonical
    }

    /// The canonical bytes the Merkle leaf commits to (see the module docs).
    pub fn leaf_data(&self) -> Vec<u8> {
        let fields = [
            self.kind.as_bytes(),
            self.actor.as_bytes(),
            self.subject.as_bytes(),
            self.details_canonical.as_bytes(),
        ];
        let mut out = Vec::with_capacity(17 + fields.iter().map(|f| 4 + f.len()).sum::<usize>());
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time_micros.to_be_bytes());
        for field in fields {
            // Every field is bounded far below u32::MAX at construction.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    /// The RFC 6962 leaf hash of [`leaf_data`](Self::leaf_data).
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.leaf_data())
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
    if len > max {
        return Err(RecordError::TooLong { field, len, max });
    }
    Ok(())
}

/// Writes `value` as canonical JSON. Object keys are sorted here rather than trusting
/// `serde_json::Map`'s order, which turns into insertion order if any crate in the build enables
/// serde_json's `preserve_order` feature.
fn write_canonical(value: &Value, depth: usize, out: &mut String) -> Result<(), RecordError> {
    if depth > MAX_DETAILS_DEPTH {
        return Err(RecordError::DetailsTooDeep);
    }
    // Bail out early on huge input instead of building it all first.
    if out.len() > MAX_DETAILS_LEN {
        return Err(RecordError::TooLong {
            field: "details",
            len: out.len(),
            max: MAX_DETAILS_LEN,
        });
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, depth + 1, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, depth + 1, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    // Serializing a `str` cannot fail; the fallback is never taken.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests;
