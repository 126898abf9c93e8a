//! Property tests for the identity parsers: no input makes them panic, and every generated valid
//! value survives `Display` → `FromStr` unchanged.
//!
//! Case counts stay modest: CI runs on two cores.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::str::FromStr;

use lanyard_core::{DnsName, EntryId, Selector, SelectorSet, SpiffeId, TrustDomain};
use proptest::prelude::*;

// === strategies ===

/// A valid trust-domain name: `[a-z0-9._-]`, 1 to 255 bytes (mostly short, sometimes at the limit).
fn trust_domain_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9._-]{1,40}",
        1 => "[a-z0-9._-]{250,255}",
    ]
}

/// A valid path segment: `[a-zA-Z0-9._-]+` other than `.` and `..`.
fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,24}".prop_filter("dot segment", |s| s != "." && s != "..")
}

fn segments() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(segment(), 0..8)
}

/// A valid SPIFFE ID string, at most 2048 bytes.
fn valid_id() -> impl Strategy<Value = String> {
    (trust_domain_name(), segments())
        .prop_map(|(td, segs)| {
            let mut id = format!("spiffe://{td}");
            for s in segs {
                id.push('/');
                id.push_str(&s);
            }
            id
        })
        .prop_filter("over 2048 bytes", |id| id.len() <= 2048)
}

/// A valid selector: a type of `[a-z0-9_-]` and a value without control characters (which may
/// hold `:`).
fn valid_selector() -> impl Strategy<Value = (String, String)> {
    ("[a-z0-9_-]{1,16}", r"[^\p{Cc}]{1,40}")
}

/// A valid DNS name, optionally with a leading wildcard label.
fn valid_dns_name() -> impl Strategy<Value = String> {
    let label = "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?";
    (any::<bool>(), proptest::collection::vec(label, 1..5)).prop_map(|(wildcard, labels)| {
        let name = labels.join(".");
        if wildcard { format!("*.{name}") } else { name }
    })
}

/// Strings built from the characters that matter to the ID grammar, so that generated input
/// reaches deep into the parser rather than failing on the first byte.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[sSpPiIfFeE:/.@%?#a-z0-9_-]{0,40}",
        "spiffe://[a-zA-Z0-9:/.@%?#_ é\\[\\]-]{0,60}",
        "spiffe:/{0,3}[a-z0-9./]{0,20}",
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Runs every parser on `s`; only a panic fails.
fn parse_everything(s: &str) {
    let _ = SpiffeId::from_str(s);
    let _ = TrustDomain::from_str(s);
    let _ = TrustDomain::new(s);
    let _ = Selector::from_str(s);
    let _ = DnsName::from_str(s);
    let _ = EntryId::from_str(s);
    let _ = serde_json::from_str::<SpiffeId>(s);
    let _ = serde_json::from_str::<SelectorSet>(s);
    if let Ok(id) = SpiffeId::from_str("spiffe://example.org") {
        let _ = id.join(s);
        let trust_domain = id.trust_domain();
        let _ = trust_domain.id_with_path(s);
        let _ = trust_domain.id_from_segments(&[s]);
    }
}

// === never panic ===

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn parsers_never_panic_on_strings(s in any::<String>()) {
        parse_everything(&s);
    }

    #[test]
    fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        parse_everything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parsers_never_panic_on_id_like_strings(s in id_like()) {
        parse_everything(&s);
    }

    /// Lanyard never normalizes: whatever it accepts, it prints back byte for byte, and what it
    /// prints is lowercase up to the path.
    #[test]
    fn accepted_ids_are_emitted_unchanged(s in id_like()) {
        if let Ok(id) = SpiffeId::from_str(&s) {
            prop_assert_eq!(&id.to_string(), &s);
            prop_assert!(s.len() <= 2048);
            let head = &s[..s.len() - id.path().len()];
            prop_assert_eq!(head.to_ascii_lowercase(), head);
            prop_assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), s);
        }
    }
}

