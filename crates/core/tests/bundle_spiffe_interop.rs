//! Cross-checks against implementations nobody here wrote: the `spiffe` crate (0.19) and
//! jsonwebtoken read what lanyard writes, and lanyard reads what they write.
//!
//! `spiffe` verifies tokens against the real clock, so the tokens here are built around
//! `SystemTime::now()` with minutes of margin; nothing asserts on durations.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod bundle_fixtures;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bundle_fixtures::{Ca, JwtKey, KeyKind, hand_token, leaf_params, td, token};
use lanyard_core::{Bundle, BundleSet, verify_jwt_svid, verify_x509_svid};
use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose};
use serde_json::{Value, json};

const SUB: &str = "spiffe://example.org/workload";
const AUD: &str = "spiffe://example.org/api";

fn spiffe_td(name: &str) -> spiffe::TrustDomain {
    spiffe::TrustDomain::new(name).unwrap()
}

/// Claims valid for five minutes from now.
fn live_claims() -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"sub": SUB, "aud": [AUD], "exp": now + 300, "iat": now})
}

/// JWT keys of every kind the `spiffe` crate's aws-lc-rs backend verifies (it has no ES512).
fn keys() -> Vec<JwtKey> {
    vec![
        JwtKey::generate(KeyKind::P256, "C6vs25welZOx6WksNYfbMfiw9l96pMnD"),
        JwtKey::generate(KeyKind::P384, "p384"),
        JwtKey::generate_nth(KeyKind::Rsa2048, "rsa-0", 0),
        JwtKey::generate_nth(KeyKind::Rsa2048, "rsa-1", 1),
    ]
}

fn lanyard_bundle(keys: &[JwtKey]) -> Bundle {
    let mut bundle = Bundle::new(td("example.org"));
    for key in keys {
        assert!(bundle.add_jwt_authority(key.authority()));
    }
    bundle
}

fn spiffe_set(bundle: spiffe::JwtBundle) -> spiffe::JwtBundleSet {
    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(bundle);
    set
}

#[test]
fn spiffe_reads_lanyards_jwks_with_the_same_key_ids() {
    let keys = keys();
    let bundle = lanyard_bundle(&keys);
    let read = spiffe::JwtBundle::from_jwt_authorities(
        spiffe_td("example.org"),
        bundle.jwks_json().as_bytes(),
    )
    .unwrap();
    let mut read_ids: Vec<&str> = read.jwt_authorities().map(|a| a.key_id()).collect();
    read_ids.sort_unstable();
    let mut ids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(read_ids, ids);
}

#[test]
fn spiffe_verifies_tokens_with_keys_from_lanyards_jwks() {
    let keys = keys();
    let bundle = lanyard_bundle(&keys);
    let read = spiffe::JwtBundle::from_jwt_authorities(
        spiffe_td("example.org"),
        bundle.jwks_json().as_bytes(),
    )
    .unwrap();
    let set = spiffe_set(read);
    for (key, alg) in keys.iter().zip(["ES256", "ES384", "RS256", "PS512"]) {
        let t = hand_token(
            key,
            alg,
            &json!({"alg": alg, "kid": key.kid, "typ": "JWT"}),
            &live_claims(),
        );
        let svid = spiffe::JwtSvid::parse_and_validate(&t, &set, &[AUD])
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(svid.spiffe_id().to_string(), SUB);
        assert_eq!(svid.key_id(), key.kid);
    }
}

