//! One test per rule of SPIFFE.md §1 (ID-1 … ID-9), valid and invalid, each asserting the variant
//! that names the broken rule.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::{BTreeSet, HashSet};

use super::*;

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s:?} should be a valid SPIFFE ID: {e}"))
}

fn id_err(s: &str) -> IdError {
    match SpiffeId::parse(s) {
        Ok(id) => panic!("{s:?} should be refused, got {id:?}"),
        Err(e) => e,
    }
}

fn td(s: &str) -> TrustDomain {
    TrustDomain::new(s).unwrap()
}

/// `spiffe://` + a trust domain + a path, `len` bytes in all.
fn id_of_len(len: usize) -> String {
    let head = "spiffe://example.org/";
    let mut s = String::from(head);
    // Segments of 100 `a`s, so that the path stays valid whatever the length.
    while s.len() < len {
        if (s.len() - head.len()) % 101 == 100 {
            s.push('/');
        } else {
            s.push('a');
        }
    }
    s
}

// === ID-1: the scheme ===

#[test]
fn id1_valid_forms() {
    let with_path = id("spiffe://example.org/ns/prod/sa/web");
    assert_eq!(with_path.trust_domain_name(), "example.org");
    assert_eq!(with_path.path(), "/ns/prod/sa/web");
    let bare = id("spiffe://example.org");
    assert_eq!(bare.path(), "");
    assert!(bare.is_trust_domain_id());
}

#[test]
fn id1_wrong_scheme() {
    for s in [
        "http://example.org/a",
        "https://example.org",
        "spiffe:/x",
        "spiffe:x",
        "spiffe:",
        "spiffe",
        "://td",
        "//td/a",
        "example.org/a",
        "spiffe//td",
        " spiffe://td",
        "xspiffe://td",
        "spiffe:\\\\td",
    ] {
        assert_eq!(id_err(s), IdError::WrongScheme, "{s:?}");
    }
}

/// An uppercase scheme is refused (SPIFFE.md §0.5: lanyard parses strictly, like go-spiffe).
#[test]
fn id1_uppercase_scheme_refused() {
    for s in [
        "SPIFFE://td/a",
        "Spiffe://td",
        "spiFFe://td/a",
        "SPIFFE://TD",
    ] {
        assert_eq!(id_err(s), IdError::WrongScheme, "{s:?}");
    }
}

#[test]
fn id1_empty_string() {
    assert_eq!(id_err(""), IdError::Empty);
}

// === ID-2: the trust domain is not empty ===

#[test]
fn id2_missing_trust_domain() {
    for s in ["spiffe://", "spiffe:///path", "spiffe:///"] {
        assert_eq!(id_err(s), IdError::MissingTrustDomain, "{s:?}");
    }
    assert_eq!(TrustDomain::new(""), Err(IdError::MissingTrustDomain));
    assert_eq!("".parse::<TrustDomain>(), Err(IdError::MissingTrustDomain));
}

// === ID-3: no query, no fragment ===

#[test]
fn id3_query_and_fragment_refused() {
    assert_eq!(
        id_err("spiffe://td/a?x=1"),
        IdError::PathChar { found: '?' }
    );
    assert_eq!(id_err("spiffe://td/a#f"), IdError::PathChar { found: '#' });
    // Without a path the `?` or `#` lands in the authority.
    assert_eq!(
        id_err("spiffe://td?x=1"),
        IdError::TrustDomainChar { found: '?' }
    );
    assert_eq!(
        id_err("spiffe://td#f"),
        IdError::TrustDomainChar { found: '#' }
    );
    assert_eq!(id_err("spiffe://td/?"), IdError::PathChar { found: '?' });
}

// === ID-4: no userinfo, no port ===

#[test]
fn id4_userinfo_refused() {
    for s in [
        "spiffe://u:p@td/a",
        "spiffe://u@td/a",
        "spiffe://@td",
        "spiffe://u:p@td:8080/a",
    ] {
        assert_eq!(id_err(s), IdError::UserInfo, "{s:?}");
    }
    assert_eq!(TrustDomain::new("u@td"), Err(IdError::UserInfo));
}

#[test]
fn id4_port_refused() {
    for s in ["spiffe://td:8080/a", "spiffe://td:8080", "spiffe://td:/a"] {
        assert_eq!(id_err(s), IdError::Port, "{s:?}");
    }
    assert_eq!(TrustDomain::new("td:443"), Err(IdError::Port));
}

// === ID-5: trust-domain characters ===