// === round trips ===

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn spiffe_id_round_trips(s in valid_id()) {
        let id = SpiffeId::from_str(&s).unwrap();
        prop_assert_eq!(id.as_str(), s.as_str());
        let text = id.to_string();
        prop_assert_eq!(&text, &s);
        let again = SpiffeId::from_str(&text).unwrap();
        prop_assert_eq!(&again, &id);
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
    }

    #[test]
    fn builders_agree_with_the_parser(td in trust_domain_name(), segs in segments()) {
        let trust_domain = TrustDomain::new(&td).unwrap();
        let text = segs.iter().fold(format!("spiffe://{td}"), |acc, s| format!("{acc}/{s}"));
        let parsed = SpiffeId::from_str(&text);
        let built = trust_domain.id_from_segments(&segs);
        prop_assert_eq!(&built, &parsed);
        let path = &text[9 + td.len()..];
        prop_assert_eq!(&trust_domain.id_with_path(path), &parsed);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.trust_domain(), trust_domain);
            let want: Vec<&str> = segs.iter().map(String::as_str).collect();
            prop_assert_eq!(id.segments().collect::<Vec<_>>(), want);
            prop_assert_eq!(id.is_trust_domain_id(), segs.is_empty());
        }
    }

    #[test]
    fn trust_domain_round_trips(td in trust_domain_name()) {
        let parsed = TrustDomain::from_str(&td).unwrap();
        let text = parsed.to_string();
        prop_assert_eq!(&text, &td);
        prop_assert_eq!(&TrustDomain::from_str(&text).unwrap(), &parsed);
        // The `spiffe://td` form names the same trust domain.
        let id_form = parsed.id().to_string();
        prop_assert_eq!(&TrustDomain::from_str(&id_form).unwrap(), &parsed);
        let json = serde_json::to_string(&parsed).unwrap();
        prop_assert_eq!(serde_json::from_str::<TrustDomain>(&json).unwrap(), parsed);
    }

    #[test]
    fn selector_round_trips((kind, value) in valid_selector()) {
        let selector = Selector::new(&kind, &value).unwrap();
        prop_assert_eq!(selector.kind(), kind.as_str());
        prop_assert_eq!(selector.value(), value.as_str());
        let text = selector.to_string();
        prop_assert_eq!(&text, &format!("{kind}:{value}"));
        prop_assert_eq!(&Selector::from_str(&text).unwrap(), &selector);
        let json = serde_json::to_string(&selector).unwrap();
        prop_assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), selector);
    }

    #[test]
    fn selector_set_subset_matches_btreeset(
        a in proptest::collection::vec(valid_selector(), 0..4),
        b in proptest::collection::vec(valid_selector(), 0..4),
    ) {
        let to_set = |v: &[(String, String)]| -> SelectorSet {
            v.iter().map(|(k, val)| Selector::new(k, val).unwrap()).collect()
        };
        let (sa, sb) = (to_set(&a), to_set(&b));
        let union: SelectorSet = sa.iter().chain(sb.iter()).cloned().collect();
        prop_assert!(sa.is_subset(&union));
        prop_assert!(sb.is_subset(&union));
        let every_a_in_b = sa.iter().all(|s| sb.contains(s));
        prop_assert_eq!(sa.is_subset(&sb), every_a_in_b);
        let json = serde_json::to_string(&sa).unwrap();
        prop_assert_eq!(serde_json::from_str::<SelectorSet>(&json).unwrap(), sa);
    }

    #[test]
    fn dns_name_round_trips(name in valid_dns_name()) {
        prop_assume!(name.len() <= 253);
        let parsed = DnsName::from_str(&name).unwrap();
        let text = parsed.to_string();
        prop_assert_eq!(&text, &name);
        prop_assert_eq!(DnsName::from_str(&text).unwrap(), parsed);
    }

    #[test]
    fn entry_id_round_trips(id in "[A-Za-z0-9_-]{1,64}") {
        let parsed = EntryId::from_str(&id).unwrap();
        let text = parsed.to_string();
        prop_assert_eq!(&text, &id);
        prop_assert_eq!(EntryId::from_str(&text).unwrap(), parsed);
    }
}
