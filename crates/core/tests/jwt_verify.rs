//! JWT-SVID verification (SPIFFE.md §3) through the public API, with tokens made by jsonwebtoken
//! and, for headers and algorithms it will not produce, by hand (signed with aws-lc-rs).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod bundle_fixtures;

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bundle_fixtures::{
    Ca, JwtKey, KeyKind, T0_UNIX, claims, hand_token, hand_token_raw, jsonwebtoken_token,
    jwt_bundle, t0, td, token,
};
use jsonwebtoken::Algorithm;
use lanyard_core::jwt::{JWT_LEEWAY, MAX_TOKEN_LEN};
use lanyard_core::{
    Bundle, BundleSet, IdError, JwtAlgorithm, JwtSvidError, SpiffeId, VerifiedJwtSvid,
    verify_jwt_svid,
};
use serde_json::{Value, json};

const SUB: &str = "spiffe://example.org/workload";
const AUD: &str = "spiffe://example.org/api";

fn set_of(bundles: impl IntoIterator<Item = Bundle>) -> BundleSet {
    bundles.into_iter().collect()
}

/// A P-256 key "k1" of example.org and a set holding only its bundle.
fn example_org() -> (JwtKey, BundleSet) {
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let bundles = set_of([jwt_bundle("example.org", &[&key])]);
    (key, bundles)
}

fn verify(token: &str, bundles: &BundleSet) -> Result<VerifiedJwtSvid, JwtSvidError> {
    verify_jwt_svid(token, AUD, bundles, t0())
}

/// A token with this header (signed with `key` for `alg`) and good claims.
fn with_header(key: &JwtKey, alg: &str, header: Value) -> String {
    hand_token(key, alg, &header, &claims(SUB, AUD))
}

/// A token signed by `key` with these claims and a standard header.
fn with_claims(key: &JwtKey, claims: Value) -> String {
    token(key, &claims)
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

// === accepted ===

#[test]
fn good_token_exposes_its_claims() {
    let (key, bundles) = example_org();
    let mut c = claims(SUB, AUD);
    c["jti"] = json!("abc");
    let svid = verify(&token(&key, &c), &bundles).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), SUB);
    assert_eq!(svid.audience(), [AUD.to_owned()]);
    assert_eq!(
        svid.expiry(),
        UNIX_EPOCH + Duration::from_secs(T0_UNIX + 300)
    );
    assert_eq!(svid.key_id(), "k1");
    assert_eq!(svid.algorithm(), JwtAlgorithm::Es256);
    assert_eq!(svid.claims().get("jti"), Some(&json!("abc")));
    assert_eq!(svid.claims().get("iat"), Some(&json!(T0_UNIX - 10)));
    assert_eq!(svid.claims().get("sub"), Some(&json!(SUB)));
}

#[test]
fn every_allowed_algorithm_verifies_with_a_key_of_its_kind() {
    let cases = [
        (KeyKind::P256, "ES256", JwtAlgorithm::Es256),
        (KeyKind::P384, "ES384", JwtAlgorithm::Es384),
        (KeyKind::P521, "ES512", JwtAlgorithm::Es512),
        (KeyKind::Rsa2048, "RS256", JwtAlgorithm::Rs256),
        (KeyKind::Rsa2048, "RS384", JwtAlgorithm::Rs384),
        (KeyKind::Rsa2048, "RS512", JwtAlgorithm::Rs512),
        (KeyKind::Rsa2048, "PS256", JwtAlgorithm::Ps256),
        (KeyKind::Rsa2048, "PS384", JwtAlgorithm::Ps384),
        (KeyKind::Rsa2048, "PS512", JwtAlgorithm::Ps512),
    ];
    for (kind, alg, expected) in cases {
        let key = JwtKey::generate(kind, "k");
        let bundles = set_of([jwt_bundle("example.org", &[&key])]);
        let t = with_header(&key, alg, json!({"alg": alg, "kid": "k", "typ": "JWT"}));
        let svid = verify(&t, &bundles).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(svid.algorithm(), expected);
    }
}