#[test]
fn id5_trust_domain_characters() {
    let every_allowed = "abcdefghijklmnopqrstuvwxyz0123456789.-_";
    assert_eq!(
        id(&format!("spiffe://{every_allowed}/a")).trust_domain_name(),
        every_allowed
    );
    assert_eq!(td(every_allowed).as_str(), every_allowed);

    assert_eq!(id_err("spiffe://%62%61%64/p"), IdError::PercentEncoded);
    assert_eq!(id_err("spiffe://a%2Eb/p"), IdError::PercentEncoded);
    for (s, found) in [
        ("spiffe://trust$domain", '$'),
        ("spiffe://Example.org/a", 'E'),
        ("spiffe://example.ORG", 'O'),
        ("spiffe://exämple.org", 'ä'),
        ("spiffe://ex ample.org", ' '),
        ("spiffe://example.org\n", '\n'),
        ("spiffe://a+b", '+'),
        ("spiffe://a~b", '~'),
        ("spiffe://a\\b", '\\'),
    ] {
        assert_eq!(id_err(s), IdError::TrustDomainChar { found }, "{s:?}");
    }
    assert_eq!(
        TrustDomain::new("Example.org"),
        Err(IdError::TrustDomainChar { found: 'E' })
    );
    assert_eq!(TrustDomain::new("%61"), Err(IdError::PercentEncoded));
}

// === ID-6: no special treatment of IP-like or DNS-like names ===

#[test]
fn id6_ip_and_odd_names_are_plain_trust_domains() {
    let ip = id("spiffe://1.2.3.4/service");
    assert_eq!(ip.trust_domain_name(), "1.2.3.4");
    for s in [
        "spiffe://localhost",
        "spiffe://999.999.999.999",
        "spiffe://-leading-dash",
        "spiffe://under_score",
        "spiffe://..",
        "spiffe://a..b",
    ] {
        id(s);
    }
    // IPv6 literals are excluded by the character set, not by a special case.
    assert_eq!(
        id_err("spiffe://[::1]/a"),
        IdError::TrustDomainChar { found: '[' }
    );
}

// === ID-7: the path ===

#[test]
fn id7_path_percent_encoding_refused() {
    assert_eq!(id_err("spiffe://td/%41"), IdError::PercentEncoded);
    assert_eq!(id_err("spiffe://td/a/b%2Fc"), IdError::PercentEncoded);
}

#[test]
fn id7_empty_segment_refused() {
    for s in ["spiffe://td//", "spiffe://td//a", "spiffe://td/a//b"] {
        assert_eq!(id_err(s), IdError::EmptySegment, "{s:?}");
    }
}

#[test]
fn id7_dot_segments_refused() {
    for s in [
        "spiffe://td/.",
        "spiffe://td/..",
        "spiffe://td/a/./b",
        "spiffe://td/a/../b",
        "spiffe://td/a/..",
        "spiffe://td/./a",
    ] {
        assert_eq!(id_err(s), IdError::DotSegment, "{s:?}");
    }
}

#[test]
fn id7_segments_that_only_start_with_dots_are_valid() {
    for s in [
        "spiffe://td/.path",
        "spiffe://td/..path",
        "spiffe://td/...",
        "spiffe://td/a.",
        "spiffe://td/a/.b/..c",
    ] {
        assert_eq!(id(s).as_str(), s);
    }
}

#[test]
fn id7_trailing_slash_refused() {
    for s in ["spiffe://td/", "spiffe://td/a/", "spiffe://td/a/b/"] {
        assert_eq!(id_err(s), IdError::TrailingSlash, "{s:?}");
    }
}

#[test]
fn id7_path_characters() {
    let every_allowed = "/abcdefghijklmnopqrstuvwxyz/ABCDEFGHIJKLMNOPQRSTUVWXYZ/0123456789._-";
    assert_eq!(
        id(&format!("spiffe://td{every_allowed}")).path(),
        every_allowed
    );
    for (s, found) in [
        ("spiffe://td/a b", ' '),
        ("spiffe://td/é", 'é'),
        ("spiffe://td/a+b", '+'),
        ("spiffe://td/a~b", '~'),
        ("spiffe://td/a:b", ':'),
        ("spiffe://td/a@b", '@'),
        ("spiffe://td/a$b", '$'),
        ("spiffe://td/a\\b", '\\'),
        ("spiffe://td/a\0", '\0'),
        ("spiffe://td/a\t", '\t'),
        ("spiffe://td/🦀", '🦀'),
    ] {
        assert_eq!(id_err(s), IdError::PathChar { found }, "{s:?}");
    }
}

