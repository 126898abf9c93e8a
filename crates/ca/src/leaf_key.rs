//! The public key of an SVID to be minted, taken from a PKCS#10 CSR or a bare
//! SubjectPublicKeyInfo, checked, and re-encoded canonically.
//!
//! From a CSR only the public key is used, after its signature has been verified with that key:
//! the subject, the requested extensions and SANs are ignored, because the registration entry, not
//! the requester, decides what the certificate says (DESIGN.md §3).

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::der::DerWriter;
use crate::{CaError, oid};

/// Largest CSR accepted, in bytes. An RSA-8192 CSR with a few extensions is ~2.5 KiB.
pub const MAX_CSR_LEN: usize = 8 * 1024;
/// Largest SubjectPublicKeyInfo accepted, in bytes. An RSA-8192 key is ~1.1 KiB.
pub const MAX_SPKI_LEN: usize = 2 * 1024;

/// A checked public key for a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeafKey {
    /// Canonical DER SubjectPublicKeyInfo.
    pub(crate) spki: Vec<u8>,
    /// Subject key identifier (see [`key_identifier`]).
    pub(crate) ski: [u8; 20],
}

/// The public key of a PKCS#10 CSR whose signature verified with that key: what
/// [`Ca::mint_x509_svid_for_csr`](crate::Ca::mint_x509_svid_for_csr) signs. Checking a CSR first
/// lets a caller refuse a bad one before it spends anything (a single-use join token) on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr(pub(crate) LeafKey);

/// Kinds of public key an SVID may carry: what go-spiffe and rustls accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    P256,
    P384,
    Ed25519,
    Rsa,
}

// === impl VerifiedCsr ===

impl VerifiedCsr {
    /// Parses a DER CSR and verifies its signature. Only the public key is kept: the subject,
    /// extensions and SANs it asks for are ignored.
    pub fn from_der(der: &[u8]) -> Result<Self, CaError> {
        LeafKey::from_csr_der(der).map(Self)
    }
}

// === impl LeafKey ===

impl LeafKey {
    /// Parses and checks a DER SubjectPublicKeyInfo.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, CaError> {
        if der.len() > MAX_SPKI_LEN {
            return Err(CaError::PublicKeyTooLarge {
                len: der.len(),
                max: MAX_SPKI_LEN,
            });
        }
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| CaError::PublicKeyMalformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::PublicKeyMalformed(
                "trailing bytes after the key".into(),
            ));
        }
        let key = checked_key(&spki)?;
        ParsedPublicKey::new(key.kind.validation_alg(), &key.bits)
            .map_err(|_| CaError::InvalidPublicKey)?;
        Ok(Self::from_checked(&key))
    }

    /// Parses a DER PKCS#10 CSR, verifies its signature with its own key, and keeps only the key.
    pub(crate) fn from_csr_der(der: &[u8]) -> Result<Self, CaError> {
        if der.len() > MAX_CSR_LEN {
            return Err(CaError::CsrTooLarge {
                len: der.len(),
                max: MAX_CSR_LEN,
            });
        }
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CaError::CsrMalformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::CsrMalformed("trailing bytes after the CSR".into()));
        }
        let info = &csr.certification_request_info;
        let key = checked_key(&info.subject_pki)?;
        let alg = csr_verification_alg(key.kind, &csr.signature_algorithm)?;
        if csr.signature_value.unused_bits != 0 {
            return Err(CaError::CsrMalformed(
                "signature bit string has unused bits".into(),
            ));
        }
        // Parsing the key for the CSR's algorithm also validates it (point on the curve, RSA
        // modulus size), so it is parsed once for both.
        ParsedPublicKey::new(alg, &key.bits)
            .map_err(|_| CaError::InvalidPublicKey)?
            .verify_sig(info.raw, &csr.signature_value.data)
            .map_err(|_| CaError::CsrBadSignature)?;
        Ok(Self::from_checked(&key))
    }

    fn from_checked(key: &CheckedKey) -> Self {
        let mut w = DerWriter::with_capacity(key.bits.len() + 32);
        w.sequence(|w| {
            w.raw(key.kind.spki_alg());
            w.bit_string(&key.bits);
        });
        Self {
            spki: w.into_vec(),
            ski: key_identifier(&key.bits),
        }
    }
}

