//! The CA's own signing keys: EC P-256 (default) or P-384, held as aws-lc-rs key pairs.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CaError;

/// The key algorithm of CA and JWT signing keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// EC P-256; X.509 signatures use ecdsa-with-SHA256, JWTs use ES256.
    #[default]
    EcP256,
    /// EC P-384; X.509 signatures use ecdsa-with-SHA384, JWTs use ES384.
    EcP384,
}

/// A private key, PKCS#8 DER-encoded. Zeroized on drop; `Debug` prints `…`.
#[derive(Clone)]
pub struct Pkcs8Der(Zeroizing<Vec<u8>>);

/// A CA or JWT signing key. The aws-lc key objects are freed by aws-lc, which clears memory it
/// frees; this type never exposes or prints the private scalar.
pub struct PrivateKey {
    key_type: KeyType,
    /// Produces ASN.1 (DER) ECDSA signatures, as X.509 wants.
    x509: EcdsaKeyPair,
    /// Produces fixed-width `r‖s` ECDSA signatures, as JWS wants.
    jws: EcdsaKeyPair,
    /// The public key as a DER SubjectPublicKeyInfo.
    spki: Vec<u8>,
}

// === impl KeyType ===

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
        }
    }

    /// The JWS `alg` of signatures made with this key type.
    pub fn jws_alg(self) -> &'static str {
        match self {
            Self::EcP256 => "ES256",
            Self::EcP384 => "ES384",
        }
    }

    fn x509_alg(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Self::EcP256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::EcP384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    fn jws_signing_alg(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Self::EcP256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::EcP384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        }
    }

    /// The DER AlgorithmIdentifier of certificate signatures made with this key type.
    pub(crate) fn signature_algorithm_der(self) -> &'static [u8] {
        match self {
            Self::EcP256 => crate::oid::ALG_ECDSA_SHA256,
            Self::EcP384 => crate::oid::ALG_ECDSA_SHA384,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec-p256" => Ok(Self::EcP256),
            "ec-p384" => Ok(Self::EcP384),
            other => Err(CaError::Config(format!(
                "unknown key type {other:?}; use ec-p256 or ec-p384"
            ))),
        }
    }
}

// === impl Pkcs8Der ===

impl Pkcs8Der {
    pub fn new(der: Vec<u8>) -> Self {
        Self(Zeroizing::new(der))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pkcs8Der {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs8Der(…)")
    }
}

// === impl PrivateKey ===

impl PrivateKey {
    /// Generates a fresh key; returns it with its PKCS#8 encoding for storage.
    pub fn generate(key_type: KeyType) -> Result<(Self, Pkcs8Der), CaError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(key_type.x509_alg(), &rng)
            .map_err(|_| CaError::KeyGeneration)?;
        let pkcs8 = Pkcs8Der::new(doc.as_ref().to_vec());
        let key = Self::from_pkcs8_as(key_type, &pkcs8).ok_or(CaError::KeyGeneration)?;
        Ok((key, pkcs8))
    }

    /// Loads a PKCS#8 EC key, P-256 or P-384; `None` if it is neither.
    pub fn from_pkcs8(pkcs8: &Pkcs8Der) -> Option<Self> {
        Self::from_pkcs8_as(KeyType::EcP256, pkcs8)
            .or_else(|| Self::from_pkcs8_as(KeyType::EcP384, pkcs8))
    }

    fn from_pkcs8_as(key_type: KeyType, pkcs8: &Pkcs8Der) -> Option<Self> {
        let x509 = EcdsaKeyPair::from_pkcs8(key_type.x509_alg(), pkcs8.as_bytes()).ok()?;
        let jws = EcdsaKeyPair::from_pkcs8(key_type.jws_signing_alg(), pkcs8.as_bytes()).ok()?;
        let spki = x509.public_key().as_der().ok()?.as_ref().to_vec();
        Some(Self {
            key_type,
            x509,
            jws,
            spki,
        })
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key's bits: the uncompressed EC point.
    pub(crate) fn public_key_bits(&self) -> &[u8] {
        self.x509.public_key().as_ref()
    }

    /// An ASN.1 ECDSA signature over `msg`, for certificates.
    pub(crate) fn sign_x509(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        let rng = SystemRandom::new();
        let sig = self.x509.sign(&rng, msg).map_err(|_| CaError::Signing)?;
        Ok(sig.as_ref().to_vec())
    }

    /// A fixed-width ECDSA signature over `msg`, for JWS.
    pub(crate) fn sign_jws(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        let rng = SystemRandom::new();
        let sig = self.jws.sign(&rng, msg).map_err(|_| CaError::Signing)?;
        Ok(sig.as_ref().to_vec())
    }

    /// The stable JWT `kid` of this key (see [`key_id_for_spki`]).
    pub fn jwt_key_id(&self) -> String {
        key_id_for_spki(&self.spki)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_type", &self.key_type)
            .field("private", &"…")
            .finish()
    }
}

/// The `kid` of a JWT signing key: the first 32 characters of the base64url SHA-256 of its
/// SubjectPublicKeyInfo (192 bits). Stable across restarts, unique per key, and reveals nothing
/// that the public key in the bundle does not.
pub fn key_id_for_spki(spki_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
    let mut kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    kid.truncate(32);
    kid
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn debug_never_prints_key_bytes() {
        let (key, pkcs8) = PrivateKey::generate(KeyType::EcP256).unwrap();
        assert_eq!(format!("{pkcs8:?}"), "Pkcs8Der(…)");
        let dbg = format!("{key:?}");
        assert!(dbg.contains('…'), "{dbg}");
        assert!(!dbg.contains("x509") && !dbg.contains("jws"), "{dbg}");
    }

    #[test]
    fn pkcs8_round_trip_detects_the_curve() {
        for kt in [KeyType::EcP256, KeyType::EcP384] {
            let (key, pkcs8) = PrivateKey::generate(kt).unwrap();
            let again = PrivateKey::from_pkcs8(&pkcs8).unwrap();
            assert_eq!(again.key_type(), kt);
            assert_eq!(again.public_key_der(), key.public_key_der());
            assert_eq!(again.jwt_key_id(), key.jwt_key_id());
            assert_eq!(key.jwt_key_id().len(), 32);
        }
        assert!(PrivateKey::from_pkcs8(&Pkcs8Der::new(vec![0x30, 0x00])).is_none());
    }

    #[test]
    fn key_type_round_trips_through_strings() {
        for kt in [KeyType::EcP256, KeyType::EcP384] {
            assert_eq!(kt.to_string().parse::<KeyType>().unwrap(), kt);
        }
        assert!("rsa".parse::<KeyType>().is_err());
    }
}
