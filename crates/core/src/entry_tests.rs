#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;
use crate::Selector;

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn td(s: &str) -> TrustDomain {
    s.parse().unwrap()
}

/// A spec that passes every check; each test breaks one field.
fn spec() -> EntrySpec {
    EntrySpec {
        id: EntryId::new("6a1b2c3d-0000-4000-8000-000000000001").unwrap(),
        spiffe_id: id("spiffe://example.org/web"),
        parent_id: id("spiffe://example.org/lanyard/agent/join_token/abc"),
        selectors: ["unix:uid:1000".parse::<Selector>().unwrap()]
            .into_iter()
            .collect(),
        x509_svid_ttl: DEFAULT_X509_SVID_TTL,
        jwt_svid_ttl: DEFAULT_JWT_SVID_TTL,
        dns_names: vec![DnsName::new("web.example.org").unwrap()],
        federates_with: vec![td("partner.org")],
        admin: false,
        downstream: false,
        hint: "web".to_owned(),
        expires_at: None,
        revision: 0,
    }
}

fn refused(spec: EntrySpec) -> EntryError {
    RegistrationEntry::new(spec).unwrap_err()
}

// === RegistrationEntry ===

#[test]
fn a_valid_spec_becomes_an_entry_with_the_same_fields() {
    let original = spec();
    let entry = RegistrationEntry::new(original.clone()).unwrap();
    assert_eq!(entry.id(), &original.id);
    assert_eq!(entry.spiffe_id(), &original.spiffe_id);
    assert_eq!(entry.parent_id(), &original.parent_id);
    assert_eq!(entry.selectors(), &original.selectors);
    assert_eq!(entry.x509_svid_ttl(), original.x509_svid_ttl);
    assert_eq!(entry.jwt_svid_ttl(), original.jwt_svid_ttl);
    assert_eq!(entry.dns_names(), original.dns_names.as_slice());
    assert_eq!(entry.federates_with(), original.federates_with.as_slice());
    assert!(!entry.admin());
    assert!(!entry.downstream());
    assert_eq!(entry.hint(), "web");
    assert_eq!(entry.expires_at(), None);
    assert_eq!(entry.revision(), 0);
    assert_eq!(entry.spec(), &original);
    let entry = entry.with_revision(7);
    assert_eq!(entry.revision(), 7);
    assert_eq!(entry.into_spec().revision, 7);
    assert!(RegistrationEntry::new_in(spec(), &td("example.org")).is_ok());
}

#[test]
fn root_spiffe_id_refused() {
    let root = id("spiffe://example.org");
    let err = refused(EntrySpec {
        spiffe_id: root.clone(),
        ..spec()
    });
    assert_eq!(err, EntryError::RootSpiffeId(root));
}

#[test]
fn no_selectors_refused() {
    let err = refused(EntrySpec {
        selectors: SelectorSet::new(),
        ..spec()
    });
    assert_eq!(err, EntryError::NoSelectors);
}

#[test]
fn ttl_bounds() {
    for ttl in [MIN_SVID_TTL, MAX_SVID_TTL] {
        assert!(
            RegistrationEntry::new(EntrySpec {
                x509_svid_ttl: ttl,
                jwt_svid_ttl: ttl,
                ..spec()
            })
            .is_ok()
        );
    }
    let too_long = MAX_SVID_TTL + Duration::from_secs(1);
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(999),
        too_long,
        Duration::MAX,
    ] {
        assert_eq!(
            refused(EntrySpec {
                x509_svid_ttl: ttl,
                ..spec()
            }),
            EntryError::TtlOutOfRange {
                field: "x509_svid_ttl",
                ttl
            }
        );
        assert_eq!(
            refused(EntrySpec {
                jwt_svid_ttl: ttl,
                ..spec()
            }),
            EntryError::TtlOutOfRange {
                field: "jwt_svid_ttl",
                ttl
            }
        );
    }
}

#[test]
fn dns_name_count_limit() {
    let names: Vec<DnsName> = (0..=MAX_DNS_NAMES)
        .map(|i| DnsName::new(&format!("n{i}.example.org")).unwrap())
        .collect();
    assert!(
        RegistrationEntry::new(EntrySpec {
            dns_names: names[..MAX_DNS_NAMES].to_vec(),
            ..spec()
        })
        .is_ok()
    );
    assert_eq!(
        refused(EntrySpec {
            dns_names: names,
            ..spec()
        }),
        EntryError::TooManyDnsNames(MAX_DNS_NAMES + 1)
    );
}