#[test]
fn tokens_made_by_jsonwebtoken_verify() {
    let cases = [
        (KeyKind::P256, Algorithm::ES256),
        (KeyKind::P384, Algorithm::ES384),
        (KeyKind::Rsa2048, Algorithm::RS256),
        (KeyKind::Rsa2048, Algorithm::RS512),
        (KeyKind::Rsa2048, Algorithm::PS256),
        (KeyKind::Rsa2048, Algorithm::PS384),
    ];
    for (kind, alg) in cases {
        let key = JwtKey::generate(kind, "jwt-key");
        let bundles = set_of([jwt_bundle("example.org", &[&key])]);
        let t = jsonwebtoken_token(&key, alg, &claims(SUB, AUD));
        assert!(verify(&t, &bundles).is_ok(), "{alg:?}");
    }
}

#[test]
fn typ_may_be_absent_or_jose() {
    let (key, bundles) = example_org();
    for header in [
        json!({"alg": "ES256", "kid": "k1"}),
        json!({"alg": "ES256", "kid": "k1", "typ": "JOSE"}),
    ] {
        assert!(
            verify(&with_header(&key, "ES256", header.clone()), &bundles).is_ok(),
            "{header}"
        );
    }
}

#[test]
fn token_without_kid_is_tried_against_every_fitting_key_of_the_trust_domain() {
    let first = JwtKey::generate(KeyKind::P256, "first");
    let rsa = JwtKey::generate(KeyKind::Rsa2048, "rsa");
    let second = JwtKey::generate(KeyKind::P256, "second");
    let bundles = set_of([jwt_bundle("example.org", &[&first, &rsa, &second])]);
    let t = with_header(&second, "ES256", json!({"alg": "ES256", "typ": "JWT"}));
    assert_eq!(verify(&t, &bundles).unwrap().key_id(), "second");

    let stranger = JwtKey::generate(KeyKind::P256, "stranger");
    let t = with_header(&stranger, "ES256", json!({"alg": "ES256"}));
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::BadSignature
    );
}

#[test]
fn aud_may_be_a_string_or_an_array() {
    let (key, bundles) = example_org();
    let mut c = claims(SUB, AUD);
    c["aud"] = json!(AUD);
    assert_eq!(
        verify(&with_claims(&key, c), &bundles).unwrap().audience(),
        [AUD.to_owned()]
    );
    let mut c = claims(SUB, AUD);
    c["aud"] = json!(["other", AUD]);
    assert_eq!(
        verify(&with_claims(&key, c), &bundles).unwrap().audience(),
        ["other".to_owned(), AUD.to_owned()]
    );
}

#[test]
fn exp_allows_the_documented_leeway() {
    let (key, bundles) = example_org();
    let t = token(&key, &claims(SUB, AUD));
    let exp = UNIX_EPOCH + Duration::from_secs(T0_UNIX + 300);
    assert!(verify_jwt_svid(&t, AUD, &bundles, exp).is_ok());
    let last_moment = exp + JWT_LEEWAY - Duration::from_millis(1);
    assert!(verify_jwt_svid(&t, AUD, &bundles, last_moment).is_ok());
    assert_eq!(
        verify_jwt_svid(&t, AUD, &bundles, exp + JWT_LEEWAY).unwrap_err(),
        JwtSvidError::Expired { exp }
    );
}

#[test]
fn fractional_exp_is_accepted() {
    let (key, bundles) = example_org();
    let mut c = claims(SUB, AUD);
    c["exp"] = json!(T0_UNIX as f64 + 300.5);
    let svid = verify(&with_claims(&key, c), &bundles).unwrap();
    assert_eq!(
        svid.expiry(),
        UNIX_EPOCH + Duration::from_millis(T0_UNIX * 1000 + 300_500)
    );
}

#[test]
fn nbf_is_optional_and_allows_the_leeway() {
    let (key, bundles) = example_org();
    let mut c = claims(SUB, AUD);
    c["nbf"] = json!(T0_UNIX + 20);
    assert!(verify(&with_claims(&key, c), &bundles).is_ok());
}