#[test]
fn id7_path_is_optional_and_starts_with_slash() {
    assert_eq!(id("spiffe://td").segments().count(), 0);
    assert_eq!(
        td("td").id_with_path("a/b"),
        Err(IdError::PathWithoutLeadingSlash)
    );
    assert_eq!(td("td").id_with_path("").unwrap(), td("td").id());
}

// === ID-8: lengths ===

#[test]
fn id8_id_length_limit() {
    let max = id_of_len(MAX_ID_LEN);
    assert_eq!(max.len(), 2048);
    assert_eq!(id(&max).as_str(), max);

    let over = id_of_len(MAX_ID_LEN + 1);
    assert_eq!(id_err(&over), IdError::TooLong { len: 2049 });
    // The limit holds before any other check, so a huge input costs nothing to refuse.
    assert_eq!(
        id_err(&"x".repeat(1 << 20)),
        IdError::TooLong { len: 1 << 20 }
    );
}

#[test]
fn id8_trust_domain_length_limit() {
    let name255 = "a".repeat(MAX_TRUST_DOMAIN_LEN);
    let name256 = "a".repeat(MAX_TRUST_DOMAIN_LEN + 1);
    assert_eq!(td(&name255).as_str(), name255);
    assert_eq!(
        id(&format!("spiffe://{name255}/x")).trust_domain_name(),
        name255
    );
    assert_eq!(
        TrustDomain::new(&name256),
        Err(IdError::TrustDomainTooLong { len: 256 })
    );
    assert_eq!(
        id_err(&format!("spiffe://{name256}/x")),
        IdError::TrustDomainTooLong { len: 256 }
    );
}

#[test]
fn id8_longest_trust_domain_with_longest_path() {
    let name = "d".repeat(MAX_TRUST_DOMAIN_LEN);
    let prefix = format!("spiffe://{name}/");
    let full = format!("{prefix}{}", "p".repeat(MAX_ID_LEN - prefix.len()));
    assert_eq!(full.len(), MAX_ID_LEN);
    assert_eq!(id(&full).as_str(), full);
    assert_eq!(id_err(&format!("{full}p")), IdError::TooLong { len: 2049 });
}

#[test]
fn id8_builders_respect_the_limit() {
    let trust_domain = td("example.org");
    // `spiffe://example.org/` is 21 bytes: a 2027-byte segment makes exactly 2048.
    let fits = "s".repeat(MAX_ID_LEN - 21);
    let too_big = "s".repeat(MAX_ID_LEN - 20);
    assert_eq!(
        trust_domain.id().join(&fits).unwrap().as_str().len(),
        MAX_ID_LEN
    );
    assert_eq!(
        trust_domain.id().join(&too_big),
        Err(IdError::TooLong { len: 2049 })
    );
    assert_eq!(
        trust_domain.id_with_path(&format!("/{too_big}")),
        Err(IdError::TooLong { len: 2049 })
    );
    assert_eq!(
        trust_domain.id_from_segments(&[fits.as_str(), "x"]),
        Err(IdError::TooLong { len: 2050 })
    );
}

// === ID-9: comparison ===

#[test]
fn id9_path_is_case_sensitive() {
    let upper = id("spiffe://example.org/Service");
    let lower = id("spiffe://example.org/service");
    assert_ne!(upper, lower);
    let set: HashSet<_> = [upper.clone(), lower.clone(), upper.clone()].into();
    assert_eq!(set.len(), 2);
    assert_eq!(upper.trust_domain(), lower.trust_domain());
}

/// The trust domain is case-insensitive in the spec; lanyard makes that moot by admitting only the
/// lowercase spelling, so two valid IDs can never differ only in trust-domain case.
#[test]
fn id9_trust_domain_only_exists_in_lowercase() {
    assert_eq!(
        id_err("spiffe://EXAMPLE.org/a"),
        IdError::TrustDomainChar { found: 'E' }
    );
    assert!(id("spiffe://example.org/a").is_member_of(&td("example.org")));
    assert!(!id("spiffe://example.org/a").is_member_of(&td("example.com")));
}

// === TrustDomain ===

#[test]
fn trust_domain_from_str_bare_and_id_forms() {
    let bare: TrustDomain = "example.org".parse().unwrap();
    let from_id: TrustDomain = "spiffe://example.org".parse().unwrap();
    assert_eq!(bare, from_id);
    assert_eq!(from_id.as_str(), "example.org");
    assert_eq!(from_id.to_string(), "example.org");
    assert_eq!(from_id.id().as_str(), "spiffe://example.org");
}

