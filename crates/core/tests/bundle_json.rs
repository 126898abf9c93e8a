//! Bundles (SPIFFE.md §4, X509-14/15, JWT-12, WAPI-11, BUN-9) through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod bundle_fixtures;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bundle_fixtures::{Ca, JwtKey, KeyKind, ca_params, td};
use lanyard_core::bundle::{MAX_BUNDLE_JSON_LEN, MAX_BUNDLE_MAP_JSON_LEN};
use lanyard_core::{
    Bundle, BundleError, BundleSet, IdError, JwtAuthority, JwtKeyType, X509Authority,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

fn parse(json: &Value) -> Result<Bundle, BundleError> {
    Bundle::parse_json(td("example.org"), json.to_string().as_bytes())
}

fn keys_of(json: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_str(json).unwrap();
    doc["keys"].as_array().unwrap().clone()
}

/// The error for key `index` of `keys`.
fn key_error(index: usize, source: BundleError) -> BundleError {
    BundleError::InvalidKey {
        index,
        source: Box::new(source),
    }
}

/// A bundle with one X.509 root and one JWT key of each kind.
fn full_bundle() -> (Bundle, Ca, Vec<JwtKey>) {
    let root = Ca::root("example.org");
    let keys = vec![
        JwtKey::generate(KeyKind::P256, "p256"),
        JwtKey::generate(KeyKind::P384, "p384"),
        JwtKey::generate(KeyKind::P521, "p521"),
        JwtKey::generate(KeyKind::Rsa2048, "rsa"),
    ];
    let mut bundle = root.bundle("example.org");
    for key in &keys {
        assert!(bundle.add_jwt_authority(key.authority()));
    }
    bundle.set_sequence(42);
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));
    (bundle, root, keys)
}

/// The JWK of a jwt-svid key as lanyard should write it.
fn ec_jwk(key: &JwtKey, crv: &str) -> Value {
    // An uncompressed SEC1 point ends the SPKI: 0x04 || x || y.
    let width = match crv {
        "P-256" => 32,
        "P-384" => 48,
        _ => 66,
    };
    let point = &key.spki[key.spki.len() - 2 * width..];
    json!({
        "kty": "EC",
        "crv": crv,
        "x": URL_SAFE_NO_PAD.encode(&point[..width]),
        "y": URL_SAFE_NO_PAD.encode(&point[width..]),
    })
}

// === the model ===

#[test]
fn authorities_keep_their_bytes() {
    let (bundle, root, keys) = full_bundle();
    assert_eq!(bundle.trust_domain(), &td("example.org"));
    assert_eq!(bundle.x509_authorities()[0].der(), root.der.as_slice());
    assert_eq!(bundle.jwt_authorities().len(), 4);
    for (authority, key) in bundle.jwt_authorities().iter().zip(&keys) {
        assert_eq!(authority.key_id(), key.kid);
        assert_eq!(authority.public_key_der(), key.spki.as_slice());
    }
    let types: Vec<JwtKeyType> = bundle
        .jwt_authorities()
        .iter()
        .map(JwtAuthority::key_type)
        .collect();
    assert_eq!(
        types,
        [
            JwtKeyType::EcP256,
            JwtKeyType::EcP384,
            JwtKeyType::EcP521,
            JwtKeyType::Rsa
        ]
    );
    assert_eq!(bundle.sequence(), 42);
    assert_eq!(bundle.refresh_hint(), Some(Duration::from_secs(300)));
}

#[test]
fn adding_and_removing_authorities() {
    let root = Ca::root("example.org");
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let mut bundle = Bundle::new(td("example.org"));
    assert!(bundle.is_empty());
    assert_eq!(bundle.sequence(), 0);
    assert_eq!(bundle.refresh_hint(), None);

    assert!(bundle.add_x509_authority(root.authority()));
    assert!(
        !bundle.add_x509_authority(root.authority()),
        "already present"
    );
    assert!(bundle.add_jwt_authority(key.authority()));
    // Another key under the same kid is refused and does not replace the first.
    let other = JwtKey::generate(KeyKind::P256, "k1");
    assert!(!bundle.add_jwt_authority(other.authority()));
    assert_eq!(
        bundle.jwt_authority("k1").unwrap().public_key_der(),
        key.spki.as_slice()
    );
    assert!(bundle.jwt_authority("k2").is_none());
    assert!(!bundle.is_empty());

    assert!(bundle.remove_x509_authority(&root.der));
    assert!(!bundle.remove_x509_authority(&root.der));
    assert!(bundle.remove_jwt_authority("k1"));
    assert!(!bundle.remove_jwt_authority("k1"));
    assert!(bundle.is_empty());
    assert_eq!(
        bundle.sequence(),
        0,
        "mutations leave the sequence to the owner"
    );
}

