#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn at(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

fn sample() -> AuditRecord {
    AuditRecord::new(
        7,
        at(1_765_000_000_123_456),
        "svid.x509.issued",
        "spiffe://example.org/lanyard/agent/join_token/abc",
        "spiffe://example.org/web",
        json!({"serial": "01ab", "ttl_s": 3600, "dns": ["web.local"], "nested": {"b": 1, "a": null}}),
    )
    .unwrap()
}

#[test]
fn key_order_does_not_change_the_bytes() {
    let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"},"c":true}"#).unwrap();
    let b: Value =
        serde_json::from_str(r#"{ "c" : true, "a" : { "x":"s", "y":[1, 2] }, "b" : 1 }"#).unwrap();
    let ra = AuditRecord::new(0, at(0), "k", "a", "s", a).unwrap();
    let rb = AuditRecord::new(0, at(0), "k", "a", "s", b).unwrap();
    assert_eq!(
        ra.details_canonical(),
        r#"{"a":{"x":"s","y":[1,2]},"b":1,"c":true}"#
    );
    assert_eq!(ra.leaf_data(), rb.leaf_data());
    assert_eq!(ra.leaf_hash(), rb.leaf_hash());
}

#[test]
fn layout_is_as_documented() {
    let r = AuditRecord::new(1, at(2), "k", "ac", "sub", json!({})).unwrap();
    let mut want = vec![1u8];
    want.extend_from_slice(&1u64.to_be_bytes());
    want.extend_from_slice(&2u64.to_be_bytes());
    for field in [&b"k"[..], b"ac", b"sub", b"{}"] {
        want.extend_from_slice(&(field.len() as u32).to_be_bytes());
        want.extend_from_slice(field);
    }
    assert_eq!(r.leaf_data(), want);
    assert_eq!(r.leaf_hash(), leaf_hash(&want));
}

#[test]
fn every_field_change_changes_the_bytes() {
    let base = sample();
    let t = base.time();
    let d = base.details().clone();
    let variants = [
        AuditRecord::new(8, t, base.kind(), base.actor(), base.subject(), d.clone()),
        AuditRecord::new(
            7,
            t + Duration::from_micros(1),
            base.kind(),
            base.actor(),
            base.subject(),
            d.clone(),
        ),
        AuditRecord::new(
            7,
            t,
            "svid.x509.issuee",
            base.actor(),
            base.subject(),
            d.clone(),
        ),
        AuditRecord::new(
            7,
            t,
            base.kind(),
            "spiffe://example.org/x",
            base.subject(),
            d.clone(),
        ),
        AuditRecord::new(
            7,
            t,
            base.kind(),
            base.actor(),
            "spiffe://example.org/webb",
            d.clone(),
        ),
        AuditRecord::new(
            7,
            t,
            base.kind(),
            base.actor(),
            base.subject(),
            json!({"serial": "01ab"}),
        ),
        AuditRecord::new(7, t, base.kind(), base.actor(), base.subject(), {
            let mut d = d.clone();
            d["ttl_s"] = json!(3600.0);
            d
        }),
        // Moving bytes between adjacent fields is caught by the length prefixes.
        AuditRecord::new(
            7,
            t,
            base.kind(),
            "spiffe://example.org/lanyard/agent/join_token/ab",
            format!("c{}", base.subject()),
            d,
        ),
    ];
    for variant in variants {
        let variant = variant.unwrap();
        assert_ne!(variant.leaf_data(), base.leaf_data(), "{variant:?}");
        assert_ne!(variant.leaf_hash(), base.leaf_hash());
    }
}

#[test]
fn time_keeps_microseconds_only() {
    let t = UNIX_EPOCH + Duration::new(1_765_000_000, 123_456_789);
    let r = AuditRecord::new(0, t, "k", "a", "s", Value::Null).unwrap();
    assert_eq!(
        r.time(),
        UNIX_EPOCH + Duration::new(1_765_000_000, 123_456_000)
    );
    let same = AuditRecord::new(0, r.time(), "k", "a", "s", Value::Null).unwrap();
    assert_eq!(same, r);
    assert_eq!(
        AuditRecord::new(
            0,
            UNIX_EPOCH - Duration::from_secs(1),
            "k",
            "a",
            "s",
            Value::Null
        ),
        Err(RecordError::TimeOutOfRange)
    );
}

#[test]
fn constructor_refuses_bad_fields() {
    let new = |kind: &str, actor: String, details: Value| {
        AuditRecord::new(0, at(0), kind, actor, "s", details)
    };
    assert_eq!(
        new("", "a".into(), Value::Null),
        Err(RecordError::EmptyKind)
    );
    assert_eq!(
        new("has space", "a".into(), Value::Null),
        Err(RecordError::InvalidKind)
    );
    assert_eq!(
        new(&"k".repeat(MAX_KIND_LEN + 1), "a".into(), Value::Null),
        Err(RecordError::TooLong {
            field: "kind",
            len: MAX_KIND_LEN + 1,
            max: MAX_KIND_LEN
        })
    );
    assert!(matches!(
        new("k", "a".repeat(MAX_NAME_LEN + 1), Value::Null),
        Err(RecordError::TooLong { field: "actor", .. })
    ));
    assert!(matches!(
        AuditRecord::new(
            0,
            at(0),
            "k",
            "a",
            "s".repeat(MAX_NAME_LEN + 1),
            Value::Null
        ),
        Err(RecordError::TooLong {
            field: "subject",
            ..
        })
    ));
    assert!(matches!(
        new("k", "a".into(), json!("x".repeat(MAX_DETAILS_LEN))),
        Err(RecordError::TooLong {
            field: "details",
            ..
        })
    ));
    let mut deep = Value::Null;
    for _ in 0..=MAX_DETAILS_DEPTH + 1 {
        deep = json!([deep]);
    }
    assert_eq!(new("k", "a".into(), deep), Err(RecordError::DetailsTooDeep));
    let mut ok = Value::Null;
    for _ in 0..MAX_DETAILS_DEPTH {
        ok = json!({ "k": ok });
    }
    assert!(new("k", "a".into(), ok).is_ok());
}

#[test]
fn strings_are_escaped_deterministically() {
    let r = AuditRecord::new(
        0,
        at(0),
        "k",
        "a",
        "s",
        json!({"q\"uote": "line\nbreak\u{1}", "é": "\u{2014}"}),
    )
    .unwrap();
    assert_eq!(
        r.details_canonical(),
        "{\"q\\\"uote\":\"line\\nbreak\\u0001\",\"é\":\"\u{2014}\"}"
    );
}

/// Measures nothing: prints how long encoding and hashing take, as a rough guide until a
/// criterion bench exists.
#[test]
fn encoding_and_hashing_cost() {
    let r = sample();
    let n = 1_000;
    let start = Instant::now();
    let mut frontier = crate::audit::Frontier::new();
    for _ in 0..n {
        frontier.push(r.leaf_hash());
    }
    let elapsed = start.elapsed();
    eprintln!(
        "encode + leaf hash + append: {:?} per record (debug build, {n} records)",
        elapsed / n
    );
    assert_eq!(frontier.size(), u64::from(n));
}
