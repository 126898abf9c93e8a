//! Cross-check of lanyard's ID parser against an implementation nobody here wrote: the `spiffe`
//! crate (0.19).
//!
//! The two agree on valid/invalid for every input except two documented differences, each tested
//! on its own below:
//!
//! 1. Case (SPIFFE.md §0.5). `spiffe` accepts an uppercase scheme or trust domain and lowercases
//!    it; lanyard refuses it, as go-spiffe does. Both only ever emit lowercase.
//! 2. Length (SPIFFE.md ID-8). `spiffe::SpiffeId::new` puts no limit on a parsed ID (it checks 2048
//!    bytes only when building from segments); lanyard refuses a parsed ID over 2048 bytes. The
//!    spec demands that 2048 bytes be accepted and that longer IDs not be generated, so both are
//!    conformant; lanyard's limit also bounds the work done on hostile input.
//!
//! And one difference for trust domains: `spiffe::TrustDomain::new("spiffe://td/path")` takes the
//! trust domain of a full ID, lanyard's `TrustDomain::from_str` refuses an ID with a path.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use lanyard_core::{IdError, SpiffeId, TrustDomain};
use proptest::prelude::*;

/// What `spiffe` makes of `s`: the canonical string, or `None` if it refuses it.
fn theirs(s: &str) -> Option<String> {
    spiffe::SpiffeId::new(s).ok().map(|id| id.to_string())
}

fn ours(s: &str) -> Result<SpiffeId, IdError> {
    s.parse()
}

/// True if `s` differs from `spiffe`'s canonical form only in the case of the scheme and trust
/// domain: the one spelling difference `spiffe` normalizes away.
fn differs_only_in_case(s: &str, canonical: &str) -> bool {
    s != canonical && s.eq_ignore_ascii_case(canonical) && {
        // The path (after the third `/`) must be byte-identical: it is case-sensitive.
        let path = |x: &str| x.splitn(4, '/').nth(3).map(str::to_owned);
        path(s) == path(canonical)
    }
}

/// Asserts that lanyard and `spiffe` agree on `s`, allowing only the documented differences.
fn assert_agree(s: &str) -> Result<(), TestCaseError> {
    match (ours(s), theirs(s)) {
        (Ok(id), Some(canonical)) => {
            // Lanyard accepts only canonical spellings, so `spiffe` prints it back unchanged.
            prop_assert_eq!(id.as_str(), canonical.as_str(), "input {:?}", s);
            let theirs = spiffe::SpiffeId::new(s).unwrap();
            prop_assert_eq!(id.trust_domain_name(), theirs.trust_domain_name());
            prop_assert_eq!(id.path(), theirs.path());
        }
        (Err(_), None) => {}
        (Ok(id), None) => {
            prop_assert!(
                false,
                "lanyard accepts {:?} as {:?}, spiffe refuses it",
                s,
                id
            );
        }
        (Err(err), Some(canonical)) => {
            let case = differs_only_in_case(s, &canonical);
            let length = s.len() > 2048 && err == IdError::TooLong { len: s.len() };
            prop_assert!(
                case || length,
                "spiffe accepts {:?} (as {:?}), lanyard refuses it: {:?}",
                s,
                canonical,
                err
            );
            if case && canonical.len() <= 2048 {
                // Refused for its case alone: the lowercase spelling is accepted.
                prop_assert!(ours(&canonical).is_ok(), "{:?}", canonical);
                prop_assert!(
                    matches!(
                        err,
                        IdError::WrongScheme | IdError::TrustDomainChar { found: 'A'..='Z' }
                    ),
                    "{:?} → {:?}",
                    s,
                    err
                );
            }
        }
    }
    Ok(())
}

// === the fixed list ===

/// Tricky cases from SPIFFE.md §1 and from both libraries' test suites.
const TRICKY: &[&str] = &[
    "",
    "spiffe://",
    "spiffe:///",
    "spiffe:///path",
    "spiffe://td",
    "spiffe://td/",
    "spiffe://td/a",
    "spiffe://td/a/",
    "spiffe://td//a",
    "spiffe://td/a//b",
    "spiffe://td/.",
    "spiffe://td/..",
    "spiffe://td/a/./b",
    "spiffe://td/a/../b",
    "spiffe://td/.path",
    "spiffe://td/..path",
    "spiffe://td/...",
    "spiffe://td/a?x=1",
    "spiffe://td/a#f",
    "spiffe://td?x=1",
    "spiffe://td#f",
    "spiffe://u:p@td/a",
    "spiffe://u@td",
    "spiffe://td:8080/a",
    "spiffe://td:/a",
    "spiffe://%62%61%64/p",
    "spiffe://td/%41",
    "spiffe://trust$domain",
    "spiffe://1.2.3.4/service",
    "spiffe://[::1]/a",
    "spiffe://exämple.org",
    "spiffe://td/é",
    "spiffe://td/a b",
    "spiffe://td/A/Z/a.b_c-d",
    "spiffe://a-b_c.0/x",
    "spiffe://td/a://b",
    "spiffe://a://b",
    "spiffe:/td",
    "spiffe:td",
    "spiffe//td",
    "://td",
    "http://td/a",
    "spiffe",
    " spiffe://td",
    "spiffe://td ",
    "spiffe://td\n",
    "spiffe://td/\0",
    "spiffe:\\\\td\\a",
];