// === token form (JWT-1) ===

#[test]
fn empty_expected_audience_is_refused() {
    let (key, bundles) = example_org();
    assert_eq!(
        verify_jwt_svid(&token(&key, &claims(SUB, AUD)), "", &bundles, t0()).unwrap_err(),
        JwtSvidError::NoExpectedAudience
    );
}

#[test]
fn oversized_token_is_refused() {
    let (key, bundles) = example_org();
    let mut c = claims(SUB, AUD);
    c["pad"] = json!("x".repeat(MAX_TOKEN_LEN));
    let t = with_claims(&key, c);
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::TooLarge { len: t.len() }
    );
}

#[test]
fn json_serialization_is_refused() {
    let (key, bundles) = example_org();
    let compact = token(&key, &claims(SUB, AUD));
    let parts: Vec<&str> = compact.split('.').collect();
    let json_form = json!({
        "payload": parts[1],
        "protected": parts[0],
        "signature": parts[2],
    })
    .to_string();
    assert_eq!(
        verify(&json_form, &bundles).unwrap_err(),
        JwtSvidError::JsonSerialization
    );
}

#[test]
fn jwe_is_refused() {
    let (_, bundles) = example_org();
    let jwe = format!("{}.a.b.c.d", b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#));
    assert_eq!(verify(&jwe, &bundles).unwrap_err(), JwtSvidError::Encrypted);
}

#[test]
fn wrong_part_counts_are_refused() {
    let (key, bundles) = example_org();
    let t = token(&key, &claims(SUB, AUD));
    let two = t.rsplit_once('.').unwrap().0.to_owned();
    for (bad, parts) in [
        (String::new(), 1),
        ("abc".to_owned(), 1),
        (two, 2),
        (format!("{t}.x"), 4),
    ] {
        assert_eq!(
            verify(&bad, &bundles).unwrap_err(),
            JwtSvidError::WrongPartCount { parts },
            "{bad}"
        );
    }
}

// === header (JWT-2, JWT-3, JWT-5) ===

#[test]
fn malformed_headers_are_refused() {
    let (key, bundles) = example_org();
    let rest = |header_b64: &str| {
        let t = token(&key, &claims(SUB, AUD));
        let (_, tail) = t.split_once('.').unwrap();
        format!("{header_b64}.{tail}")
    };
    assert_eq!(
        verify(&rest("eyJhbGciOiJFUzI1NiJ9="), &bundles).unwrap_err(),
        JwtSvidError::HeaderEncoding
    );
    assert_eq!(
        verify(&rest("e+J"), &bundles).unwrap_err(),
        JwtSvidError::HeaderEncoding
    );
    assert!(matches!(
        verify(&rest(&b64("not json")), &bundles).unwrap_err(),
        JwtSvidError::HeaderJson { .. }
    ));
    assert_eq!(
        verify(&rest(&b64(r#"["ES256"]"#)), &bundles).unwrap_err(),
        JwtSvidError::HeaderNotObject
    );
}

#[test]
fn duplicate_header_parameter_is_refused() {
    let (key, bundles) = example_org();
    let t = hand_token_raw(
        &key,
        "ES256",
        r#"{"alg":"none","kid":"k1","alg":"ES256"}"#,
        &claims(SUB, AUD).to_string(),
    );
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::DuplicateHeaderParameter {
            name: "alg".to_owned()
        }
    );
}

#[test]
fn missing_or_non_string_alg_is_refused() {
    let (key, bundles) = example_org();
    assert_eq!(
        verify(&with_header(&key, "ES256", json!({"kid": "k1"})), &bundles).unwrap_err(),
        JwtSvidError::MissingAlg
    );
    assert_eq!(
        verify(&with_header(&key, "ES256", json!({"alg": 256})), &bundles).unwrap_err(),
        JwtSvidError::AlgNotString
    );
}

#[test]
fn alg_none_is_refused() {
    let (_, bundles) = example_org();
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims(SUB, AUD).to_string())
    );
    assert_eq!(
        verify(&unsigned, &bundles).unwrap_err(),
        JwtSvidError::AlgNone
    );
}

#[test]
fn hmac_algorithms_are_refused() {
    let (_, bundles) = example_org();
    let secret = jsonwebtoken::EncodingKey::from_secret(b"a shared secret, which SPIFFE forbids");
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some("k1".to_owned());
        let t = jsonwebtoken::encode(&header, &claims(SUB, AUD), &secret).unwrap();
        assert_eq!(
            verify(&t, &bundles).unwrap_err(),
            JwtSvidError::SymmetricAlg {
                alg: format!("{alg:?}")
            }
        );
    }
}