#[test]
fn authority_constructors_refuse_bad_input() {
    assert!(matches!(
        X509Authority::from_der(b"junk".to_vec()),
        Err(BundleError::InvalidCertificate { .. })
    ));
    let mut trailing = Ca::root("example.org").der;
    trailing.extend_from_slice(&[0, 0]);
    assert_eq!(
        X509Authority::from_der(trailing),
        Err(BundleError::TrailingData { len: 2 })
    );
    let key = JwtKey::generate(KeyKind::P256, "k");
    assert_eq!(
        JwtAuthority::new("", key.spki.clone()),
        Err(BundleError::EmptyKeyId)
    );
    assert!(matches!(
        JwtAuthority::new("k", b"junk".to_vec()),
        Err(BundleError::InvalidPublicKey { .. })
    ));
    let mut trailing = key.spki.clone();
    trailing.push(0);
    assert_eq!(
        JwtAuthority::new("k", trailing),
        Err(BundleError::TrailingData { len: 1 })
    );
    // An Ed25519 key can anchor X.509 chains but cannot sign JWT-SVIDs (EdDSA is refused).
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    assert!(matches!(
        JwtAuthority::new("k", rcgen::PublicKeyData::subject_public_key_info(&ed)),
        Err(BundleError::UnsupportedPublicKey { .. })
    ));
    // A point that is not on the curve.
    let mut off_curve = key.spki;
    let last = off_curve.len() - 1;
    off_curve[last] ^= 0x01;
    assert!(matches!(
        JwtAuthority::new("k", off_curve),
        Err(BundleError::InvalidPublicKey { .. })
    ));
}

#[test]
fn concatenated_der_and_pem() {
    let first = Ca::root("example.org");
    let second = Ca::root("example.org");
    let mut bundle = first.bundle("example.org");
    bundle.add_x509_authority(second.authority());

    let der = bundle.x509_authorities_der();
    assert_eq!(der, [first.der.clone(), second.der.clone()].concat());
    let parsed = X509Authority::parse_concatenated_der(&der).unwrap();
    assert_eq!(parsed, bundle.x509_authorities());
    assert_eq!(X509Authority::parse_concatenated_der(&[]).unwrap(), []);
    assert!(X509Authority::parse_concatenated_der(&der[..der.len() - 1]).is_err());

    let pem = bundle.x509_authorities_pem();
    assert!(pem.lines().all(|line| line.len() <= 64));
    // Read back by rustls-pki-types' PEM parser.
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(certs, [first.der, second.der.clone()]);
    let one = bundle.x509_authorities()[1].pem();
    assert_eq!(
        CertificateDer::from_pem_slice(one.as_bytes())
            .unwrap()
            .as_ref(),
        second.der.as_slice()
    );
}

// === writing (X509-14, JWT-12, BUN-2, BUN-3) ===

#[test]
fn to_json_writes_the_spiffe_bundle_format() {
    let (bundle, root, keys) = full_bundle();
    let json = bundle.to_json();
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["spiffe_sequence"], json!(42));
    assert_eq!(doc["spiffe_refresh_hint"], json!(300));
    let written = doc["keys"].as_array().unwrap();
    assert_eq!(written.len(), 5);

    // The root: use x509-svid, no kid, exactly one standard-base64 x5c, its key's members.
    let x509 = written[0].as_object().unwrap();
    assert_eq!(x509["use"], "x509-svid");
    assert_eq!(x509["kty"], "EC");
    assert_eq!(x509["crv"], "P-256");
    assert!(x509.contains_key("x") && x509.contains_key("y"));
    assert!(!x509.contains_key("kid"));
    let x5c = x509["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(), root.der);

    // The JWT keys: use jwt-svid and kid, key members per RFC 7518.
    for (jwk, (key, crv)) in written[1..4]
        .iter()
        .zip(keys.iter().zip(["P-256", "P-384", "P-521"]))
    {
        let mut expected = ec_jwk(key, crv);
        expected["kid"] = json!(key.kid);
        expected["use"] = json!("jwt-svid");
        assert_eq!(jwk, &expected);
    }
    let rsa = written[4].as_object().unwrap();
    assert_eq!(rsa["kty"], "RSA");
    assert_eq!(rsa["kid"], "rsa");
    assert_eq!(rsa["e"], "AQAB");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(rsa["n"].as_str().unwrap())
            .unwrap()
            .len(),
        256
    );
}