/// A key whose type is supported and whose bits have the right shape for it; the callers
/// complete the validation with aws-lc (point on the curve, RSA modulus 2048–8192 bits).
struct CheckedKey {
    kind: KeyKind,
    bits: Vec<u8>,
}

fn checked_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<CheckedKey, CaError> {
    let alg = &spki.algorithm;
    let params = alg.parameters.as_ref();
    let kind = match alg.algorithm.as_bytes() {
        oid::OID_EC_PUBLIC_KEY => {
            let curve = params
                .filter(|p| p.tag() == x509_parser::der_parser::asn1_rs::Tag::Oid)
                .map(|p| p.data)
                .ok_or(CaError::UnsupportedKeyType)?;
            match curve {
                oid::OID_P256 => KeyKind::P256,
                oid::OID_P384 => KeyKind::P384,
                _ => return Err(CaError::UnsupportedKeyType),
            }
        }
        oid::OID_ED25519 if params.is_none() => KeyKind::Ed25519,
        oid::OID_RSA_ENCRYPTION
            if params.is_none_or(|p| {
                p.tag() == x509_parser::der_parser::asn1_rs::Tag::Null && p.data.is_empty()
            }) =>
        {
            KeyKind::Rsa
        }
        _ => return Err(CaError::UnsupportedKeyType),
    };
    let bit_string = &spki.subject_public_key;
    if bit_string.unused_bits != 0 {
        return Err(CaError::PublicKeyMalformed(
            "key bit string has unused bits".into(),
        ));
    }
    let bits: &[u8] = &bit_string.data;
    // Compressed EC points are refused: Go's crypto/x509, and so go-spiffe, cannot read them.
    let expected_len = match kind {
        KeyKind::P256 => Some(65),
        KeyKind::P384 => Some(97),
        KeyKind::Ed25519 => Some(32),
        KeyKind::Rsa => None,
    };
    if matches!(kind, KeyKind::P256 | KeyKind::P384) && bits.first() != Some(&0x04) {
        return Err(CaError::UnsupportedKeyType);
    }
    if expected_len.is_some_and(|n| n != bits.len()) {
        return Err(CaError::InvalidPublicKey);
    }
    Ok(CheckedKey {
        kind,
        bits: bits.to_vec(),
    })
}

fn csr_verification_alg(
    kind: KeyKind,
    alg: &AlgorithmIdentifier<'_>,
) -> Result<&'static dyn VerificationAlgorithm, CaError> {
    let unsupported = Err(CaError::CsrUnsupportedSignatureAlgorithm);
    let a: &'static dyn VerificationAlgorithm = match (kind, alg.algorithm.as_bytes()) {
        (KeyKind::P256, oid::OID_ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
        (KeyKind::P256, oid::OID_ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
        (KeyKind::P384, oid::OID_ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
        (KeyKind::P384, oid::OID_ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
        (KeyKind::Ed25519, oid::OID_ED25519) => &signature::ED25519,
        (KeyKind::Rsa, oid::OID_RSA_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (KeyKind::Rsa, oid::OID_RSA_SHA384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (KeyKind::Rsa, oid::OID_RSA_SHA512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => return unsupported,
    };
    Ok(a)
}

impl KeyKind {
    fn spki_alg(self) -> &'static [u8] {
        match self {
            Self::P256 => oid::SPKI_ALG_P256,
            Self::P384 => oid::SPKI_ALG_P384,
            Self::Ed25519 => oid::SPKI_ALG_ED25519,
            Self::Rsa => oid::SPKI_ALG_RSA,
        }
    }

    fn validation_alg(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::P384 => &signature::ECDSA_P384_SHA384_ASN1,
            Self::Ed25519 => &signature::ED25519,
            Self::Rsa => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

/// A key identifier: SHA-256 of the subjectPublicKey bits, truncated to 160 bits
/// (RFC 7093 §2, method 1).
pub(crate) fn key_identifier(public_key_bits: &[u8]) -> [u8; 20] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key_bits);
    let mut id = [0u8; 20];
    id.copy_from_slice(&digest.as_ref()[..20]);
    id
}
