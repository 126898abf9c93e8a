//! Certificates, keys and tokens built for the bundle, X509-SVID and JWT-SVID tests.
//!
//! Certificates come from rcgen, tokens from jsonwebtoken or, where a test needs a header or an
//! algorithm jsonwebtoken will not produce (ES512, extra parameters, `alg: none`), are assembled
//! here and signed with aws-lc-rs.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support shared by several test crates; each uses a part of it"
)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, RsaEncoding, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use lanyard_core::{Bundle, JwtAuthority, TrustDomain, X509Authority};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

/// The time every test verifies at: 2025-01-01T00:00:00Z.
pub const T0_UNIX: u64 = 1_735_689_600;

pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0_UNIX)
}

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

/// Sets a certificate's validity period (whole seconds).
pub fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + not_before.duration_since(UNIX_EPOCH).unwrap();
    params.not_after = epoch + not_after.duration_since(UNIX_EPOCH).unwrap();
}

/// A uri SAN.
pub fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// A signing CA: its certificate and an rcgen issuer holding its key.
pub struct Ca {
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// Parameters of a CA as SPIRE makes them: `cA=true`, keyCertSign|cRLSign, URI SAN
/// `spiffe://<td>`, valid a day before to a year after t0. Each call names a different CA, so
/// that path building never confuses two of them.
pub fn ca_params(trust_domain: &str) -> CertificateParams {
    static SERIAL: AtomicUsize = AtomicUsize::new(1);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "SPIFFE");
    dn.push(DnType::CommonName, format!("CA {serial} {trust_domain}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![uri(&format!("spiffe://{trust_domain}"))];
    set_validity(
        &mut params,
        t0() - Duration::from_secs(86_400),
        t0() + Duration::from_secs(365 * 86_400),
    );
    params.use_authority_key_identifier_extension = true;
    params
}

/// Parameters of a leaf as SPIRE makes them: `cA=false`, digitalSignature|keyEncipherment|
/// keyAgreement, EKU serverAuth+clientAuth, one URI SAN, valid an hour either side of t0.
pub fn leaf_params(id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "SPIRE");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![uri(id)];
    set_validity(
        &mut params,
        t0() - Duration::from_secs(3600),
        t0() + Duration::from_secs(3600),
    );
    params.use_authority_key_identifier_extension = true;
    params
}

impl Ca {
    /// A self-signed P-256 root for `trust_domain`.
    pub fn root(trust_domain: &str) -> Self {
        Self::self_signed(ca_params(trust_domain), &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    pub fn self_signed(params: CertificateParams, alg: &'static rcgen::SignatureAlgorithm) -> Self {
        let key = KeyPair::generate_for(alg).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self {
            der,
            issuer: Issuer::new(params, key),
        }
    }

    /// Another self-signed certificate for this CA's key (a re-issued root), with `params`.
    pub fn reissue(&self, params: &CertificateParams) -> Vec<u8> {
        params
            .self_signed(self.issuer.key())
            .unwrap()
            .der()
            .to_vec()
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, params: CertificateParams) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = params.signed_by(&key, &self.issuer).unwrap().der().to_vec();
        Self {
            der,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate with these parameters and a fresh P-256 key, signed by this CA.
    pub fn sign(&self, params: &CertificateParams) -> Vec<u8> {
        self.sign_with_key(params).0
    }

    /// Like [`Ca::sign`], returning the leaf's PKCS#8 key as well.
    pub fn sign_with_key(&self, params: &CertificateParams) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = params.signed_by(&key, &self.issuer).unwrap().der().to_vec();
        (der, key.serialize_der())
    }

    /// A good leaf for `id`.
    pub fn leaf(&self, id: &str) -> Vec<u8> {
        self.sign(&leaf_params(id))
    }

    pub fn authority(&self) -> X509Authority {
        X509Authority::from_der(self.der.clone()).unwrap()
    }

    /// A bundle with only this CA's certificate.
    pub fn bundle(&self, trust_domain: &str) -> Bundle {
        let mut bundle = Bundle::new(td(trust_domain));
        bundle.add_x509_authority(self.authority());
        bundle
    }
}

// === JWT keys and tokens ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    P384,
    P521,
    Rsa2048,
}

/// A JWT signing key: PKCS#8 private key and DER SubjectPublicKeyInfo.
#[derive(Clone)]
pub struct JwtKey {
    pub kind: KeyKind,
    pub kid: String,
    pub pkcs8: Vec<u8>,
    pub spki: Vec<u8>,
}

fn ec_signing(kind: KeyKind) -> &'static EcdsaSigningAlgorithm {
    match kind {
        KeyKind::P256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        KeyKind::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        KeyKind::P521 => &sig::ECDSA_P521_SHA512_FIXED_SIGNING,
        KeyKind::Rsa2048 => unreachable!("not an EC key"),
    }
}

/// RSA key generation is slow in debug builds: every test shares a few keys.
fn rsa_pool() -> &'static [(Vec<u8>, Vec<u8>)] {
    static POOL: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..2)
            .map(|_| {
                let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
                let pkcs8: Pkcs8V1Der<'_> = key.as_der().unwrap();
                let spki = key.public_key().as_der().unwrap();
                (pkcs8.as_ref().to_vec(), spki.as_ref().to_vec())
            })
            .collect()
    })
}

