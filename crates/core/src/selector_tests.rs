#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

fn sel(s: &str) -> Selector {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} should be a selector: {e}"))
}

fn set(selectors: &[&str]) -> SelectorSet {
    selectors.iter().copied().map(sel).collect()
}

// === Selector ===

#[test]
fn value_may_contain_colons() {
    let s = sel("unix:uid:1000");
    assert_eq!(s.kind(), "unix");
    assert_eq!(s.value(), "uid:1000");
    let s = sel("k8s:pod-label:app:web");
    assert_eq!(s.kind(), "k8s");
    assert_eq!(s.value(), "pod-label:app:web");
    assert_eq!(sel("x:::").value(), "::");
}

#[test]
fn new_takes_the_two_parts() {
    let s = Selector::new("systemd", "unit:web.service").unwrap();
    assert_eq!(s, sel("systemd:unit:web.service"));
    assert_eq!(s.to_string(), "systemd:unit:web.service");
    // A colon in the type would make the string form ambiguous.
    assert_eq!(
        Selector::new("a:b", "c"),
        Err(SelectorError::TypeChar { found: ':' })
    );
}

#[test]
fn missing_or_empty_parts() {
    for (s, want) in [
        ("", SelectorError::MissingColon),
        ("unix", SelectorError::MissingColon),
        (":", SelectorError::EmptyType),
        (":uid:1000", SelectorError::EmptyType),
        ("unix:", SelectorError::EmptyValue),
    ] {
        assert_eq!(s.parse::<Selector>(), Err(want), "{s:?}");
    }
}

#[test]
fn type_characters() {
    assert_eq!(sel("k8s_psat-2:x").kind(), "k8s_psat-2");
    for (s, found) in [
        ("Unix:uid:0", 'U'),
        ("un ix:uid:0", ' '),
        ("unix.v2:x", '.'),
        ("ünix:x", 'ü'),
        ("unix\n:x", '\n'),
        ("unix/x:y", '/'),
    ] {
        assert_eq!(
            s.parse::<Selector>(),
            Err(SelectorError::TypeChar { found }),
            "{s:?}"
        );
    }
}

#[test]
fn value_control_characters_refused() {
    for s in [
        "unix:a\nb",
        "unix:\0",
        "unix:tab\there",
        "unix:del\u{7f}",
        "unix:c1\u{85}",
        "unix:esc\u{1b}[0m",
    ] {
        assert_eq!(
            s.parse::<Selector>(),
            Err(SelectorError::ValueControlChar),
            "{s:?}"
        );
    }
    // Spaces, punctuation and non-ASCII text are ordinary values.
    for s in [
        "docker:label:com.example.name=my app",
        "unix:path:/usr/bin/名前",
        "x: leading space",
    ] {
        assert_eq!(sel(s).to_string(), s);
    }
}

#[test]
fn length_limits() {
    let kind64 = "t".repeat(MAX_SELECTOR_TYPE_LEN);
    let kind65 = "t".repeat(MAX_SELECTOR_TYPE_LEN + 1);
    let value1024 = "v".repeat(MAX_SELECTOR_VALUE_LEN);
    let value1025 = "v".repeat(MAX_SELECTOR_VALUE_LEN + 1);
    assert!(Selector::new(&kind64, &value1024).is_ok());
    assert_eq!(
        Selector::new(&kind65, "v"),
        Err(SelectorError::TypeTooLong { len: 65 })
    );
    assert_eq!(
        Selector::new("t", &value1025),
        Err(SelectorError::ValueTooLong { len: 1025 })
    );
    assert_eq!(
        format!("t:{value1025}").parse::<Selector>(),
        Err(SelectorError::ValueTooLong { len: 1025 })
    );
    // The value limit is in bytes, not characters.
    let wide = "é".repeat(MAX_SELECTOR_VALUE_LEN / 2 + 1);
    assert_eq!(
        Selector::new("t", &wide),
        Err(SelectorError::ValueTooLong { len: 1026 })
    );
}