#[test]
fn fixed_tricky_cases_agree() {
    for s in TRICKY {
        assert_agree(s).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Difference 1: `spiffe` lowercases an uppercase scheme or trust domain; lanyard refuses it. This
/// is deliberate (SPIFFE.md §0.5): go-spiffe refuses it too, and lanyard must never emit it.
#[test]
fn uppercase_scheme_and_trust_domain_are_the_documented_difference() {
    for (input, their_form, our_error) in [
        ("SPIFFE://td/a", "spiffe://td/a", IdError::WrongScheme),
        ("Spiffe://td", "spiffe://td", IdError::WrongScheme),
        (
            "spiffe://Example.org/a",
            "spiffe://example.org/a",
            IdError::TrustDomainChar { found: 'E' },
        ),
        (
            "SpIfFe://Example.ORG/Path",
            "spiffe://example.org/Path",
            IdError::WrongScheme,
        ),
    ] {
        assert_eq!(theirs(input).as_deref(), Some(their_form), "{input}");
        assert_eq!(ours(input), Err(our_error), "{input}");
        assert_eq!(ours(their_form).unwrap().as_str(), their_form);
    }
    // Both keep the path's case: only the scheme and trust domain are case-insensitive.
    assert_eq!(
        theirs("spiffe://td/Service").as_deref(),
        Some("spiffe://td/Service")
    );
    assert_eq!(ours("spiffe://td/Service").unwrap().path(), "/Service");
}

/// Difference 2: an ID over 2048 bytes. `spiffe` parses it; lanyard refuses it.
#[test]
fn over_long_ids_are_the_other_difference() {
    let at_limit = format!("spiffe://td/{}", "a".repeat(2048 - 12));
    assert_eq!(at_limit.len(), 2048);
    assert_eq!(theirs(&at_limit).as_deref(), Some(at_limit.as_str()));
    assert_eq!(ours(&at_limit).unwrap().as_str(), at_limit);

    let over = format!("{at_limit}a");
    assert!(theirs(&over).is_some());
    assert_eq!(ours(&over), Err(IdError::TooLong { len: 2049 }));

    // Both cap trust domains at 255 bytes.
    let td255 = "t".repeat(255);
    let td256 = "t".repeat(256);
    assert!(theirs(&format!("spiffe://{td255}/a")).is_some());
    assert!(ours(&format!("spiffe://{td255}/a")).is_ok());
    assert!(theirs(&format!("spiffe://{td256}/a")).is_none());
    assert_eq!(
        ours(&format!("spiffe://{td256}/a")),
        Err(IdError::TrustDomainTooLong { len: 256 })
    );
}

#[test]
fn trust_domain_parsers_agree() {
    for s in [
        "example.org",
        "spiffe://example.org",
        "1.2.3.4",
        "",
        "spiffe://",
        "td:8080",
        "u@td",
        "trust$domain",
        "%74d",
        "td:/x",
        "http://td",
        "exämple",
        &"t".repeat(255),
        &"t".repeat(256),
    ] {
        let lanyard = s.parse::<TrustDomain>().map(|t| t.to_string()).ok();
        let spiffe = spiffe::TrustDomain::new(s).map(|t| t.to_string()).ok();
        assert_eq!(lanyard, spiffe, "{s:?}");
    }
    // Case: `spiffe` lowercases, lanyard refuses.
    assert_eq!(
        spiffe::TrustDomain::new("Example.org").unwrap().as_str(),
        "example.org"
    );
    assert!("Example.org".parse::<TrustDomain>().is_err());
    // A full ID: `spiffe` takes its trust domain, lanyard refuses it.
    assert_eq!(
        spiffe::TrustDomain::new("spiffe://example.org/web")
            .unwrap()
            .as_str(),
        "example.org"
    );
    assert_eq!(
        "spiffe://example.org/web".parse::<TrustDomain>(),
        Err(IdError::TrustDomainWithPath)
    );
}

// === generated ===

/// Pieces that are valid or invalid in known ways; a generated ID is a random combination.
fn scheme() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "spiffe://",
        "spiffe://",
        "spiffe://",
        "SPIFFE://",
        "Spiffe://",
        "spiffe:/",
        "spiffe:",
        "spiffe:///",
        "http://",
        "://",
        "",
    ])
}

fn trust_domain_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9._-]{1,20}",
        1 => "[a-zA-Z0-9._-]{1,20}",
        1 => "[a-z0-9._@:%\\[\\]$é-]{0,20}",
        1 => Just(String::new()),
        1 => "[a-z]{250,260}",
    ]
}

fn segment_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9._-]{1,12}",
        1 => Just(String::new()),
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => "[a-zA-Z0-9._%?#:@ é~+-]{1,12}",
    ]
}

fn generated_id() -> impl Strategy<Value = String> {
    (
        scheme(),
        trust_domain_piece(),
        prop::collection::vec(segment_piece(), 0..6),
        prop::sample::select(vec!["", "", "", "/", "?q=1", "#frag"]),
    )
        .prop_map(|(scheme, td, segments, tail)| {
            let mut id = format!("{scheme}{td}");
            for s in segments {
                id.push('/');
                id.push_str(&s);
            }
            id.push_str(tail);
            id
        })
}

/// IDs near the 2048-byte limit, where the second documented difference lives.
fn long_id() -> impl Strategy<Value = String> {
    ("[a-z]{1,255}", 1800usize..2300).prop_map(|(td, len)| {
        let mut id = format!("spiffe://{td}/s");
        while id.len() < len {
            id.push_str(if id.len() % 50 == 0 { "/s" } else { "s" });
        }
        id
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_ids_agree(s in generated_id()) {
        assert_agree(&s)?;
    }

    #[test]
    fn arbitrary_strings_agree(s in any::<String>()) {
        assert_agree(&s)?;
    }

    #[test]
    fn long_ids_agree(s in long_id()) {
        assert_agree(&s)?;
    }
}
