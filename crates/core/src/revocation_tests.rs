#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn list(entries: &[(&str, u64)]) -> RevocationList {
    entries
        .iter()
        .map(|(jti, expires_at)| ((*jti).to_owned(), at(*expires_at)))
        .collect()
}

#[test]
fn a_listed_jti_is_refused_and_others_pass() {
    let revoked = list(&[("a", 100), ("b", 200)]);
    assert_eq!(
        revoked.check_jti(Some("a")),
        Err(Revoked { jti: "a".into() })
    );
    assert_eq!(revoked.check_jti(Some("b")).unwrap_err().jti(), "b");
    assert_eq!(revoked.check_jti(Some("c")), Ok(()));
    assert_eq!(
        revoked.check_jti(Some("A")),
        Ok(()),
        "jti is case-sensitive"
    );
    assert_eq!(revoked.check_jti(Some("")), Ok(()));
    // A token without a jti cannot be named, so it cannot be revoked.
    assert_eq!(revoked.check_jti(None), Ok(()));
    assert_eq!(
        Revoked { jti: "a".into() }.to_string(),
        "token \"a\" has been revoked"
    );
}

#[test]
fn an_empty_list_refuses_nothing() {
    let empty = RevocationList::new();
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.check_jti(Some("a")), Ok(()));
    assert_eq!(empty.check_jti(Some("")), Ok(()));
    assert_eq!(empty, RevocationList::default());
}

#[test]
fn an_empty_jti_is_never_listed() {
    let revoked = list(&[("", 100), ("a", 100)]);
    assert_eq!(revoked.len(), 1);
    assert!(!revoked.contains(""));
    assert_eq!(revoked.check_jti(Some("")), Ok(()));
    let only_empty = RevocationList::from_unix_seconds([(String::new(), 100)]);
    assert!(only_empty.is_empty());
}

#[test]
fn a_jti_listed_twice_keeps_the_later_expiry_whatever_the_order() {
    let later_last = list(&[("a", 100), ("a", 300), ("a", 200)]);
    let later_first = list(&[("a", 300), ("a", 100), ("a", 200)]);
    assert_eq!(later_last.len(), 1);
    assert_eq!(later_last.expiry("a"), Some(at(300)));
    assert_eq!(later_last, later_first);
}

#[test]
fn prune_drops_only_what_verification_refuses_anyway() {
    let mut revoked = list(&[("old", 100), ("edge", 200), ("live", 1_000)]);
    let leeway = JWT_LEEWAY.as_secs();
    // Within the leeway a token past its exp still verifies: its entry must stay.
    revoked.prune(at(200 + leeway - 1));
    assert!(!revoked.contains("old"));
    assert!(revoked.contains("edge"));
    assert!(revoked.contains("live"));
    // At exp + leeway verification refuses it (jwt.rs: `at >= exp + leeway`): the entry may go.
    revoked.prune(at(200 + leeway));
    assert_eq!(
        revoked.iter().map(|(jti, _)| jti).collect::<Vec<_>>(),
        ["live"]
    );
    // Pruning at an earlier time brings nothing back and drops nothing more.
    revoked.prune(at(0));
    assert_eq!(revoked.len(), 1);
}

#[test]
fn check_ignores_time_so_a_listed_token_is_refused_until_pruned() {
    // A list built long after its entries expired still refuses them: only prune forgets.
    let revoked = list(&[("a", 1)]);
    assert!(revoked.check_jti(Some("a")).is_err());
}

#[test]
fn unix_seconds_read_any_i64() {
    let revoked = RevocationList::from_unix_seconds([
        ("now".to_owned(), 1_735_689_600),
        ("epoch".to_owned(), 0),
        ("before-1970".to_owned(), -5),
        ("min".to_owned(), i64::MIN),
        ("max".to_owned(), i64::MAX),
    ]);
    assert_eq!(revoked.expiry("now"), Some(at(1_735_689_600)));
    assert_eq!(revoked.expiry("epoch"), Some(UNIX_EPOCH));
    assert_eq!(
        revoked.expiry("before-1970"),
        Some(UNIX_EPOCH - Duration::from_secs(5))
    );
    // On Unix every i64 of seconds is a time; the extremes are kept, not wrapped.
    assert!(revoked.expiry("min").unwrap() < UNIX_EPOCH);
    assert!(revoked.expiry("max").unwrap() > at(1_735_689_600));
    // A token that never expires is never pruned; one that expired before 1970 is.
    let mut pruned = revoked;
    pruned.prune(at(1_735_689_600));
    assert!(pruned.contains("max"));
    assert!(!pruned.contains("before-1970"));
    assert!(!pruned.contains("min"));
}