#[test]
fn display_from_str_round_trip_and_debug() {
    for s in ["unix:uid:1000", "a:b", "k8s:ns:default", "x:a:b:c:"] {
        let parsed = sel(s);
        assert_eq!(parsed.to_string(), s);
        assert_eq!(parsed.to_string().parse::<Selector>().unwrap(), parsed);
    }
    assert_eq!(format!("{:?}", sel("unix:uid:0")), "Selector(unix:uid:0)");
}

#[test]
fn serde_round_trip() {
    let s = sel("unix:uid:1000");
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, r#""unix:uid:1000""#);
    assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), s);
    for bad in [r#""unix""#, r#""Unix:x""#, r#""unix:""#, "1", "null"] {
        assert!(serde_json::from_str::<Selector>(bad).is_err(), "{bad}");
    }
}

// === SelectorSet ===

#[test]
fn subset_semantics() {
    let entry = set(&["unix:uid:1000", "unix:gid:1000"]);
    let caller = set(&["unix:uid:1000", "unix:gid:1000", "unix:path:/bin/web"]);
    assert!(entry.is_subset(&caller));
    assert!(!caller.is_subset(&entry));
    assert!(entry.is_subset(&entry));

    let other_uid = set(&["unix:uid:1001", "unix:gid:1000", "unix:path:/bin/web"]);
    assert!(!entry.is_subset(&other_uid));
    // Type and value both count: the same value under another type is another selector.
    assert!(!set(&["unix:uid:1000"]).is_subset(&set(&["docker:uid:1000"])));
}

/// The empty set is a subset of every set, which is why an entry must have at least one selector
/// (see `EntryError::NoSelectors`): otherwise it would match every caller.
#[test]
fn empty_set_is_a_subset_of_everything() {
    let empty = SelectorSet::new();
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert!(empty.is_subset(&empty));
    assert!(empty.is_subset(&set(&["unix:uid:0"])));
    assert!(!set(&["unix:uid:0"]).is_subset(&empty));
    assert!(!empty.intersects(&set(&["unix:uid:0"])));
    assert_eq!(empty, SelectorSet::default());
}

#[test]
fn intersects_contains_insert() {
    let mut s = set(&["unix:uid:0"]);
    assert!(s.insert(sel("unix:gid:0")));
    assert!(!s.insert(sel("unix:gid:0")), "a duplicate is not added");
    assert_eq!(s.len(), 2);
    assert!(s.contains(&sel("unix:gid:0")));
    assert!(!s.contains(&sel("unix:gid:1")));
    assert!(s.intersects(&set(&["unix:gid:0", "x:y"])));
    assert!(!s.intersects(&set(&["x:y"])));
}

#[test]
fn iteration_is_ordered_and_deduplicated() {
    let s = set(&["unix:uid:1", "docker:id:x", "unix:gid:1", "unix:uid:1"]);
    let by_ref: Vec<String> = (&s).into_iter().map(ToString::to_string).collect();
    assert_eq!(by_ref, ["docker:id:x", "unix:gid:1", "unix:uid:1"]);
    assert_eq!(s.iter().count(), 3);
    let owned: Vec<Selector> = s.clone().into_iter().collect();
    assert_eq!(owned.len(), 3);
    assert_eq!(
        format!("{s:?}"),
        r#"{"docker:id:x", "unix:gid:1", "unix:uid:1"}"#
    );
}

#[test]
fn set_serde_round_trip() {
    let s = set(&["unix:uid:1000", "docker:id:abc"]);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, r#"["docker:id:abc","unix:uid:1000"]"#);
    assert_eq!(serde_json::from_str::<SelectorSet>(&json).unwrap(), s);
    // Duplicates on input collapse; one bad selector fails the whole set.
    let dup = serde_json::from_str::<SelectorSet>(r#"["a:b","a:b"]"#).unwrap();
    assert_eq!(dup.len(), 1);
    assert!(serde_json::from_str::<SelectorSet>(r#"["a:b","bad"]"#).is_err());
    assert_eq!(
        serde_json::from_str::<SelectorSet>("[]").unwrap(),
        SelectorSet::new()
    );
}
