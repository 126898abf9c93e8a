#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair as _};

use super::*;

fn spki_of(der: &[u8]) -> SubjectPublicKeyInfo<'_> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der).unwrap();
    assert!(rest.is_empty());
    spki
}

fn ec_spki(alg: &'static sig::EcdsaSigningAlgorithm) -> Vec<u8> {
    let key = EcdsaKeyPair::generate(alg).unwrap();
    key.public_key().as_der().unwrap().as_ref().to_vec()
}

// === DER writing ===

#[test]
fn der_lengths_use_the_short_and_long_forms() {
    assert_eq!(der_tlv(0x04, &[]), [0x04, 0x00]);
    assert_eq!(der_tlv(0x04, &[7; 127])[..2], [0x04, 0x7f]);
    assert_eq!(der_tlv(0x04, &[7; 128])[..3], [0x04, 0x81, 0x80]);
    assert_eq!(der_tlv(0x04, &[7; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    assert_eq!(der_tlv(0x04, &[7; 300]).len(), 304);
}

#[test]
fn der_integers_are_minimal_and_non_negative() {
    assert_eq!(der_uint(&[]), [0x02, 0x01, 0x00]);
    assert_eq!(der_uint(&[0, 0]), [0x02, 0x01, 0x00]);
    assert_eq!(der_uint(&[0, 0, 1]), [0x02, 0x01, 0x01]);
    assert_eq!(der_uint(&[0x7f]), [0x02, 0x01, 0x7f]);
    assert_eq!(der_uint(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
    assert_eq!(
        der_uint(&[0x01, 0x00, 0x01]),
        [0x02, 0x03, 0x01, 0x00, 0x01]
    );
}

#[test]
fn bit_length_ignores_leading_zero_bits() {
    assert_eq!(bit_len(&[]), 0);
    assert_eq!(bit_len(&[1]), 1);
    assert_eq!(bit_len(&[0x80, 0]), 16);
    assert_eq!(bit_len(&[0x7f; 256]), 2047);
}

// === SubjectPublicKeyInfo <-> JWK ===

#[test]
fn ec_keys_round_trip_to_the_same_der() {
    for (alg, curve) in [
        (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, Curve::P256),
        (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, Curve::P384),
        (&sig::ECDSA_P521_SHA512_FIXED_SIGNING, Curve::P521),
    ] {
        let der = ec_spki(alg);
        let jwk = PublicJwk::from_spki(&spki_of(&der)).unwrap();
        assert!(matches!(jwk, PublicJwk::Ec { curve: c, .. } if c == curve));
        assert_eq!(jwk.to_spki_der(), der, "{curve:?}");
        // And through the JWK members.
        let Value::Object(members) = Value::Object(jwk.members()) else {
            unreachable!()
        };
        assert_eq!(PublicJwk::from_jwk(&members).unwrap(), Some(jwk));
    }
}

#[test]
fn rsa_keys_round_trip_to_the_same_der() {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = key.public_key().as_der().unwrap().as_ref().to_vec();
    let jwk = PublicJwk::from_spki(&spki_of(&der)).unwrap();
    let PublicJwk::Rsa { n, e } = &jwk else {
        panic!("not RSA: {jwk:?}")
    };
    assert_eq!(n.len(), 256);
    assert_eq!(e, &[1, 0, 1]);
    assert_eq!(jwk.to_spki_der(), der);
    assert_eq!(PublicJwk::from_jwk(&jwk.members()).unwrap(), Some(jwk));
}

#[test]
fn ed25519_keys_round_trip_to_the_same_der() {
    let key = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let der = key.public_key().as_der().unwrap().as_ref().to_vec();
    let jwk = PublicJwk::from_spki(&spki_of(&der)).unwrap();
    assert!(matches!(&jwk, PublicJwk::Ed25519 { x } if x.len() == 32));
    assert_eq!(jwk.to_spki_der(), der);
    assert_eq!(jwk.members()["kty"], "OKP");
}

#[test]
fn unsupported_and_malformed_keys_are_refused() {
    // secp256k1: an EC key on a curve lanyard does not take.
    let k1_oid = [0x2b, 0x81, 0x04, 0x00, 0x0a];
    let algorithm = [der_oid(OID_EC_PUBLIC_KEY), der_oid(&k1_oid)].concat();
    let point = [&[0x04][..], &[1; 64]].concat();
    let spki = der_tlv(
        0x30,
        &[
            der_tlv(0x30, &algorithm),
            der_tlv(0x03, &[&[0][..], &point].concat()),
        ]
        .concat(),
    );
    assert!(matches!(
        PublicJwk::from_spki(&spki_of(&spki)),
        Err(BundleError::UnsupportedPublicKey { .. })
    ));

    // A compressed P-256 point.
    let compressed = [&[0x02][..], &[1; 32]].concat();
    let algorithm = [der_oid(OID_EC_PUBLIC_KEY), der_oid(OID_P256)].concat();
    let spki = der_tlv(
        0x30,
        &[
            der_tlv(0x30, &algorithm),
            der_tlv(0x03, &[&[0][..], &compressed].concat()),
        ]
        .concat(),
    );
    assert!(matches!(
        PublicJwk::from_spki(&spki_of(&spki)),
        Err(BundleError::UnsupportedPublicKey { .. })
    ));

    // An EC key with no named curve.
    let spki = der_tlv(
        0x30,
        &[
            der_tlv(0x30, &der_oid(OID_EC_PUBLIC_KEY)),
            der_tlv(0x03, &[&[0][..], &point].concat()),
        ]
        .concat(),
    );
    assert!(matches!(
        PublicJwk::from_spki(&spki_of(&spki)),
        Err(BundleError::InvalidPublicKey { .. })
    ));

    // DSA.
    let dsa_oid = [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
    let spki = der_tlv(
        0x30,
        &[
            der_tlv(0x30, &der_oid(&dsa_oid)),
            der_tlv(0x03, &[0, 0x02, 0x01, 0x05]),
        ]
        .concat(),
    );
    assert!(matches!(
        PublicJwk::from_spki(&spki_of(&spki)),
        Err(BundleError::UnsupportedPublicKey { .. })
    ));
}

#[test]
fn rsa_jwt_keys_outside_2048_to_8192_bits_are_refused() {
    for n_len in [128usize, 255, 1025] {
        let mut n = vec![0xc5; n_len];
        n[n_len - 1] |= 1;
        let der = PublicJwk::Rsa {
            n,
            e: vec![1, 0, 1],
        }
        .to_spki_der();
        assert!(
            matches!(
                JwtAuthority::new("k", der),
                Err(BundleError::UnsupportedPublicKey { .. })
            ),
            "{n_len} bytes"
        );
    }
}

#[test]
fn jwk_members_for_unused_key_types_are_ignored() {
    let okp = json_object(r#"{"kty":"OKP","crv":"Ed25519","x":"AA"}"#);
    assert_eq!(PublicJwk::from_jwk(&okp).unwrap(), None);
    let k1 = json_object(r#"{"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"}"#);
    assert_eq!(PublicJwk::from_jwk(&k1).unwrap(), None);
    let no_kty = json_object(r#"{"crv":"P-256"}"#);
    assert_eq!(PublicJwk::from_jwk(&no_kty).unwrap(), None);
}

#[test]
fn rsa_jwk_members_tolerate_leading_zeros() {
    let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = key.public_key().as_der().unwrap().as_ref().to_vec();
    let PublicJwk::Rsa { n, e } = PublicJwk::from_spki(&spki_of(&der)).unwrap() else {
        unreachable!()
    };
    let padded = serde_json::json!({
        "kty": "RSA",
        "n": BASE64URL_LENIENT.encode([&[0][..], &n].concat()),
        "e": BASE64URL_LENIENT.encode([&[0, 0][..], &e].concat()),
    });
    let jwk = PublicJwk::from_jwk(padded.as_object().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(jwk.to_spki_der(), der);
}

fn json_object(s: &str) -> Map<String, Value> {
    serde_json::from_str(s).unwrap()
}

// === JSON helpers ===

#[test]
fn object_entries_keep_duplicates_in_order() {
    let entries: ObjectEntries = serde_json::from_str(r#"{"a":1,"b":2,"a":3}"#).unwrap();
    let names: Vec<&str> = entries.0.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "a"]);
    assert_eq!(entries.first_duplicate(), Some("a"));
    let entries: ObjectEntries = serde_json::from_str(r#"{"a":{"a":1},"b":2}"#).unwrap();
    assert_eq!(
        entries.first_duplicate(),
        None,
        "nested objects are separate"
    );
    assert!(serde_json::from_str::<ObjectEntries>("[1]").is_err());
}

#[test]
fn pem_lines_are_64_characters() {
    let mut pem = String::new();
    write_pem(&mut pem, &[0xab; 100]);
    let lines: Vec<&str> = pem.lines().collect();
    assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
    // 100 bytes are 136 base64 characters.
    assert_eq!(lines[1].len(), 64);
    assert_eq!(lines[2].len(), 64);
    assert_eq!(lines[3].len(), 8);
    assert_eq!(lines[4], "-----END CERTIFICATE-----");
    assert!(pem.ends_with('\n'));
}

// === Debug ===

#[test]
fn debug_output_names_keys_without_dumping_bytes() {
    let der = ec_spki(&sig::ECDSA_P256_SHA256_FIXED_SIGNING);
    let authority = JwtAuthority::new("k1", der).unwrap();
    assert_eq!(
        format!("{authority:?}"),
        r#"JwtAuthority { key_id: "k1", key_type: EcP256 }"#
    );
}
