//! Bad CSRs and public keys: each gives a typed error, none panics.

use lanyard_ca::{CaError, MAX_CSR_LEN, MAX_SPKI_LEN};

use crate::support::*;

#[test]
fn truncated_csr_is_malformed() {
    let ca = new_ca(&clock());
    let csr = WorkloadKey::p256().csr();
    for len in [0, 1, 10, csr.len() / 2, csr.len() - 1] {
        let err = ca
            .mint_x509_svid_from_csr(&csr[..len], &request("/w"))
            .unwrap_err();
        assert!(matches!(err, CaError::CsrMalformed(_)), "len {len}: {err}");
    }
}

#[test]
fn csr_with_trailing_bytes_is_malformed() {
    let ca = new_ca(&clock());
    let mut csr = WorkloadKey::p256().csr();
    csr.push(0);
    let err = ca
        .mint_x509_svid_from_csr(&csr, &request("/w"))
        .unwrap_err();
    assert!(matches!(err, CaError::CsrMalformed(_)), "{err}");
}

#[test]
fn csr_with_bad_signature_is_refused() {
    let ca = new_ca(&clock());
    let mut csr = WorkloadKey::p256().csr();
    // The last byte belongs to the signature's `s` integer: flipping it keeps the DER valid.
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    let err = ca
        .mint_x509_svid_from_csr(&csr, &request("/w"))
        .unwrap_err();
    assert!(matches!(err, CaError::CsrBadSignature), "{err}");

    // A changed subject (inside the signed part) also breaks the signature.
    let mut csr = WorkloadKey::p256().csr();
    let pos = csr
        .windows(b"requested-cn".len())
        .position(|w| w == b"requested-cn")
        .unwrap();
    csr[pos] = b'R';
    let err = ca
        .mint_x509_svid_from_csr(&csr, &request("/w"))
        .unwrap_err();
    assert!(matches!(err, CaError::CsrBadSignature), "{err}");
}

#[test]
fn csr_with_unsupported_key_type_is_refused() {
    let ca = new_ca(&clock());
    let key = WorkloadKey::new(&rcgen::PKCS_ECDSA_P521_SHA512);
    let err = ca
        .mint_x509_svid_from_csr(&key.csr(), &request("/w"))
        .unwrap_err();
    assert!(matches!(err, CaError::UnsupportedKeyType), "{err}");
    let err = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap_err();
    assert!(matches!(err, CaError::UnsupportedKeyType), "{err}");
}

#[test]
fn oversized_inputs_are_refused_before_parsing() {
    let ca = new_ca(&clock());
    let huge = vec![0x30; MAX_CSR_LEN + 1];
    let err = ca
        .mint_x509_svid_from_csr(&huge, &request("/w"))
        .unwrap_err();
    assert!(
        matches!(err, CaError::CsrTooLarge { len, max } if len == MAX_CSR_LEN + 1 && max == MAX_CSR_LEN),
        "{err}"
    );
    let huge = vec![0x30; MAX_SPKI_LEN + 1];
    let err = ca.mint_x509_svid(&huge, &request("/w")).unwrap_err();
    assert!(matches!(err, CaError::PublicKeyTooLarge { .. }), "{err}");
}

#[test]
fn rsa_csr_is_accepted() {
    let ca = new_ca(&clock());
    let key_pair =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap();
    let key = WorkloadKey { key_pair };
    let svid = ca
        .mint_x509_svid_from_csr(&key.csr(), &request("/w"))
        .unwrap();
    lanyard_core::verify_x509_svid(&svid.cert_chain, &bundle_set(ca.bundle()), t0()).unwrap();
}

/// A DER SPKI for an EC key with `curve` OID bytes and `point`.
fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let mut alg = vec![0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06];
    alg.push(curve_oid.len() as u8);
    alg.extend_from_slice(curve_oid);
    let mut alg_seq = vec![0x30, alg.len() as u8];
    alg_seq.extend(alg);
    let mut bits = vec![0x03, (point.len() + 1) as u8, 0x00];
    bits.extend_from_slice(point);
    let mut out = vec![0x30, (alg_seq.len() + bits.len()) as u8];
    out.extend(alg_seq);
    out.extend(bits);
    out
}

const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[test]
fn bad_public_keys_get_typed_errors() {
    let ca = new_ca(&clock());
    let good = WorkloadKey::p256().spki();
    // The same key, rebuilt by hand, is accepted (the helper is right).
    let point = &good[good.len() - 65..];
    assert!(
        ca.mint_x509_svid(&ec_spki(P256, point), &request("/w"))
            .is_ok()
    );

    // A point that is not on the curve.
    let mut off_curve = point.to_vec();
    off_curve[64] ^= 0x01;
    let err = ca
        .mint_x509_svid(&ec_spki(P256, &off_curve), &request("/w"))
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidPublicKey), "{err}");

    // A compressed point (Go's crypto/x509 cannot read those).
    let mut compressed = vec![0x02 | (point[64] & 1)];
    compressed.extend_from_slice(&point[1..33]);
    let err = ca
        .mint_x509_svid(&ec_spki(P256, &compressed), &request("/w"))
        .unwrap_err();
    assert!(matches!(err, CaError::UnsupportedKeyType), "{err}");

    // An unknown curve (secp256k1).
    let err = ca
        .mint_x509_svid(
            &ec_spki(&[0x2b, 0x81, 0x04, 0x00, 0x0a], point),
            &request("/w"),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::UnsupportedKeyType), "{err}");

    // X25519 is a key-agreement key, not a signature key.
    let x25519 = [
        &[
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
        ][..],
        &[7u8; 32][..],
    ]
    .concat();
    let err = ca.mint_x509_svid(&x25519, &request("/w")).unwrap_err();
    assert!(matches!(err, CaError::UnsupportedKeyType), "{err}");

    // Not DER at all, and DER with trailing bytes.
    let err = ca.mint_x509_svid(b"hello", &request("/w")).unwrap_err();
    assert!(matches!(err, CaError::PublicKeyMalformed(_)), "{err}");
    let mut trailing = good.clone();
    trailing.push(0);
    let err = ca.mint_x509_svid(&trailing, &request("/w")).unwrap_err();
    assert!(matches!(err, CaError::PublicKeyMalformed(_)), "{err}");
}

#[test]
fn every_single_byte_corruption_of_a_csr_is_handled() {
    let ca = new_ca(&clock());
    let key = WorkloadKey::p256();
    let csr = key.csr();
    for i in 0..csr.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = csr.clone();
            bad[i] ^= flip;
            // Either refused with an error, or (a flip that keeps an equivalent valid CSR)
            // certified with exactly the CSR's key; never a panic.
            if let Ok(svid) = ca.mint_x509_svid_from_csr(&bad, &request("/w")) {
                let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf_der()).unwrap();
                assert_eq!(leaf.public_key().raw, key.spki().as_slice(), "byte {i}");
            }
        }
    }
}