#[test]
fn to_json_is_deterministic() {
    let (bundle, _, _) = full_bundle();
    assert_eq!(bundle.to_json(), bundle.to_json());
    assert_eq!(bundle.clone().to_json(), bundle.to_json());
    let reparsed = Bundle::parse_json(td("example.org"), bundle.to_json().as_bytes()).unwrap();
    assert_eq!(reparsed.to_json(), bundle.to_json());
}

#[test]
fn sequence_is_always_written_and_refresh_hint_when_set() {
    let bundle = Bundle::new(td("example.org"));
    assert_eq!(bundle.to_json(), r#"{"keys":[],"spiffe_sequence":0}"#);
    let mut bundle = bundle;
    bundle.set_sequence(u64::MAX);
    bundle.set_refresh_hint(Some(Duration::from_millis(1500)));
    assert_eq!(
        bundle.to_json(),
        format!(
            r#"{{"keys":[],"spiffe_refresh_hint":1,"spiffe_sequence":{}}}"#,
            u64::MAX
        )
    );
}

#[test]
fn other_root_key_types_are_written_with_their_members() {
    for (alg, kty, crv) in [
        (&rcgen::PKCS_ECDSA_P384_SHA384, "EC", Some("P-384")),
        (&rcgen::PKCS_ED25519, "OKP", Some("Ed25519")),
    ] {
        let root = Ca::self_signed(ca_params("example.org"), alg);
        let keys = keys_of(&root.bundle("example.org").to_json());
        assert_eq!(keys[0]["kty"], kty);
        assert_eq!(keys[0]["crv"].as_str(), crv);
    }
}

#[test]
fn jwks_json_has_only_jwt_keys_each_with_a_kid() {
    let (bundle, _, keys) = full_bundle();
    let doc: Value = serde_json::from_str(&bundle.jwks_json()).unwrap();
    let doc = doc.as_object().unwrap();
    assert_eq!(
        doc.keys().collect::<Vec<_>>(),
        ["keys"],
        "no spiffe_* members"
    );
    let written = doc["keys"].as_array().unwrap();
    assert_eq!(written.len(), keys.len());
    for (jwk, key) in written.iter().zip(&keys) {
        let jwk = jwk.as_object().unwrap();
        assert_eq!(jwk["kid"], json!(key.kid));
        assert!(!jwk.contains_key("use"), "as SPIRE sends them");
        assert!(!jwk.contains_key("x5c"));
    }
    assert_eq!(Bundle::new(td("example.org")).jwks_json(), r#"{"keys":[]}"#);
}

// === reading (BUN-1 … BUN-5, X509-15) ===

#[test]
fn to_json_round_trips() {
    let (bundle, _, _) = full_bundle();
    let parsed = Bundle::parse_json(td("example.org"), bundle.to_json().as_bytes()).unwrap();
    assert_eq!(parsed, bundle);
}

#[test]
fn jwks_json_round_trips_through_parse_jwks() {
    let (bundle, _, _) = full_bundle();
    let parsed = Bundle::parse_jwks(td("example.org"), bundle.jwks_json().as_bytes()).unwrap();
    assert_eq!(parsed.jwt_authorities(), bundle.jwt_authorities());
    assert!(parsed.x509_authorities().is_empty());
}

#[test]
fn document_shape_errors() {
    assert!(matches!(
        Bundle::parse_json(td("example.org"), b"{"),
        Err(BundleError::InvalidJson { .. })
    ));
    assert_eq!(parse(&json!([])), Err(BundleError::NotAnObject));
    assert_eq!(parse(&json!({})), Err(BundleError::MissingKeys));
    assert_eq!(
        parse(&json!({"spiffe_sequence": 1})),
        Err(BundleError::MissingKeys)
    );
    assert_eq!(parse(&json!({"keys": {}})), Err(BundleError::KeysNotArray));
    assert_eq!(
        parse(&json!({"keys": null})),
        Err(BundleError::KeysNotArray)
    );
    assert_eq!(
        parse(&json!({"keys": [1]})),
        Err(key_error(0, BundleError::KeyNotObject))
    );
}

#[test]
fn empty_keys_is_a_valid_empty_bundle() {
    let bundle = parse(&json!({"keys": []})).unwrap();
    assert!(bundle.is_empty());
    assert_eq!(bundle.sequence(), 0);
    assert_eq!(bundle.refresh_hint(), None);
}

#[test]
fn sequence_and_refresh_hint_are_optional_unsigned_integers() {
    let bundle =
        parse(&json!({"keys": [], "spiffe_sequence": u64::MAX, "spiffe_refresh_hint": 60}))
            .unwrap();
    assert_eq!(bundle.sequence(), u64::MAX);
    assert_eq!(bundle.refresh_hint(), Some(Duration::from_secs(60)));
    let bundle =
        parse(&json!({"keys": [], "spiffe_sequence": null, "spiffe_refresh_hint": null})).unwrap();
    assert_eq!((bundle.sequence(), bundle.refresh_hint()), (0, None));
    for bad in [json!(-1), json!(1.5), json!("1"), json!(true)] {
        assert_eq!(
            parse(&json!({"keys": [], "spiffe_sequence": bad})),
            Err(BundleError::InvalidSequence)
        );
        assert_eq!(
            parse(&json!({"keys": [], "spiffe_refresh_hint": bad})),
            Err(BundleError::InvalidRefreshHint)
        );
    }
}

#[test]
fn extra_top_level_members_are_ignored() {
    let bundle = parse(&json!({"keys": [], "spiffe_sequence": 3, "issuer": "x"})).unwrap();
    assert_eq!(bundle.sequence(), 3);
}

#[test]
fn keys_with_unknown_or_missing_use_or_kty_are_ignored() {
    let root = Ca::root("example.org");
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let x5c = json!([STANDARD.encode(&root.der)]);
    let mut ec = ec_jwk(&key, "P-256");
    ec["kid"] = json!("k1");
    let with = |extra: Value| {
        let mut jwk = ec.clone();
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                jwk.as_object_mut().unwrap().remove(k);
            } else {
                jwk[k] = v.clone();
            }
        }
        jwk
    };
    let ignored = [
        with(json!({})), // no use
        with(json!({"use": "sig"})),
        with(json!({"use": "enc"})),
        with(json!({"use": "JWT-SVID"})),
        with(json!({"use": "X509-SVID", "x5c": x5c})),
        with(json!({"use": "wit-svid"})),
        with(json!({"use": 5})),
        with(json!({"use": "jwt-svid", "kty": "OKP", "crv": "Ed25519"})),
        with(json!({"use": "jwt-svid", "kty": "oct", "k": "c2VjcmV0"})),
        with(json!({"use": "jwt-svid", "kty": "foo"})),
        with(json!({"use": "jwt-svid", "kty": null})),
        with(json!({"use": "jwt-svid", "crv": "secp256k1"})),
        with(json!({"use": "x509-svid", "kty": "oct", "x5c": x5c})),
        with(json!({"use": "x509-svid", "kty": null, "x5c": x5c})),
    ];
    for jwk in ignored {
        let bundle = parse(&json!({"keys": [jwk]})).unwrap_or_else(|e| panic!("{jwk}: {e}"));
        assert!(bundle.is_empty(), "{jwk}");
    }
    // The same keys with the right use are read.
    let bundle = parse(&json!({"keys": [
        with(json!({"use": "jwt-svid"})),
        with(json!({"use": "x509-svid", "x5c": x5c})),
    ]}))
    .unwrap();
    assert_eq!(bundle.jwt_authorities(), [key.authority()]);
    assert_eq!(bundle.x509_authorities(), [root.authority()]);
}

