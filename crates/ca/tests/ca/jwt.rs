//! JWT-SVIDs: format (SPIFFE.md §3), acceptance by the `spiffe` crate and lanyard-core.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard_ca::{AuthorityKind, AuthorityState, Ca, CaConfig, CaError, JwtSvidRequest, KeyType};
use lanyard_core::{ManualClock, verify_jwt_svid};
use serde_json::{Value, json};

use crate::support::*;

fn decode_part(part: &str) -> serde_json::Map<String, Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn spiffe_bundles(ca: &Ca) -> spiffe::JwtBundleSet {
    let jwks = ca.bundle().jwks_json();
    let bundle = spiffe::JwtBundle::from_jwt_authorities(
        spiffe::TrustDomain::new(TD).unwrap(),
        jwks.as_bytes(),
    )
    .unwrap();
    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(bundle);
    set
}

#[test]
fn token_has_exactly_the_spiffe_header_and_claims() {
    let clock = clock();
    let ca = new_ca(&clock);
    let mut req = JwtSvidRequest::new(id("/agent"), ["tool-a"]);
    req.jti = Some("txn-1".into());
    req.extra_claims.insert("txn".into(), json!("task-42"));
    let svid = ca.mint_jwt_svid(&req).unwrap();

    let parts: Vec<&str> = svid.token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS (JWT-1)");
    let header = decode_part(parts[0]);
    let mut keys: Vec<&str> = header.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["alg", "kid", "typ"], "JWT-2");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], svid.key_id.as_str());
    assert_eq!(svid.key_id.len(), 32);

    let claims = decode_part(parts[1]);
    let now = unix(t0());
    assert_eq!(claims["sub"], "spiffe://example.org/agent");
    assert_eq!(claims["aud"], json!(["tool-a"]), "aud is always an array");
    assert_eq!(claims["iat"], json!(now));
    assert_eq!(
        claims["exp"],
        json!(now + 300),
        "default JWT-SVID TTL is 5 minutes"
    );
    assert_eq!(claims["jti"], "txn-1");
    assert_eq!(claims["txn"], "task-42");
    assert_eq!(claims.len(), 6);
    // ES256 signatures are 64 raw bytes (r‖s), not DER.
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);

    // The kid is the key's published kid.
    assert!(ca.bundle().jwt_authority(&svid.key_id).is_some());
    assert_eq!(unix(svid.expires_at), now + 300);
    assert_eq!(unix(svid.issued_at), now);
}

#[test]
fn lanyard_core_verifies_the_token_with_the_bundle() {
    let clock = clock();
    let ca = new_ca(&clock);
    let svid = ca
        .mint_jwt_svid(&JwtSvidRequest::new(id("/agent"), ["tool-a", "tool-b"]))
        .unwrap();
    let set = bundle_set(ca.bundle());
    let verified = verify_jwt_svid(&svid.token, "tool-b", &set, t0()).unwrap();
    assert_eq!(verified.spiffe_id(), &id("/agent"));
    assert_eq!(verified.key_id(), svid.key_id);
    assert!(verify_jwt_svid(&svid.token, "tool-c", &set, t0()).is_err());
    // lanyard-core allows 30 s of clock skew after `exp`.
    assert!(verify_jwt_svid(&svid.token, "tool-a", &set, t0() + Duration::from_secs(331)).is_err());
}

#[test]
fn spiffe_crate_validates_tokens_with_the_published_bundle() {
    // The spiffe crate checks `exp` against the real clock, so mint at the real time.
    for key_type in [KeyType::EcP256, KeyType::EcP384] {
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let mut config = CaConfig::new(td());
        config.key_type = key_type;
        let ca = Ca::new(config, memory_keys(), shared(&clock)).unwrap();
        let svid = ca
            .mint_jwt_svid(&JwtSvidRequest::new(id("/agent"), ["tool-a"]))
            .unwrap();
        let header = decode_part(svid.token.split('.').next().unwrap());
        assert_eq!(header["alg"], key_type.jws_alg());

        let bundles = spiffe_bundles(&ca);
        let parsed =
            spiffe::JwtSvid::parse_and_validate(&svid.token, &bundles, &["tool-a"]).unwrap();
        assert_eq!(parsed.spiffe_id().to_string(), "spiffe://example.org/agent");
        assert_eq!(parsed.audience(), ["tool-a".to_owned()]);
        assert_eq!(parsed.key_id(), svid.key_id);
        // Negative controls: wrong audience, and another CA's bundle.
        assert!(spiffe::JwtSvid::parse_and_validate(&svid.token, &bundles, &["tool-x"]).is_err());
        let other = Ca::new(CaConfig::new(td()), memory_keys(), shared(&clock)).unwrap();
        assert!(
            spiffe::JwtSvid::parse_and_validate(&svid.token, &spiffe_bundles(&other), &["tool-a"])
                .is_err()
        );
    }
}