#[test]
fn spiffe_reads_lanyards_bundle_document() {
    // The `spiffe` crate has no SPIFFE bundle document parser; as its documentation says, a
    // consumer selects the keys by `use` and hands each kind to the matching bundle type.
    let root = Ca::root("example.org");
    let keys = keys();
    let mut bundle = lanyard_bundle(&keys);
    bundle.add_x509_authority(root.authority());
    let doc: Value = serde_json::from_str(&bundle.to_json()).unwrap();
    let all = doc["keys"].as_array().unwrap();

    let jwt_keys: Vec<&Value> = all.iter().filter(|k| k["use"] == "jwt-svid").collect();
    let jwks = json!({ "keys": jwt_keys }).to_string();
    let jwt_bundle =
        spiffe::JwtBundle::from_jwt_authorities(spiffe_td("example.org"), jwks.as_bytes()).unwrap();
    assert_eq!(jwt_bundle.jwt_authorities().count(), keys.len());
    let set = spiffe_set(jwt_bundle);
    let t = token(&keys[0], &live_claims());
    assert!(spiffe::JwtSvid::parse_and_validate(&t, &set, &[AUD]).is_ok());

    let roots: Vec<Vec<u8>> = all
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .map(|k| STANDARD.decode(k["x5c"][0].as_str().unwrap()).unwrap())
        .collect();
    let root_refs: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    let x509 =
        spiffe::X509Bundle::from_x509_authorities(spiffe_td("example.org"), &root_refs).unwrap();
    assert_eq!(x509.authorities().len(), 1);
    assert_eq!(x509.authorities()[0].as_bytes(), root.der.as_slice());

    // Concatenated DER, as the Workload API sends it, parses the same.
    let from_der = spiffe::X509Bundle::parse_from_der(
        spiffe_td("example.org"),
        &bundle.x509_authorities_der(),
    )
    .unwrap();
    assert_eq!(from_der.authorities(), x509.authorities());
}

#[test]
fn jsonwebtoken_reads_every_key_of_lanyards_bundle_document() {
    let root = Ca::root("example.org");
    let keys = keys();
    let mut bundle = lanyard_bundle(&keys);
    bundle.add_x509_authority(root.authority());
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&bundle.to_json()).unwrap();
    assert_eq!(set.keys.len(), keys.len() + 1);
    // Its decoding key, built from lanyard's JWK members alone, verifies a lanyard token.
    let jwk = set.find("p384").unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES384);
    validation.set_audience(&[AUD]);
    let t = token(&keys[1], &live_claims());
    assert!(jsonwebtoken::decode::<Value>(&t, &decoding, &validation).is_ok());
    let rsa = jsonwebtoken::DecodingKey::from_jwk(set.find("rsa-0").unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[AUD]);
    assert!(
        jsonwebtoken::decode::<Value>(&token(&keys[2], &live_claims()), &rsa, &validation).is_ok()
    );
}

#[test]
fn lanyard_reads_the_jwks_of_spiffes_documentation() {
    // The example JWKS in `spiffe::JwtBundle::from_jwt_authorities`'s documentation.
    let jwks = br#"{
        "keys": [
            {
                "kty": "EC",
                "kid": "C6vs25welZOx6WksNYfbMfiw9l96pMnD",
                "crv": "P-256",
                "x": "ngLYQnlfF6GsojUwqtcEE3WgTNG2RUlsGhK73RNEl5k",
                "y": "tKbiDSUSsQ3F1P7wteeHNXIcU-cx6CgSbroeQrQHTLM"
            }
        ]
    }"#;
    let bundle = Bundle::parse_jwks(td("example.org"), jwks).unwrap();
    assert!(
        bundle
            .jwt_authority("C6vs25welZOx6WksNYfbMfiw9l96pMnD")
            .is_some()
    );
    // Written back, it is the same key to `spiffe`.
    let read = spiffe::JwtBundle::from_jwt_authorities(
        spiffe_td("example.org"),
        bundle.jwks_json().as_bytes(),
    )
    .unwrap();
    let theirs: Value = serde_json::from_slice(
        read.find_jwt_authority("C6vs25welZOx6WksNYfbMfiw9l96pMnD")
            .unwrap()
            .jwk_json(),
    )
    .unwrap();
    let ours: Value = serde_json::from_slice(jwks).unwrap();
    assert_eq!(theirs, ours["keys"][0]);
}

#[test]
fn lanyard_reads_jwks_made_by_jsonwebtoken() {
    let key = JwtKey::generate(KeyKind::P256, "from-jsonwebtoken");
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
        &key.encoding_key(),
        jsonwebtoken::Algorithm::ES256,
    )
    .unwrap();
    // jsonwebtoken leaves `kid` unset; the Workload API requires it.
    jwk.common.key_id = Some(key.kid.clone());
    let jwks = serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk] }).unwrap();
    let bundle = Bundle::parse_jwks(td("example.org"), jwks.as_bytes()).unwrap();
    assert_eq!(bundle.jwt_authorities(), [key.authority()]);
}