#[test]
fn eddsa_and_unknown_algorithms_are_refused() {
    let (key, bundles) = example_org();
    assert_eq!(
        verify(
            &with_header(&key, "ES256", json!({"alg": "EdDSA"})),
            &bundles
        )
        .unwrap_err(),
        JwtSvidError::EdDsaAlg
    );
    for alg in ["ES256K", "es256", "RS1", "", "A256GCM"] {
        assert_eq!(
            verify(&with_header(&key, "ES256", json!({"alg": alg})), &bundles).unwrap_err(),
            JwtSvidError::UnsupportedAlg {
                alg: alg.to_owned()
            }
        );
    }
}

#[test]
fn alg_is_checked_before_anything_else() {
    let (_, bundles) = example_org();
    // Everything else about this token is wrong too: extra header parameter, bad typ, claims
    // that are not JSON, no signature.
    let t = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"jwt","jku":"https://evil.example"}"#),
        b64("not json")
    );
    assert_eq!(verify(&t, &bundles).unwrap_err(), JwtSvidError::AlgNone);
    let t = format!(
        "{}.{}.",
        b64(r#"{"alg":"HS256","x5u":"https://evil.example"}"#),
        b64("{}")
    );
    assert!(matches!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::SymmetricAlg { .. }
    ));
}

#[test]
fn extra_header_parameters_are_refused() {
    let (key, bundles) = example_org();
    for name in ["jku", "x5c", "jwk", "crit", "cty", "b64", "custom"] {
        let mut header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        header[name] = json!("x");
        assert_eq!(
            verify(&with_header(&key, "ES256", header), &bundles).unwrap_err(),
            JwtSvidError::UnexpectedHeaderParameter {
                name: name.to_owned()
            }
        );
    }
    // The same, from jsonwebtoken.
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("k1".to_owned());
    header.cty = Some("JWT".to_owned());
    let t = jsonwebtoken::encode(&header, &claims(SUB, AUD), &key.encoding_key()).unwrap();
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::UnexpectedHeaderParameter {
            name: "cty".to_owned()
        }
    );
}

