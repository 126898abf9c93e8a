//! A service validating JWT-SVIDs locally, through the public API: `verify_jwt_svid` first, then
//! `RevocationList::check` on what it verified.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod bundle_fixtures;

use std::time::Duration;

use bundle_fixtures::{JwtKey, KeyKind, T0_UNIX, claims, jwt_bundle, t0, token};
use lanyard_core::jwt::JWT_LEEWAY;
use lanyard_core::{BundleSet, JwtSvidError, RevocationList, VerifiedJwtSvid, verify_jwt_svid};
use serde_json::json;

const SUB: &str = "spiffe://example.org/agents/summarizer";
const AUD: &str = "tickets";

fn example_org() -> (JwtKey, BundleSet) {
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let bundles = std::iter::once(jwt_bundle("example.org", &[&key])).collect();
    (key, bundles)
}

/// A verified token carrying `jti` (a JSON value: any type), expiring 5 minutes after t0.
fn verified(key: &JwtKey, bundles: &BundleSet, jti: Option<serde_json::Value>) -> VerifiedJwtSvid {
    let mut c = claims(SUB, AUD);
    if let Some(jti) = jti {
        c["jti"] = jti;
    }
    verify_jwt_svid(&token(key, &c), AUD, bundles, t0()).unwrap()
}

fn exp() -> i64 {
    i64::try_from(T0_UNIX + 300).unwrap()
}

#[test]
fn a_revoked_task_token_is_refused_after_verification_and_others_pass() {
    let (key, bundles) = example_org();
    let revoked = RevocationList::from_unix_seconds([("ended".to_owned(), exp())]);
    let ended = verified(&key, &bundles, Some(json!("ended")));
    let refused = revoked.check(&ended).unwrap_err();
    assert_eq!(refused.jti(), "ended");
    let live = verified(&key, &bundles, Some(json!("live")));
    assert_eq!(revoked.check(&live), Ok(()));
    assert_eq!(RevocationList::new().check(&ended), Ok(()));
}

#[test]
fn a_token_without_a_string_jti_is_not_revocable() {
    let (key, bundles) = example_org();
    let revoked = RevocationList::from_unix_seconds([
        ("1".to_owned(), exp()),
        ("".to_owned(), exp()),
        ("null".to_owned(), exp()),
    ]);
    for jti in [
        None,
        Some(json!(1)),
        Some(json!(null)),
        Some(json!(["1"])),
        Some(json!("")),
    ] {
        let token = verified(&key, &bundles, jti.clone());
        assert_eq!(revoked.check(&token), Ok(()), "{jti:?}");
    }
}

#[test]
fn the_list_outlives_the_token_by_the_leeway_so_a_revoked_token_never_slips_through() {
    let (key, bundles) = example_org();
    let c = {
        let mut c = claims(SUB, AUD);
        c["jti"] = json!("ended");
        c
    };
    let raw = token(&key, &c);
    let mut revoked = RevocationList::from_unix_seconds([("ended".to_owned(), exp())]);
    let expiry = t0() + Duration::from_secs(300);
    // Every second at which the token still verifies, the pruned list still refuses it.
    let mut at = expiry - Duration::from_secs(2);
    loop {
        revoked.prune(at);
        match verify_jwt_svid(&raw, AUD, &bundles, at) {
            Ok(token) => assert!(revoked.check(&token).is_err(), "accepted at {at:?}"),
            Err(JwtSvidError::Expired { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        at += Duration::from_secs(1);
    }
    assert!(at >= expiry + JWT_LEEWAY);
    // Once verification refuses it by its expiry, the entry is no longer needed.
    assert!(revoked.is_empty());
}