#[test]
fn x509_key_without_x5c_is_ignored_and_only_the_first_certificate_is_used() {
    let first = Ca::root("example.org");
    let second = Ca::root("example.org");
    let jwk = |x5c: Option<Value>| {
        let mut jwk =
            json!({"use": "x509-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});
        if let Some(x5c) = x5c {
            jwk["x5c"] = x5c;
        }
        jwk
    };
    for ignored in [jwk(None), jwk(Some(json!([]))), jwk(Some(json!(null)))] {
        assert!(parse(&json!({"keys": [ignored]})).unwrap().is_empty());
    }
    let two = jwk(Some(json!([
        STANDARD.encode(&first.der),
        STANDARD.encode(&second.der)
    ])));
    let bundle = parse(&json!({"keys": [two]})).unwrap();
    assert_eq!(bundle.x509_authorities(), [first.authority()]);
    // The entries after the first are not even looked at.
    let junk_after = jwk(Some(json!([STANDARD.encode(&first.der), 5, "%%"])));
    assert_eq!(
        parse(&json!({"keys": [junk_after]}))
            .unwrap()
            .x509_authorities(),
        [first.authority()]
    );
}

#[test]
fn malformed_x5c_fails_the_bundle() {
    let root = Ca::root("example.org");
    let jwk = |x5c: Value| json!({"use": "x509-svid", "kty": "EC", "x5c": x5c});
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&root.der);
    assert!(
        url_safe.contains(['-', '_']),
        "fixture must exercise the alphabet"
    );
    let cases = [
        (jwk(json!("abc")), "not an array"),
        (jwk(json!([5])), "the first entry is not a string"),
        (
            jwk(json!(["%%%"])),
            "the first entry is not standard base64",
        ),
        (
            jwk(json!([url_safe])),
            "the first entry is not standard base64",
        ),
    ];
    for (key, reason) in cases {
        assert_eq!(
            parse(&json!({"keys": [{"use": "jwt-svid", "kty": "foo"}, key]})),
            Err(key_error(1, BundleError::InvalidX5c { reason }))
        );
    }
    let not_a_cert = jwk(json!([STANDARD.encode(b"not a certificate")]));
    assert!(matches!(
        parse(&json!({"keys": [not_a_cert]})),
        Err(BundleError::InvalidKey { index: 0, source }) if matches!(*source, BundleError::InvalidCertificate { .. })
    ));
}

#[test]
fn duplicate_x509_authorities_are_merged() {
    let root = Ca::root("example.org");
    let jwk = json!({"use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(&root.der)]});
    let bundle = parse(&json!({"keys": [jwk, jwk]})).unwrap();
    assert_eq!(bundle.x509_authorities().len(), 1);
}

#[test]
fn malformed_jwt_keys_fail_the_bundle() {
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let mut good = ec_jwk(&key, "P-256");
    good["use"] = json!("jwt-svid");
    good["kid"] = json!("k1");
    let with = |name: &str, value: Value| {
        let mut jwk = good.clone();
        if value.is_null() {
            jwk.as_object_mut().unwrap().remove(name);
        } else {
            jwk[name] = value;
        }
        json!({"keys": [jwk]})
    };
    let err = |source| Err(key_error(0, source));
    assert_eq!(
        parse(&with("kid", Value::Null)),
        err(BundleError::MissingKeyId)
    );
    assert_eq!(
        parse(&with("kid", json!(1))),
        err(BundleError::InvalidJwkMember { member: "kid" })
    );
    assert_eq!(parse(&with("kid", json!(""))), err(BundleError::EmptyKeyId));
    assert_eq!(
        parse(&with("crv", Value::Null)),
        err(BundleError::InvalidJwkMember { member: "crv" })
    );
    assert_eq!(
        parse(&with("x", Value::Null)),
        err(BundleError::InvalidJwkMember { member: "x" })
    );
    assert_eq!(
        parse(&with("y", json!("!!"))),
        err(BundleError::InvalidJwkMember { member: "y" })
    );
    assert_eq!(
        parse(&with("x", json!(URL_SAFE_NO_PAD.encode([1u8; 31])))),
        err(BundleError::InvalidJwkMember { member: "x" })
    );
    // Right length, not on the curve.
    assert!(matches!(
        parse(&with("y", json!(URL_SAFE_NO_PAD.encode([1u8; 32])))),
        Err(BundleError::InvalidKey { index: 0, source }) if matches!(*source, BundleError::InvalidPublicKey { .. })
    ));
    // A P-256 point labelled P-384.
    assert_eq!(
        parse(&with("crv", json!("P-384"))),
        err(BundleError::InvalidJwkMember { member: "x" })
    );
    let rsa = json!({"use": "jwt-svid", "kty": "RSA", "kid": "r", "e": "AQAB"});
    assert_eq!(
        parse(&json!({"keys": [rsa]})),
        err(BundleError::InvalidJwkMember { member: "n" })
    );
    // A 1024-bit modulus is too weak to verify anything.
    let weak = json!({"use": "jwt-svid", "kty": "RSA", "kid": "r", "e": "AQAB",
        "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128])});
    assert!(matches!(
        parse(&json!({"keys": [weak]})),
        Err(BundleError::InvalidKey { index: 0, source }) if matches!(*source, BundleError::UnsupportedPublicKey { .. })
    ));
}

#[test]
fn duplicate_kid_fails_the_bundle() {
    let (bundle, _, _) = full_bundle();
    let mut doc: Value = serde_json::from_str(&bundle.to_json()).unwrap();
    let keys = doc["keys"].as_array_mut().unwrap();
    let mut copy = keys[2].clone();
    copy["kid"] = keys[1]["kid"].clone();
    keys.push(copy);
    assert_eq!(
        parse(&doc),
        Err(key_error(
            5,
            BundleError::DuplicateKeyId {
                key_id: "p256".to_owned()
            }
        ))
    );
}

#[test]
fn padded_jwk_members_are_accepted() {
    let key = JwtKey::generate(KeyKind::P521, "k1");
    let mut jwk = ec_jwk(&key, "P-521");
    // 66 bytes encode to 88 characters with "==" padding.
    for member in ["x", "y"] {
        let raw = URL_SAFE_NO_PAD
            .decode(jwk[member].as_str().unwrap())
            .unwrap();
        jwk[member] = json!(base64::engine::general_purpose::URL_SAFE.encode(raw));
    }
    jwk["kid"] = json!("k1");
    jwk["use"] = json!("jwt-svid");
    let bundle = parse(&json!({"keys": [jwk]})).unwrap();
    assert_eq!(bundle.jwt_authorities(), [key.authority()]);
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let big = vec![b' '; MAX_BUNDLE_JSON_LEN + 1];
    assert_eq!(
        Bundle::parse_json(td("example.org"), &big),
        Err(BundleError::TooLarge {
            len: MAX_BUNDLE_JSON_LEN + 1,
            max: MAX_BUNDLE_JSON_LEN
        })
    );
    assert!(matches!(
        Bundle::parse_jwks(td("example.org"), &big),
        Err(BundleError::TooLarge { .. })
    ));
    let big = vec![b' '; MAX_BUNDLE_MAP_JSON_LEN + 1];
    assert!(matches!(
        BundleSet::parse_bundle_map(&big),
        Err(BundleError::TooLarge { .. })
    ));
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        Bundle::parse_json(td("example.org"), deep.as_bytes()),
        Err(BundleError::InvalidJson { .. })
    ));
}

// === the Workload API JWKS (WAPI-11) ===

#[test]
fn parse_jwks_reads_keys_without_use_and_ignores_other_uses() {
    let key = JwtKey::generate(KeyKind::P256, "k1");
    let root = Ca::root("example.org");
    let mut plain = ec_jwk(&key, "P-256");
    plain["kid"] = json!("k1");
    let x509 = json!({"use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(&root.der)]});
    let doc = json!({"keys": [plain, x509]});
    let bundle = Bundle::parse_jwks(td("example.org"), doc.to_string().as_bytes()).unwrap();
    assert_eq!(bundle.jwt_authorities(), [key.authority()]);
    assert!(bundle.x509_authorities().is_empty());

    let mut no_kid = ec_jwk(&key, "P-256");
    no_kid["use"] = json!("jwt-svid");
    assert_eq!(
        Bundle::parse_jwks(
            td("example.org"),
            json!({"keys": [no_kid]}).to_string().as_bytes()
        ),
        Err(key_error(0, BundleError::MissingKeyId))
    );
    assert_eq!(
        Bundle::parse_jwks(td("example.org"), b"{}"),
        Err(BundleError::MissingKeys)
    );
}

// === bundle sets and the bundle map (BUN-7, BUN-9) ===

#[test]
fn bundle_set_is_keyed_by_trust_domain() {
    let mut set = BundleSet::new();
    assert!(set.is_empty());
    let mut first = Bundle::new(td("example.org"));
    first.set_sequence(1);
    assert_eq!(set.insert(first.clone()), None);
    assert_eq!(set.insert(Bundle::new(td("b.org"))), None);
    let mut second = Bundle::new(td("example.org"));
    second.set_sequence(2);
    assert_eq!(set.insert(second.clone()), Some(first));
    assert_eq!(set.len(), 2);
    assert_eq!(set.get(&td("example.org")), Some(&second));
    assert_eq!(set.get(&td("other.org")), None);
    let order: Vec<&str> = set.iter().map(|b| b.trust_domain().as_str()).collect();
    assert_eq!(order, ["b.org", "example.org"]);
    assert_eq!(set.remove(&td("example.org")), Some(second));
    assert_eq!(set.remove(&td("example.org")), None);
    assert_eq!(set.len(), 1);
}

#[test]
fn bundle_map_round_trips_without_refresh_hints() {
    let (mut own, _, _) = full_bundle();
    let mut other = Ca::root("other.org").bundle("other.org");
    other.set_sequence(7);
    let set: BundleSet = [own.clone(), other.clone()].into_iter().collect();
    let json = set.to_bundle_map_json();
    let doc: Value = serde_json::from_str(&json).unwrap();
    let domains = doc["trust_domains"].as_object().unwrap();
    assert_eq!(
        domains.keys().collect::<Vec<_>>(),
        ["example.org", "other.org"]
    );
    assert!(domains["example.org"].get("spiffe_refresh_hint").is_none());
    assert_eq!(domains["other.org"]["spiffe_sequence"], json!(7));

    let parsed = BundleSet::parse_bundle_map(json.as_bytes()).unwrap();
    own.set_refresh_hint(None);
    assert_eq!(parsed, [own, other].into_iter().collect());
}

#[test]
fn bundle_map_shape_rules() {
    assert_eq!(
        BundleSet::parse_bundle_map(br#"{"trust_domains":{}}"#).unwrap(),
        BundleSet::new()
    );
    assert_eq!(
        BundleSet::new().to_bundle_map_json(),
        r#"{"trust_domains":{}}"#
    );
    for missing in [
        &br#"{}"#[..],
        br#"{"trust_domains":[]}"#,
        br#"{"trust_domains":null}"#,
    ] {
        assert_eq!(
            BundleSet::parse_bundle_map(missing),
            Err(BundleError::MissingTrustDomains)
        );
    }
    assert_eq!(
        BundleSet::parse_bundle_map(b"[]"),
        Err(BundleError::NotAnObject)
    );
    assert_eq!(
        BundleSet::parse_bundle_map(br#"{"trust_domains":{"Example.org":{"keys":[]}}}"#),
        Err(BundleError::InvalidTrustDomain {
            name: "Example.org".to_owned(),
            source: IdError::TrustDomainChar { found: 'E' }
        })
    );
    assert_eq!(
        BundleSet::parse_bundle_map(br#"{"trust_domains":{"example.org":{}}}"#),
        Err(BundleError::InvalidMapEntry {
            trust_domain: td("example.org"),
            source: Box::new(BundleError::MissingKeys)
        })
    );
}

#[test]
fn bundle_map_refuses_duplicate_trust_domains() {
    let root = Ca::root("example.org");
    let entry = root.bundle("example.org").to_json();
    let empty = r#"{"keys":[]}"#;
    for json in [
        format!(r#"{{"trust_domains":{{"example.org":{entry},"example.org":{empty}}}}}"#),
        format!(r#"{{"trust_domains":{{"example.org":{empty},"spiffe://example.org":{entry}}}}}"#),
    ] {
        assert_eq!(
            BundleSet::parse_bundle_map(json.as_bytes()),
            Err(BundleError::DuplicateTrustDomain {
                trust_domain: td("example.org")
            }),
            "{json}"
        );
    }
    // Distinct trust domains are fine, and `spiffe://<td>` names the same trust domain.
    let json =
        format!(r#"{{"trust_domains":{{"spiffe://example.org":{entry},"other.org":{empty}}}}}"#);
    let set = BundleSet::parse_bundle_map(json.as_bytes()).unwrap();
    assert_eq!(
        set.get(&td("example.org"))
            .unwrap()
            .x509_authorities()
            .len(),
        1
    );
    assert!(set.get(&td("other.org")).unwrap().is_empty());
}