#[test]
fn trust_domain_from_str_refusals() {
    for (s, want) in [
        ("spiffe://example.org/web", IdError::TrustDomainWithPath),
        ("spiffe://example.org/", IdError::TrailingSlash),
        ("SPIFFE://example.org", IdError::WrongScheme),
        ("http://example.org", IdError::WrongScheme),
        ("td:/x", IdError::WrongScheme),
        ("spiffe://", IdError::MissingTrustDomain),
        ("Example.org", IdError::TrustDomainChar { found: 'E' }),
        ("example.org/web", IdError::TrustDomainChar { found: '/' }),
        ("td:8080", IdError::Port),
        ("u@td", IdError::UserInfo),
        ("%74d", IdError::PercentEncoded),
    ] {
        assert_eq!(s.parse::<TrustDomain>(), Err(want), "{s:?}");
    }
}

#[test]
fn trust_domain_id_and_membership() {
    let trust_domain = td("example.org");
    let root = trust_domain.id();
    assert!(root.is_trust_domain_id());
    assert_eq!(root.trust_domain(), trust_domain);
    assert!(root.is_member_of(&trust_domain));
    assert_eq!(root.path(), "");
    assert_eq!(format!("{trust_domain:?}"), "TrustDomain(example.org)");
}

// === builders ===

#[test]
fn id_from_segments_builds_and_checks_each_segment() {
    let trust_domain = td("example.org");
    let built = trust_domain
        .id_from_segments(&["ns", "prod", "sa", "web"])
        .unwrap();
    assert_eq!(built.as_str(), "spiffe://example.org/ns/prod/sa/web");
    assert_eq!(
        built.segments().collect::<Vec<_>>(),
        ["ns", "prod", "sa", "web"]
    );
    assert_eq!(built.trust_domain_name(), "example.org");
    assert_eq!(built, id("spiffe://example.org/ns/prod/sa/web"));

    let no_segments: [&str; 0] = [];
    assert_eq!(
        trust_domain.id_from_segments(&no_segments).unwrap(),
        trust_domain.id()
    );
    // Owned strings work too.
    let owned = vec![String::from("a"), String::from(".b")];
    assert_eq!(
        trust_domain.id_from_segments(&owned).unwrap().as_str(),
        "spiffe://example.org/a/.b"
    );

    for (segments, want) in [
        (vec!["a", ""], IdError::EmptySegment),
        (vec!["."], IdError::DotSegment),
        (vec!["a", ".."], IdError::DotSegment),
        (vec!["a/b"], IdError::PathChar { found: '/' }),
        (vec!["%41"], IdError::PercentEncoded),
        (vec!["a?"], IdError::PathChar { found: '?' }),
    ] {
        assert_eq!(
            trust_domain.id_from_segments(&segments),
            Err(want),
            "{segments:?}"
        );
    }
}

#[test]
fn id_with_path_builds_and_checks_the_path() {
    let trust_domain = td("example.org");
    let built = trust_domain.id_with_path("/ns/prod").unwrap();
    assert_eq!(built.as_str(), "spiffe://example.org/ns/prod");
    assert_eq!(built.path(), "/ns/prod");
    assert_eq!(built.trust_domain(), trust_domain);
    for (path, want) in [
        ("ns", IdError::PathWithoutLeadingSlash),
        ("/", IdError::TrailingSlash),
        ("/a/", IdError::TrailingSlash),
        ("//a", IdError::EmptySegment),
        ("/a/../b", IdError::DotSegment),
        ("/a%2F", IdError::PercentEncoded),
        ("/a?x", IdError::PathChar { found: '?' }),
    ] {
        assert_eq!(trust_domain.id_with_path(path), Err(want), "{path:?}");
    }
}

#[test]
fn join_appends_one_segment() {
    let base = id("spiffe://example.org/a");
    let joined = base.join("b").unwrap();
    assert_eq!(joined.as_str(), "spiffe://example.org/a/b");
    assert_eq!(joined.path(), "/a/b");
    assert_eq!(joined.trust_domain_name(), "example.org");
    assert_eq!(joined, id("spiffe://example.org/a/b"));
    assert_eq!(
        td("example.org").id().join("x").unwrap().as_str(),
        "spiffe://example.org/x"
    );
    assert_eq!(base.join(""), Err(IdError::EmptySegment));
    assert_eq!(base.join(".."), Err(IdError::DotSegment));
    assert_eq!(base.join("b/c"), Err(IdError::PathChar { found: '/' }));
    assert_eq!(base.join("%62"), Err(IdError::PercentEncoded));
}

// === traits ===