#[test]
fn hint_rules() {
    assert!(
        RegistrationEntry::new(EntrySpec {
            hint: "h".repeat(MAX_HINT_LEN),
            ..spec()
        })
        .is_ok()
    );
    assert!(
        RegistrationEntry::new(EntrySpec {
            hint: String::new(),
            ..spec()
        })
        .is_ok()
    );
    assert_eq!(
        refused(EntrySpec {
            hint: "h".repeat(MAX_HINT_LEN + 1),
            ..spec()
        }),
        EntryError::HintTooLong { len: 1025 }
    );
    for hint in ["a\nb", "\0", "tab\t", "\u{7f}"] {
        assert_eq!(
            refused(EntrySpec {
                hint: hint.to_owned(),
                ..spec()
            }),
            EntryError::HintControlChar,
            "{hint:?}"
        );
    }
}

#[test]
fn new_in_refuses_a_foreign_spiffe_id() {
    let foreign = id("spiffe://other.org/web");
    let err = RegistrationEntry::new_in(
        EntrySpec {
            spiffe_id: foreign.clone(),
            ..spec()
        },
        &td("example.org"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        EntryError::ForeignTrustDomain {
            id: foreign,
            expected: td("example.org")
        }
    );
    // Plain `new` has no trust domain to compare with.
    assert!(
        RegistrationEntry::new(EntrySpec {
            spiffe_id: id("spiffe://other.org/web"),
            ..spec()
        })
        .is_ok()
    );
}

#[test]
fn new_in_refuses_a_foreign_parent() {
    let foreign = id("spiffe://other.org/lanyard/agent/x");
    let err = RegistrationEntry::new_in(
        EntrySpec {
            parent_id: foreign.clone(),
            ..spec()
        },
        &td("example.org"),
    )
    .unwrap_err();
    assert_eq!(
        err,
        EntryError::ForeignParent {
            id: foreign,
            expected: td("example.org")
        }
    );
    // The trust domain's own ID (its server) is a valid parent.
    assert!(
        RegistrationEntry::new_in(
            EntrySpec {
                parent_id: id("spiffe://example.org"),
                ..spec()
            },
            &td("example.org"),
        )
        .is_ok()
    );
}

#[test]
fn new_in_checks_the_rules_of_new_too() {
    let err = RegistrationEntry::new_in(
        EntrySpec {
            selectors: SelectorSet::new(),
            ..spec()
        },
        &td("example.org"),
    )
    .unwrap_err();
    assert_eq!(err, EntryError::NoSelectors);
}

#[test]
fn expiry() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let entry = RegistrationEntry::new(EntrySpec {
        expires_at: Some(at),
        ..spec()
    })
    .unwrap();
    assert!(!entry.is_expired(at - Duration::from_secs(1)));
    assert!(entry.is_expired(at));
    assert!(entry.is_expired(at + Duration::from_secs(1)));
    let forever = RegistrationEntry::new(spec()).unwrap();
    assert!(!forever.is_expired(SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX.into())));
}

#[test]
fn error_messages_name_the_field() {
    assert!(
        EntryError::SpiffeId(IdError::Port)
            .to_string()
            .starts_with("spiffe_id: ")
    );
    assert!(
        EntryError::ParentId(IdError::UserInfo)
            .to_string()
            .starts_with("parent_id: ")
    );
    assert!(
        EntryError::from(DnsNameError::Empty)
            .to_string()
            .starts_with("dns_names: ")
    );
    let ttl = EntryError::TtlOutOfRange {
        field: "jwt_svid_ttl",
        ttl: Duration::ZERO,
    };
    assert!(ttl.to_string().starts_with("jwt_svid_ttl: "), "{ttl}");
}

// === EntryId ===

#[test]
fn entry_id_rules() {
    for ok in [
        "a",
        "6a1b2c3d-0000-4000-8000-000000000001",
        "Import_42-x",
        &"z".repeat(MAX_ENTRY_ID_LEN),
    ] {
        assert_eq!(EntryId::new(ok).unwrap().as_str(), ok);
        assert_eq!(ok.parse::<EntryId>().unwrap().to_string(), ok);
    }
    for bad in [
        "",
        &"z".repeat(MAX_ENTRY_ID_LEN + 1),
        "a b",
        "a/b",
        "a.b",
        "a:b",
        "é",
        "a\n",
    ] {
        assert_eq!(EntryId::new(bad), Err(EntryError::BadEntryId), "{bad:?}");
    }
}