#[test]
fn lanyard_and_spiffe_agree_on_tokens() {
    let keys = keys();
    let bundle = lanyard_bundle(&keys);
    let ours: BundleSet = [bundle.clone()].into_iter().collect();
    let theirs = spiffe_set(
        spiffe::JwtBundle::from_jwt_authorities(
            spiffe_td("example.org"),
            bundle.jwks_json().as_bytes(),
        )
        .unwrap(),
    );
    let good = token(&keys[0], &live_claims());
    let stranger = JwtKey::generate(KeyKind::P256, &keys[0].kid);
    let cases = [
        ("good", good, true),
        (
            "typ jwt",
            hand_token(
                &keys[0],
                "ES256",
                &json!({"alg": "ES256", "kid": keys[0].kid, "typ": "jwt"}),
                &live_claims(),
            ),
            false,
        ),
        (
            "extra header",
            hand_token(
                &keys[0],
                "ES256",
                &json!({"alg": "ES256", "kid": keys[0].kid, "jku": "x"}),
                &live_claims(),
            ),
            false,
        ),
        ("wrong key", token(&stranger, &live_claims()), false),
        (
            "expired",
            token(&keys[0], &{
                let mut c = live_claims();
                c["exp"] = json!(1_000_000_000);
                c
            }),
            false,
        ),
        (
            "wrong audience",
            token(&keys[0], &{
                let mut c = live_claims();
                c["aud"] = json!(["elsewhere"]);
                c
            }),
            false,
        ),
        (
            "foreign trust domain",
            token(&keys[0], &{
                let mut c = live_claims();
                c["sub"] = json!("spiffe://other.org/w");
                c
            }),
            false,
        ),
    ];
    for (name, t, valid) in cases {
        let lanyard = verify_jwt_svid(&t, AUD, &ours, SystemTime::now()).is_ok();
        let spiffe = spiffe::JwtSvid::parse_and_validate(&t, &theirs, &[AUD]).is_ok();
        assert_eq!((lanyard, spiffe), (valid, valid), "{name}");
    }
}

#[test]
fn lanyard_and_spiffe_agree_on_x509_svid_leaves() {
    let root = Ca::root("example.org");
    let bundles: BundleSet = [root.bundle("example.org")].into_iter().collect();
    let at = bundle_fixtures::t0();
    let mut cases = vec![("good", leaf_params(SUB), true)];
    let mut p = leaf_params(SUB);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    cases.push(("leaf is CA", p, false));
    let mut p = leaf_params(SUB);
    p.key_usages.push(KeyUsagePurpose::KeyCertSign);
    cases.push(("keyCertSign", p, false));
    let mut p = leaf_params(SUB);
    p.key_usages.push(KeyUsagePurpose::CrlSign);
    cases.push(("cRLSign", p, false));
    let mut p = leaf_params(SUB);
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    cases.push(("no digitalSignature", p, false));
    let mut p = leaf_params(SUB);
    p.subject_alt_names = vec![bundle_fixtures::uri("spiffe://example.org")];
    cases.push(("root ID", p, false));
    let mut p = leaf_params(SUB);
    p.subject_alt_names
        .push(bundle_fixtures::uri("spiffe://example.org/b"));
    cases.push(("two URI SANs", p, false));
    for (name, params, valid) in cases {
        let (leaf, key) = root.sign_with_key(&params);
        let lanyard = verify_x509_svid(std::slice::from_ref(&leaf), &bundles, at);
        let spiffe = spiffe::X509Svid::parse_from_der(&leaf, &key);
        assert_eq!(
            (lanyard.is_ok(), spiffe.is_ok()),
            (valid, valid),
            "{name}: {lanyard:?} {spiffe:?}"
        );
        if let (Ok(ours), Ok(theirs)) = (lanyard, spiffe) {
            assert_eq!(ours.spiffe_id().as_str(), theirs.spiffe_id().to_string());
        }
    }
}