#[test]
fn display_from_str_round_trip() {
    for s in [
        "spiffe://example.org",
        "spiffe://example.org/ns/prod/sa/web",
        "spiffe://1.2.3.4/service",
        "spiffe://td/.path/..path/...",
        "spiffe://a-b_c.d/A/Z/0_9-.x",
    ] {
        let parsed = id(s);
        assert_eq!(parsed.to_string(), s);
        assert_eq!(AsRef::<str>::as_ref(&parsed), s);
        assert_eq!(parsed.to_string().parse::<SpiffeId>().unwrap(), parsed);
        let trust_domain = parsed.trust_domain();
        assert_eq!(
            trust_domain.to_string().parse::<TrustDomain>().unwrap(),
            trust_domain
        );
    }
}

#[test]
fn serde_round_trip() {
    let parsed = id("spiffe://example.org/web");
    let json = serde_json::to_string(&parsed).unwrap();
    assert_eq!(json, r#""spiffe://example.org/web""#);
    assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), parsed);

    let trust_domain = td("example.org");
    let json = serde_json::to_string(&trust_domain).unwrap();
    assert_eq!(json, r#""example.org""#);
    assert_eq!(
        serde_json::from_str::<TrustDomain>(&json).unwrap(),
        trust_domain
    );
    // The ID form is accepted on input and written back bare.
    assert_eq!(
        serde_json::from_str::<TrustDomain>(r#""spiffe://example.org""#).unwrap(),
        trust_domain
    );
}

#[test]
fn serde_refuses_invalid_values() {
    for json in [
        r#""SPIFFE://example.org/web""#,
        r#""spiffe://example.org/""#,
        r#""spiffe://u@td""#,
        r#""""#,
        "42",
        "null",
        r#"["spiffe://td"]"#,
    ] {
        assert!(serde_json::from_str::<SpiffeId>(json).is_err(), "{json}");
    }
    let err = serde_json::from_str::<SpiffeId>(r#""spiffe://td:1/a""#).unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
    assert!(serde_json::from_str::<TrustDomain>(r#""Example.org""#).is_err());
    assert!(serde_json::from_str::<TrustDomain>(r#""spiffe://td/a""#).is_err());
}

#[test]
fn ordering_and_hashing_follow_the_string() {
    let ids: BTreeSet<SpiffeId> = [
        "spiffe://b.org/a",
        "spiffe://a.org/z",
        "spiffe://a.org",
        "spiffe://a.org/Z",
    ]
    .into_iter()
    .map(id)
    .collect();
    let sorted: Vec<&str> = ids.iter().map(SpiffeId::as_str).collect();
    assert_eq!(
        sorted,
        [
            "spiffe://a.org",
            "spiffe://a.org/Z",
            "spiffe://a.org/z",
            "spiffe://b.org/a"
        ]
    );
    assert_eq!(
        format!("{:?}", id("spiffe://a.org/x")),
        "SpiffeId(spiffe://a.org/x)"
    );
}

#[test]
fn error_messages_name_the_offending_character() {
    assert!(id_err("spiffe://td/a b").to_string().contains("' '"),);
    assert!(id_err("spiffe://Td").to_string().contains("'T'"),);
    assert!(id_err(&id_of_len(3000)).to_string().contains("3000"));
}

// === names reserved for lanyard ===

#[test]
fn lanyard_and_everything_under_it_is_reserved() {
    for reserved in [
        "spiffe://example.org/lanyard",
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard/agent/join_token/0123456789abcdef",
        "spiffe://example.org/lanyard/anything/else",
        "spiffe://other.org/lanyard/server",
    ] {
        assert!(id(reserved).is_reserved_for_lanyard(), "{reserved}");
    }
    // `/lanyard/` is not an ID at all, so it cannot slip past the check.
    assert_eq!(
        id_err("spiffe://example.org/lanyard/"),
        IdError::TrailingSlash
    );
}

#[test]
fn names_that_only_look_like_lanyard_are_not_reserved() {
    for ordinary in [
        "spiffe://example.org",
        "spiffe://example.org/lanyardx",
        "spiffe://example.org/lanyard-server",
        "spiffe://example.org/x/lanyard",
        "spiffe://example.org/x/lanyard/server",
        // Paths are case-sensitive (SPIFFE-ID §2.4): this is another ID, which no agent
        // mistakes for the server's.
        "spiffe://example.org/Lanyard/server",
        "spiffe://lanyard/web",
    ] {
        assert!(!id(ordinary).is_reserved_for_lanyard(), "{ordinary}");
    }
}