#[test]
fn prune_keeps_an_entry_whose_end_overflows() {
    let mut revoked = RevocationList::from_unix_seconds([("forever".to_owned(), i64::MAX)]);
    revoked.prune(revoked.expiry("forever").unwrap());
    assert!(revoked.contains("forever"));
}

#[test]
fn iteration_is_ordered_by_jti_whatever_the_input_order() {
    let revoked = list(&[("c", 3), ("a", 1), ("b", 2)]);
    let seen: Vec<(&str, SystemTime)> = revoked.iter().collect();
    assert_eq!(seen, [("a", at(1)), ("b", at(2)), ("c", at(3))]);
    assert_eq!(revoked.iter().len(), 3);
}

#[test]
fn hostile_jtis_are_plain_keys() {
    let long = "x".repeat(1 << 20);
    let odd = ["\0", "a\nb", "é", "\u{202e}txt", " ", "*", "%"];
    let mut revoked = RevocationList::new();
    revoked.insert(long.clone(), at(10));
    for jti in odd {
        revoked.insert(jti.to_owned(), at(10));
    }
    assert_eq!(revoked.len(), odd.len() + 1);
    assert!(revoked.check_jti(Some(&long)).is_err());
    assert_eq!(revoked.check_jti(Some(&long[1..])), Ok(()));
    for jti in odd {
        assert!(revoked.check_jti(Some(jti)).is_err(), "{jti:?}");
    }
    // No prefix or pattern matching.
    assert_eq!(revoked.check_jti(Some("a")), Ok(()));
    assert_eq!(revoked.check_jti(Some("\0\0")), Ok(()));
}

#[test]
fn a_huge_list_is_built_checked_and_pruned() {
    const N: u64 = 200_000;
    let revoked: RevocationList = (0..N)
        .map(|i| (format!("{i:032x}"), at(i % 1_000)))
        .chain((0..N).map(|i| (format!("{i:032x}"), at(500))))
        .collect();
    assert_eq!(revoked.len(), usize::try_from(N).unwrap());
    assert!(revoked.check_jti(Some(&format!("{:032x}", N - 1))).is_err());
    assert_eq!(revoked.check_jti(Some(&format!("{N:032x}"))), Ok(()));
    // Each kept the later of its two expiries.
    assert_eq!(revoked.expiry(&format!("{:032x}", 999)), Some(at(999)));
    assert_eq!(revoked.expiry(&format!("{:032x}", 1)), Some(at(500)));
    let mut pruned = revoked;
    pruned.prune(at(600 + JWT_LEEWAY.as_secs()));
    // Left: those whose expiry (at least 500) is beyond 600: i % 1000 in 601..=999.
    assert_eq!(pruned.len(), usize::try_from(N / 1_000 * 399).unwrap());
    pruned.prune(at(10_000));
    assert!(pruned.is_empty());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any pairs, any time: no panic, and what the list holds obeys its rules.
    #[test]
    fn any_input_builds_checks_and_prunes_without_panic(
        entries in proptest::collection::vec(("\\PC{0,8}", proptest::num::i64::ANY), 0..64),
        probe in "\\PC{0,8}",
        now in proptest::num::i64::ANY,
    ) {
        let mut revoked = RevocationList::from_unix_seconds(entries.clone());
        for (jti, _) in &entries {
            proptest::prop_assert_eq!(revoked.contains(jti), !jti.is_empty());
        }
        let _ = revoked.check_jti(Some(&probe));
        if let Some(now) = unix_time(now) {
            revoked.prune(now);
            for (_, expires_at) in revoked.iter() {
                proptest::prop_assert!(expires_at.checked_add(JWT_LEEWAY).is_none_or(|end| now < end));
            }
        }
    }
}