#[test]
fn typ_other_than_jwt_or_jose_is_refused() {
    let (key, bundles) = example_org();
    for (typ, shown) in [
        (json!("jwt"), r#""jwt""#),
        (json!("jose"), r#""jose""#),
        (json!("at+jwt"), r#""at+jwt""#),
        (json!(null), "null"),
        (json!(1), "1"),
    ] {
        let header = json!({"alg": "ES256", "kid": "k1", "typ": typ});
        assert_eq!(
            verify(&with_header(&key, "ES256", header), &bundles).unwrap_err(),
            JwtSvidError::InvalidTyp {
                typ: shown.to_owned()
            }
        );
    }
}

#[test]
fn empty_or_non_string_kid_is_refused() {
    let (key, bundles) = example_org();
    for kid in [json!(""), json!(7), json!(null)] {
        let header = json!({"alg": "ES256", "kid": kid});
        assert_eq!(
            verify(&with_header(&key, "ES256", header), &bundles).unwrap_err(),
            JwtSvidError::InvalidKid
        );
    }
}

// === claims (JWT-6, JWT-7, JWT-8) ===

#[test]
fn malformed_claims_are_refused() {
    let (key, bundles) = example_org();
    let header = r#"{"alg":"ES256","kid":"k1"}"#;
    let raw = |claims_b64: &str| {
        let input = format!("{}.{claims_b64}", b64(header));
        let sig = key.sign("ES256", input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    assert_eq!(
        verify(&raw("e30="), &bundles).unwrap_err(),
        JwtSvidError::ClaimsEncoding
    );
    assert!(matches!(
        verify(&raw(&b64("{")), &bundles).unwrap_err(),
        JwtSvidError::ClaimsJson { .. }
    ));
    assert_eq!(
        verify(&raw(&b64("[1,2]")), &bundles).unwrap_err(),
        JwtSvidError::ClaimsNotObject
    );
    let duplicate = format!(
        r#"{{"sub":"spiffe://other.org/x","aud":"{AUD}","exp":{},"sub":"{SUB}"}}"#,
        T0_UNIX + 300
    );
    assert_eq!(
        verify(&hand_token_raw(&key, "ES256", header, &duplicate), &bundles).unwrap_err(),
        JwtSvidError::DuplicateClaim {
            name: "sub".to_owned()
        }
    );
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

#[test]
fn sub_must_be_a_spiffe_id() {
    let (key, bundles) = example_org();
    let good = claims(SUB, AUD);
    assert_eq!(
        verify(&with_claims(&key, without(good.clone(), "sub")), &bundles).unwrap_err(),
        JwtSvidError::MissingSub
    );
    assert_eq!(
        verify(
            &with_claims(&key, with(good.clone(), "sub", json!(["x"]))),
            &bundles
        )
        .unwrap_err(),
        JwtSvidError::SubNotString
    );
    for (sub, cause) in [
        ("https://example.org/workload", IdError::WrongScheme),
        ("SPIFFE://example.org/workload", IdError::WrongScheme),
        ("spiffe://example.org/a/", IdError::TrailingSlash),
        ("", IdError::Empty),
    ] {
        assert_eq!(
            verify(
                &with_claims(&key, with(good.clone(), "sub", json!(sub))),
                &bundles
            )
            .unwrap_err(),
            JwtSvidError::InvalidSub {
                sub: sub.to_owned(),
                source: cause
            }
        );
    }
}

#[test]
fn aud_must_be_present_well_formed_and_contain_the_audience() {
    let (key, bundles) = example_org();
    let good = claims(SUB, AUD);
    let check = |claims: Value| verify(&with_claims(&key, claims), &bundles).unwrap_err();
    assert_eq!(
        check(without(good.clone(), "aud")),
        JwtSvidError::MissingAud
    );
    assert_eq!(
        check(with(good.clone(), "aud", json!(5))),
        JwtSvidError::InvalidAud
    );
    assert_eq!(
        check(with(good.clone(), "aud", json!([AUD, 5]))),
        JwtSvidError::InvalidAud
    );
    assert_eq!(
        check(with(good.clone(), "aud", json!([]))),
        JwtSvidError::EmptyAud
    );
    for aud in [json!("someone-else"), json!(["a", "b"])] {
        assert_eq!(
            check(with(good.clone(), "aud", aud)),
            JwtSvidError::AudienceMismatch {
                expected: AUD.to_owned()
            }
        );
    }
}

#[test]
fn exp_must_be_present_and_in_the_future() {
    let (key, bundles) = example_org();
    let good = claims(SUB, AUD);
    let check = |claims: Value| verify(&with_claims(&key, claims), &bundles).unwrap_err();
    assert_eq!(
        check(without(good.clone(), "exp")),
        JwtSvidError::MissingExp
    );
    for bad in [json!("soon"), json!(null), json!(1e300), json!([1])] {
        assert_eq!(
            check(with(good.clone(), "exp", bad.clone())),
            JwtSvidError::InvalidExp,
            "{bad}"
        );
    }
    let exp = T0_UNIX - 3600;
    assert_eq!(
        check(with(good, "exp", json!(exp))),
        JwtSvidError::Expired {
            exp: UNIX_EPOCH + Duration::from_secs(exp)
        }
    );
}

#[test]
fn nbf_in_the_future_is_refused() {
    let (key, bundles) = example_org();
    let good = claims(SUB, AUD);
    let check = |claims: Value| verify(&with_claims(&key, claims), &bundles).unwrap_err();
    let nbf = T0_UNIX + 60;
    assert_eq!(
        check(with(good.clone(), "nbf", json!(nbf))),
        JwtSvidError::NotYetValid {
            nbf: UNIX_EPOCH + Duration::from_secs(nbf)
        }
    );
    assert_eq!(
        check(with(good, "nbf", json!("later"))),
        JwtSvidError::InvalidNbf
    );
}

// === key and signature (JWT-9, BUN-6, BUN-7) ===

#[test]
fn token_of_a_trust_domain_without_bundle_is_refused() {
    let (key, bundles) = example_org();
    let t = with_claims(&key, claims("spiffe://other.org/w", AUD));
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::NoBundle {
            trust_domain: td("other.org")
        }
    );
}

#[test]
fn bundle_without_jwt_authorities_is_refused() {
    let key = JwtKey::generate(KeyKind::P256, "k1");
    // Only an X.509 root: that trust domain does not do JWT-SVIDs.
    let bundles = set_of([Ca::root("example.org").bundle("example.org")]);
    assert_eq!(
        verify(&token(&key, &claims(SUB, AUD)), &bundles).unwrap_err(),
        JwtSvidError::NoJwtAuthorities {
            trust_domain: td("example.org")
        }
    );
}

#[test]
fn unknown_kid_is_refused() {
    let (_, bundles) = example_org();
    let stranger = JwtKey::generate(KeyKind::P256, "k2");
    assert_eq!(
        verify(&token(&stranger, &claims(SUB, AUD)), &bundles).unwrap_err(),
        JwtSvidError::UnknownKeyId {
            key_id: "k2".to_owned(),
            trust_domain: td("example.org")
        }
    );
}

#[test]
fn token_signed_by_another_trust_domains_key_is_refused() {
    let own = JwtKey::generate(KeyKind::P256, "own");
    let foreign = JwtKey::generate(KeyKind::P256, "foreign");
    let bundles = set_of([
        jwt_bundle("example.org", &[&own]),
        jwt_bundle("other.org", &[&foreign]),
    ]);
    // The foreign key names itself: it is not in example.org's bundle.
    assert_eq!(
        verify(&token(&foreign, &claims(SUB, AUD)), &bundles).unwrap_err(),
        JwtSvidError::UnknownKeyId {
            key_id: "foreign".to_owned(),
            trust_domain: td("example.org")
        }
    );
    // Without a kid, only example.org's keys are tried.
    let t = with_header(&foreign, "ES256", json!({"alg": "ES256"}));
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::BadSignature
    );
    // The foreign key's own tokens still verify.
    let theirs = token(&foreign, &claims("spiffe://other.org/w", AUD));
    assert!(verify(&theirs, &bundles).is_ok());
}

#[test]
fn kid_shared_across_trust_domains_selects_the_subs_trust_domain() {
    let own = JwtKey::generate(KeyKind::P256, "k1");
    let foreign = JwtKey::generate(KeyKind::P256, "k1");
    let bundles = set_of([
        jwt_bundle("example.org", &[&own]),
        jwt_bundle("other.org", &[&foreign]),
    ]);
    assert_eq!(
        verify(&token(&foreign, &claims(SUB, AUD)), &bundles).unwrap_err(),
        JwtSvidError::BadSignature
    );
}

#[test]
fn key_must_fit_alg() {
    let p256 = JwtKey::generate(KeyKind::P256, "p256");
    let rsa = JwtKey::generate(KeyKind::Rsa2048, "rsa");
    let bundles = set_of([jwt_bundle("example.org", &[&p256, &rsa])]);
    let cases = [
        ("ES384", "p256", JwtAlgorithm::Es384),
        ("ES512", "p256", JwtAlgorithm::Es512),
        ("RS256", "p256", JwtAlgorithm::Rs256),
        ("ES256", "rsa", JwtAlgorithm::Es256),
    ];
    for (alg, kid, expected) in cases {
        // Signed with the named key's natural algorithm: the mismatch is found before.
        let key = if kid == "rsa" { &rsa } else { &p256 };
        let t = with_header(key, key.default_alg(), json!({"alg": alg, "kid": kid}));
        assert_eq!(
            verify(&t, &bundles).unwrap_err(),
            JwtSvidError::KeyAlgMismatch {
                key_id: kid.to_owned(),
                alg: expected
            }
        );
    }
    let t = with_header(&p256, "ES256", json!({"alg": "ES384"}));
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::NoKeyForAlg {
            trust_domain: td("example.org"),
            alg: JwtAlgorithm::Es384
        }
    );
}

#[test]
fn malformed_signature_is_refused() {
    let (key, bundles) = example_org();
    let t = token(&key, &claims(SUB, AUD));
    for suffix in ["=", "+/"] {
        assert_eq!(
            verify(&format!("{t}{suffix}"), &bundles).unwrap_err(),
            JwtSvidError::SignatureEncoding
        );
    }
}

#[test]
fn tampered_token_is_refused() {
    let (key, bundles) = example_org();
    let t = token(&key, &claims(SUB, AUD));
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    parts[1] = b64(&claims("spiffe://example.org/admin", AUD).to_string());
    assert_eq!(
        verify(&parts.join("."), &bundles).unwrap_err(),
        JwtSvidError::BadSignature
    );
    let stranger = JwtKey::generate(KeyKind::P256, "k1");
    assert_eq!(
        verify(&token(&stranger, &claims(SUB, AUD)), &bundles).unwrap_err(),
        JwtSvidError::BadSignature
    );
}

#[test]
fn der_encoded_ecdsa_signature_is_refused() {
    // JWS carries r || s; a DER (ASN.1) signature from the same key must not verify.
    let (key, bundles) = example_org();
    let input = format!(
        "{}.{}",
        b64(r#"{"alg":"ES256","kid":"k1"}"#),
        b64(&claims(SUB, AUD).to_string())
    );
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.pkcs8,
    )
    .unwrap();
    let der = pair
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(der.as_ref()));
    assert_eq!(
        verify(&t, &bundles).unwrap_err(),
        JwtSvidError::BadSignature
    );
}

#[test]
fn claims_are_judged_only_after_the_signature() {
    // An expired token with a bad signature reports the signature.
    let (_, bundles) = example_org();
    let stranger = JwtKey::generate(KeyKind::P256, "k1");
    let expired = with(claims(SUB, AUD), "exp", json!(T0_UNIX - 3600));
    assert_eq!(
        verify(&token(&stranger, &expired), &bundles).unwrap_err(),
        JwtSvidError::BadSignature
    );
}

#[test]
fn error_messages_name_the_cause() {
    let (key, bundles) = example_org();
    let err = verify(
        &with_claims(&key, claims("spiffe://domain2.test/w", AUD)),
        &bundles,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "no bundle for trust domain domain2.test");
    let id = SpiffeId::parse(SUB).unwrap();
    assert_eq!(id.trust_domain(), td("example.org"));
}

#[test]
fn removing_a_key_from_the_bundle_revokes_its_tokens() {
    // BUN-8: a key is revoked by publishing a bundle without it.
    let old = JwtKey::generate(KeyKind::P256, "old");
    let new = JwtKey::generate(KeyKind::P256, "new");
    let mut bundle = jwt_bundle("example.org", &[&old, &new]);
    let t = token(&old, &claims(SUB, AUD));
    assert!(verify(&t, &set_of([bundle.clone()])).is_ok());
    assert!(bundle.remove_jwt_authority("old"));
    assert_eq!(
        verify(&t, &set_of([bundle])).unwrap_err(),
        JwtSvidError::UnknownKeyId {
            key_id: "old".to_owned(),
            trust_domain: td("example.org")
        }
    );
}

// === tokens of another issuer (verify_jwt) ===

/// An identity provider's keys, named `idp.example.com`, holding `key`.
fn provider(key: &JwtKey) -> Bundle {
    jwt_bundle("idp.example.com", &[key])
}

#[test]
fn a_provider_token_names_anyone_and_is_checked_like_an_svid() {
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let keys = provider(&key);
    let mut c = claims("alice@example.com", "lanyard");
    c["iss"] = json!("https://idp.example.com");
    let verified = lanyard_core::verify_jwt(&token(&key, &c), "lanyard", &keys, t0()).unwrap();
    assert_eq!(verified.claims()["sub"], json!("alice@example.com"));
    assert_eq!(verified.key_id(), "k1");
    // Audience, expiry and signature are checked as for a JWT-SVID.
    assert_eq!(
        lanyard_core::verify_jwt(&token(&key, &c), "other", &keys, t0()),
        Err(JwtSvidError::AudienceMismatch {
            expected: "other".into()
        })
    );
    let late = t0() + Duration::from_secs(300) + JWT_LEEWAY;
    assert!(matches!(
        lanyard_core::verify_jwt(&token(&key, &c), "lanyard", &keys, late),
        Err(JwtSvidError::Expired { .. })
    ));
    let stranger = JwtKey::generate(KeyKind::P256, "k1");
    assert_eq!(
        lanyard_core::verify_jwt(&token(&stranger, &c), "lanyard", &keys, t0()),
        Err(JwtSvidError::BadSignature)
    );
}

#[test]
fn a_provider_token_may_carry_other_header_parameters_but_not_crit() {
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let keys = provider(&key);
    let c = claims("alice", "lanyard");
    let x5t = hand_token(
        &key,
        "ES256",
        &json!({"alg": "ES256", "kid": "k1", "typ": "JWT", "x5t": "abc"}),
        &c,
    );
    assert!(lanyard_core::verify_jwt(&x5t, "lanyard", &keys, t0()).is_ok());
    // A JWT-SVID may not.
    assert!(matches!(
        verify_jwt_svid(&x5t, "lanyard", &set_of([keys.clone()]), t0()),
        Err(JwtSvidError::UnexpectedHeaderParameter { .. })
    ));
    let crit = hand_token(
        &key,
        "ES256",
        &json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}),
        &c,
    );
    assert_eq!(
        lanyard_core::verify_jwt(&crit, "lanyard", &keys, t0()),
        Err(JwtSvidError::CriticalHeader)
    );
    for alg in ["none", "HS256"] {
        let forged = hand_token_raw(&key, "ES256", &format!(r#"{{"alg":"{alg}"}}"#), "{}");
        assert!(lanyard_core::verify_jwt(&forged, "lanyard", &keys, t0()).is_err());
    }
}

#[test]
fn a_provider_jwks_keeps_signing_keys_only() {
    let key = JwtKey::generate(KeyKind::P256, "sig1");
    let jwk = |use_: Option<&str>, kid: &str| {
        let mut jwk: Value = serde_json::from_str(&jwt_bundle("x.org", &[&key]).jwks_json())
            .map(|mut v: Value| v["keys"][0].take())
            .unwrap();
        jwk["kid"] = json!(kid);
        if let Some(u) = use_ {
            jwk["use"] = json!(u);
        }
        jwk
    };
    let doc = json!({"keys": [jwk(None, "a"), jwk(Some("sig"), "b"), jwk(Some("enc"), "c"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "d"}]});
    let bundle =
        Bundle::parse_signing_jwks(td("idp.example.com"), doc.to_string().as_bytes()).unwrap();
    let kids: Vec<&str> = bundle
        .jwt_authorities()
        .iter()
        .map(|a| a.key_id())
        .collect();
    assert_eq!(kids, ["a", "b"]);
    for bad in [&b"{}"[..], b"[]", b"", b"{\"keys\": 1}"] {
        assert!(Bundle::parse_signing_jwks(td("idp.example.com"), bad).is_err());
    }
}