#[test]
fn entry_id_serde_and_debug() {
    let entry_id = EntryId::new("abc-1").unwrap();
    let json = serde_json::to_string(&entry_id).unwrap();
    assert_eq!(json, r#""abc-1""#);
    assert_eq!(serde_json::from_str::<EntryId>(&json).unwrap(), entry_id);
    assert!(serde_json::from_str::<EntryId>(r#""a b""#).is_err());
    assert_eq!(format!("{entry_id:?}"), "EntryId(abc-1)");
}

// === DnsName ===

#[test]
fn dns_name_valid() {
    for ok in [
        "example.org",
        "localhost",
        "a",
        "web-1.prod.example.org",
        "xn--bcher-kva.example",
        "0.example",
        "*.example.org",
        "*.org",
    ] {
        let name = DnsName::new(ok).unwrap();
        assert_eq!(name.as_str(), ok);
        assert_eq!(name.to_string().parse::<DnsName>().unwrap(), name);
    }
}

#[test]
fn dns_name_wildcard_only_as_the_whole_first_label() {
    for (bad, label) in [
        ("*", "*"),
        ("*.", ""),
        ("*example.org", "*example"),
        ("w*.example.org", "w*"),
        ("a.*.example.org", "*"),
        ("*.*.example.org", "*"),
    ] {
        assert_eq!(
            DnsName::new(bad),
            Err(DnsNameError::BadLabel {
                name: bad.to_owned(),
                label: label.to_owned()
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn dns_name_label_rules() {
    assert_eq!(DnsName::new(""), Err(DnsNameError::Empty));
    let label63 = "l".repeat(63);
    assert!(DnsName::new(&format!("{label63}.org")).is_ok());
    for (bad, label) in [
        ("Example.org", "Example"),
        ("example..org", ""),
        ("example.org.", ""),
        (".example.org", ""),
        ("-web.org", "-web"),
        ("web-.org", "web-"),
        ("we_b.org", "we_b"),
        ("web .org", "web "),
        ("bücher.example", "bücher"),
        ("1.2.3.4:80", "4:80"),
    ] {
        assert_eq!(
            DnsName::new(bad),
            Err(DnsNameError::BadLabel {
                name: bad.to_owned(),
                label: label.to_owned()
            }),
            "{bad:?}"
        );
    }
    let label64 = "l".repeat(64);
    assert!(matches!(
        DnsName::new(&format!("{label64}.org")),
        Err(DnsNameError::BadLabel { label, .. }) if label == label64
    ));
}

#[test]
fn dns_name_total_length() {
    // Four labels of 63 bytes and three dots: 255 bytes, over the 253 limit.
    let label = "l".repeat(63);
    let too_long = [label.as_str(); 4].join(".");
    assert_eq!(
        DnsName::new(&too_long),
        Err(DnsNameError::TooLong(too_long.clone()))
    );
    // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 bytes: the longest allowed.
    let longest = format!("{label}.{label}.{label}.{}", "l".repeat(61));
    assert_eq!(longest.len(), 253);
    assert!(DnsName::new(&longest).is_ok());
}

#[test]
fn dns_name_serde_and_debug() {
    let name = DnsName::new("*.example.org").unwrap();
    let json = serde_json::to_string(&name).unwrap();
    assert_eq!(json, r#""*.example.org""#);
    assert_eq!(serde_json::from_str::<DnsName>(&json).unwrap(), name);
    assert!(serde_json::from_str::<DnsName>(r#""Example.org""#).is_err());
    assert_eq!(format!("{name:?}"), "DnsName(*.example.org)");
}

#[test]
fn new_in_refuses_a_spiffe_id_reserved_for_lanyard() {
    for reserved in [
        "spiffe://example.org/lanyard",
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard/agent/x",
    ] {
        let reserved = id(reserved);
        let err = RegistrationEntry::new_in(
            EntrySpec {
                spiffe_id: reserved.clone(),
                ..spec()
            },
            &td("example.org"),
        )
        .unwrap_err();
        assert_eq!(err, EntryError::ReservedSpiffeId(reserved.clone()));
        assert!(err.to_string().starts_with("spiffe_id: "), "{err}");
        assert!(err.to_string().contains("reserved"), "{err}");
    }
    // lanyard's own IDs remain valid parents: the server (node aliases) and agents.
    for parent in [
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard/agent/join_token/abc",
    ] {
        assert!(
            RegistrationEntry::new_in(
                EntrySpec {
                    parent_id: id(parent),
                    ..spec()
                },
                &td("example.org"),
            )
            .is_ok(),
            "{parent}"
        );
    }
    // Plain `new` builds rows read back from a datastore, which an older version may have
    // written: it accepts them, and the server refuses to serve them instead.
    assert!(
        RegistrationEntry::new(EntrySpec {
            spiffe_id: id("spiffe://example.org/lanyard/server"),
            ..spec()
        })
        .is_ok()
    );
}