#[test]
fn bad_requests_are_refused() {
    let clock = clock();
    let ca = new_ca(&clock);
    let empty: [&str; 0] = [];
    assert!(matches!(
        ca.mint_jwt_svid(&JwtSvidRequest::new(id("/a"), empty)),
        Err(CaError::EmptyAudience)
    ));
    assert!(matches!(
        ca.mint_jwt_svid(&JwtSvidRequest::new(id("/a"), [""])),
        Err(CaError::EmptyAudience)
    ));
    for reserved in ["sub", "aud", "exp", "iat", "jti"] {
        let mut req = JwtSvidRequest::new(id("/a"), ["x"]);
        req.extra_claims.insert(reserved.into(), json!("override"));
        let err = ca.mint_jwt_svid(&req).unwrap_err();
        assert!(
            matches!(&err, CaError::ReservedClaim(c) if c == reserved),
            "{err}"
        );
    }
    let req = JwtSvidRequest::new(id("/a"), ["x"]).with_ttl(Duration::ZERO);
    assert!(matches!(ca.mint_jwt_svid(&req), Err(CaError::ZeroTtl)));
    let req = JwtSvidRequest::new(td().id(), ["x"]);
    assert!(matches!(
        ca.mint_jwt_svid(&req),
        Err(CaError::RootIdNotAllowed(_))
    ));
    let foreign = lanyard_core::SpiffeId::parse("spiffe://other.org/a").unwrap();
    assert!(matches!(
        ca.mint_jwt_svid(&JwtSvidRequest::new(foreign, ["x"])),
        Err(CaError::ForeignTrustDomain { .. })
    ));
}

#[test]
fn exp_is_capped_at_the_keys_expiry() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key_not_after = ca
        .authorities()
        .into_iter()
        .find(|a| a.kind == AuthorityKind::Jwt && a.state == AuthorityState::Active)
        .unwrap()
        .not_after;
    let req = JwtSvidRequest::new(id("/a"), ["x"]).with_ttl(Duration::from_secs(30 * 86400));
    let svid = ca.mint_jwt_svid(&req).unwrap();
    assert_eq!(svid.expires_at, key_not_after);
}

#[test]
fn signed_until_is_the_latest_expiry_of_anything_signed() {
    let clock = clock();
    let ca = new_ca(&clock);
    assert_eq!(ca.signed_until(), None, "nothing signed yet");

    let long = ca
        .mint_jwt_svid(&JwtSvidRequest::new(id("/a"), ["x"]).with_ttl(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(ca.signed_until(), Some(long.expires_at));

    // A shorter credential signed later does not move it back.
    let short = ca
        .mint_x509_svid_from_csr(
            &WorkloadKey::p256().csr(),
            &request("/w").with_ttl(Duration::from_secs(60)),
        )
        .unwrap();
    assert!(short.not_after < long.expires_at);
    assert_eq!(ca.signed_until(), Some(long.expires_at));

    // Access tokens count too.
    clock.advance(Duration::from_secs(10));
    let token = ca
        .mint_access_token(&lanyard_ca::AccessTokenRequest {
            subject: "spiffe://example.org/a".to_owned(),
            audience: "https://tool.example".to_owned(),
            ttl: Duration::from_secs(3600),
            jti: "t-1".to_owned(),
            extra_claims: serde_json::Map::new(),
        })
        .unwrap();
    assert!(token.expires_at > long.expires_at);
    assert_eq!(ca.signed_until(), Some(token.expires_at));
}

#[test]
fn the_servers_own_svid_does_not_count_in_signed_until() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let own = ca
        .mint_own_x509_svid(
            &key.spki(),
            &request("/lanyard/server").with_ttl(Duration::from_secs(3600)),
        )
        .unwrap();
    assert!(own.not_after > t0());
    assert_eq!(ca.signed_until(), None);
}