impl JwtKey {
    /// A fresh EC key, or one of the shared RSA keys (`rsa_index` 0 or 1).
    pub fn generate(kind: KeyKind, kid: &str) -> Self {
        Self::generate_nth(kind, kid, 0)
    }

    pub fn generate_nth(kind: KeyKind, kid: &str, rsa_index: usize) -> Self {
        let (pkcs8, spki) = match kind {
            KeyKind::Rsa2048 => rsa_pool()[rsa_index].clone(),
            _ => {
                let key = EcdsaKeyPair::generate(ec_signing(kind)).unwrap();
                let pkcs8 = key.to_pkcs8v1().unwrap().as_ref().to_vec();
                let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
                (pkcs8, spki)
            }
        };
        Self {
            kind,
            kid: kid.to_owned(),
            pkcs8,
            spki,
        }
    }

    pub fn authority(&self) -> JwtAuthority {
        JwtAuthority::new(self.kid.clone(), self.spki.clone()).unwrap()
    }

    /// The natural algorithm for the key.
    pub fn default_alg(&self) -> &'static str {
        match self.kind {
            KeyKind::P256 => "ES256",
            KeyKind::P384 => "ES384",
            KeyKind::P521 => "ES512",
            KeyKind::Rsa2048 => "RS256",
        }
    }

    /// Signs `signing_input` for `alg` (which must suit the key).
    pub fn sign(&self, alg: &str, signing_input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        if self.kind == KeyKind::Rsa2048 {
            let encoding: &'static dyn RsaEncoding = match alg {
                "RS256" => &sig::RSA_PKCS1_SHA256,
                "RS384" => &sig::RSA_PKCS1_SHA384,
                "RS512" => &sig::RSA_PKCS1_SHA512,
                "PS256" => &sig::RSA_PSS_SHA256,
                "PS384" => &sig::RSA_PSS_SHA384,
                "PS512" => &sig::RSA_PSS_SHA512,
                other => panic!("{other} is not an RSA algorithm"),
            };
            let key = RsaKeyPair::from_pkcs8(&self.pkcs8).unwrap();
            let mut signature = vec![0; key.public_modulus_len()];
            key.sign(encoding, &rng, signing_input, &mut signature)
                .unwrap();
            signature
        } else {
            let key = EcdsaKeyPair::from_pkcs8(ec_signing(self.kind), &self.pkcs8).unwrap();
            key.sign(&rng, signing_input).unwrap().as_ref().to_vec()
        }
    }

    /// A jsonwebtoken encoding key for this key.
    pub fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        match self.kind {
            KeyKind::Rsa2048 => {
                // jsonwebtoken reads RSA DER as PKCS#1 only; its PEM reader unwraps PKCS#8.
                let pem = format!(
                    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                    STANDARD.encode(&self.pkcs8)
                );
                jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
            }
            _ => jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        }
    }
}

/// Claims of a good token for `sub` and `aud`, expiring 5 minutes after t0.
pub fn claims(sub: &str, aud: &str) -> Value {
    json!({
        "sub": sub,
        "aud": [aud],
        "exp": T0_UNIX + 300,
        "iat": T0_UNIX - 10,
    })
}

/// A compact JWS of `header` and `claims` (both serialized as given), signed with `key` for
/// `alg`.
pub fn hand_token(key: &JwtKey, alg: &str, header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(alg, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A compact JWS with raw header and claims bytes (for duplicate members and other JSON that
/// `serde_json::Value` cannot express).
pub fn hand_token_raw(key: &JwtKey, alg: &str, header: &str, claims: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = key.sign(alg, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A standard token: `{"alg", "kid", "typ": "JWT"}`, signed with the key's natural algorithm.
pub fn token(key: &JwtKey, claims: &Value) -> String {
    let alg = key.default_alg();
    hand_token(
        key,
        alg,
        &json!({"alg": alg, "kid": key.kid, "typ": "JWT"}),
        claims,
    )
}

/// A token made by jsonwebtoken, an implementation nobody here wrote.
pub fn jsonwebtoken_token(key: &JwtKey, alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding_key()).unwrap()
}

/// A bundle with these JWT keys.
pub fn jwt_bundle(trust_domain: &str, keys: &[&JwtKey]) -> Bundle {
    let mut bundle = Bundle::new(td(trust_domain));
    for key in keys {
        assert!(bundle.add_jwt_authority(key.authority()));
    }
    bundle
}
