//! Trust bundles: the X.509 roots and JWT public keys of one trust domain, and the SPIFFE bundle
//! JSON format (SPIFFE Trust Domain and Bundle §4) they travel in.
//!
//! Reading is lenient where the spec says to ignore (a JWK with an unknown `kty`, no `use` or an
//! unknown `use`; an `x509-svid` key whose `x5c` is missing or empty) and strict everywhere else:
//! a key that claims to be usable but is malformed fails the whole bundle, as go-spiffe does, so
//! that a typo never silently removes an authority. Writing is deterministic: the same bundle
//! always serializes to the same bytes.
//!
//! Mutating a bundle never changes its `spiffe_sequence`: the owner of the bundle (the CA) decides
//! when a change is published and bumps the sequence with [`Bundle::set_sequence`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P521_SHA512_FIXED, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::{IdError, TrustDomain};

/// Largest SPIFFE bundle document [`Bundle::parse_json`] and [`Bundle::parse_jwks`] read. Real
/// bundles are a few KiB; the bound keeps a hostile federation peer from exhausting memory.
pub const MAX_BUNDLE_JSON_LEN: usize = 4 * 1024 * 1024;
/// Largest bundle map document [`BundleSet::parse_bundle_map`] reads.
pub const MAX_BUNDLE_MAP_JSON_LEN: usize = 16 * 1024 * 1024;

/// `use` of an X.509 authority JWK (X509-SVID §6.1).
const USE_X509_SVID: &str = "x509-svid";
/// `use` of a JWT authority JWK (JWT-SVID §6.1).
const USE_JWT_SVID: &str = "jwt-svid";

// DER contents of the object identifiers used in SubjectPublicKeyInfo.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22]; // 1.3.132.0.34
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23]; // 1.3.132.0.35
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]; // 1.2.840.113549.1.1.1
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70]; // 1.3.101.112

/// base64url without padding, as JWS and JWK use it. Decoding accepts padding too: some
/// producers pad JWK members, and refusing them gains nothing.
pub(crate) const BASE64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Standard base64 with padding, as `x5c` uses it (RFC 7517 §4.7). Decoding accepts a missing
/// pad for the same reason as above.
const BASE64_STD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a bundle, an authority or a bundle map was refused. Each variant names one cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("document is {len} bytes long; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("document is not valid JSON: {reason}")]
    InvalidJson { reason: String },
    #[error("document is not a JSON object")]
    NotAnObject,
    #[error("bundle has no `keys` member (it is required, and may be empty)")]
    MissingKeys,
    #[error("`keys` is not an array")]
    KeysNotArray,
    #[error("`spiffe_sequence` is not an unsigned 64-bit integer")]
    InvalidSequence,
    #[error("`spiffe_refresh_hint` is not a non-negative integer number of seconds")]
    InvalidRefreshHint,
    #[error("key {index} of `keys` is invalid")]
    InvalidKey {
        index: usize,
        #[source]
        source: Box<Self>,
    },
    #[error("JWK is not a JSON object")]
    KeyNotObject,
    #[error("`x5c` is malformed: {reason}")]
    InvalidX5c { reason: &'static str },
    #[error("JWK member `{member}` is missing or malformed")]
    InvalidJwkMember { member: &'static str },
    #[error("a `jwt-svid` JWK has no `kid`")]
    MissingKeyId,
    #[error("key ID is empty")]
    EmptyKeyId,
    #[error("key ID {key_id:?} appears more than once")]
    DuplicateKeyId { key_id: String },
    #[error("not a DER X.509 certificate: {reason}")]
    InvalidCertificate { reason: String },
    #[error("{len} bytes follow the DER structure")]
    TrailingData { len: usize },
    #[error("not a DER SubjectPublicKeyInfo: {reason}")]
    InvalidPublicKey { reason: String },
    #[error("unsupported public key: {reason}")]
    UnsupportedPublicKey { reason: &'static str },
    #[error("bundle map has no `trust_domains` object")]
    MissingTrustDomains,
    #[error("bundle map key {name:?} is not a trust domain")]
    InvalidTrustDomain {
        name: String,
        #[source]
        source: IdError,
    },
    #[error("trust domain {trust_domain} appears more than once in the bundle map")]
    DuplicateTrustDomain { trust_domain: TrustDomain },
    #[error("bundle for trust domain {trust_domain} in the bundle map is invalid")]
    InvalidMapEntry {
        trust_domain: TrustDomain,
        #[source]
        source: Box<Self>,
    },
}

/// The kind of a JWT authority's key, which decides the JWS algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtKeyType {
    /// ECDSA on P-256 (`ES256`).
    EcP256,
    /// ECDSA on P-384 (`ES384`).
    EcP384,
    /// ECDSA on P-521 (`ES512`).
    EcP521,
    /// RSA, at least 2048 bits (`RS*`, `PS*`).
    Rsa,
}

/// One X.509 authority: a CA certificate, DER-encoded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct X509Authority {
    der: Vec<u8>,
    /// The certificate's public key as JWK members, kept so that writing a bundle cannot fail.
    jwk: PublicJwk,
}

/// One JWT authority: a public key and the `kid` that tokens name it by.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JwtAuthority {
    key_id: String,
    /// The public key as a DER SubjectPublicKeyInfo.
    public_key_der: Vec<u8>,
    key_type: JwtKeyType,
    jwk: PublicJwk,
}

/// The authorities of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<X509Authority>,
    jwt_authorities: Vec<JwtAuthority>,
    /// `spiffe_sequence`: increases whenever the contents change.
    sequence: u64,
    /// `spiffe_refresh_hint`: how often consumers should fetch the bundle again.
    refresh_hint: Option<Duration>,
}

/// Bundles keyed by trust domain; never merged across trust domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleSet {
    bundles: BTreeMap<TrustDomain, Bundle>,
}

/// The members of a public-key JWK (RFC 7518 §6), as raw big-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PublicJwk {
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Curve {
    P256,
    P384,
    P521,
}

/// Which JWKs a parser keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JwkSetKind {
    /// A SPIFFE bundle: `use` decides, and keys without a known `use` are ignored.
    SpiffeBundle,
    /// The Workload API's JWKS of JWT authorities: keys carry no `use` (as SPIRE sends them), so
    /// a key with no `use` is a JWT authority; any other `use` than `jwt-svid` is ignored.
    JwtAuthorities,
    /// An identity provider's JWKS: keys with no `use` or `use` = `sig` verify tokens; any other
    /// `use` (`enc`) is ignored.
    SigningKeys,
}

// === impl X509Authority ===

impl X509Authority {
    /// Takes one DER certificate. It must parse as an X.509 certificate with nothing after it, and
    /// carry a key that a SPIFFE bundle can describe (EC P-256/P-384/P-521, RSA or Ed25519).
    pub fn from_der(der: Vec<u8>) -> Result<Self, BundleError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
            BundleError::InvalidCertificate {
                reason: e.to_string(),
            }
        })?;
        if !rest.is_empty() {
            return Err(BundleError::TrailingData { len: rest.len() });
        }
        let jwk = PublicJwk::from_spki(cert.public_key())?;
        Ok(Self { der, jwk })
    }

    /// Splits concatenated DER certificates (as the Workload API sends bundles) into authorities.
    pub fn parse_concatenated_der(mut der: &[u8]) -> Result<Vec<Self>, BundleError> {
        let mut authorities = Vec::new();
        while !der.is_empty() {
            let (rest, _) = x509_parser::parse_x509_certificate(der).map_err(|e| {
                BundleError::InvalidCertificate {
                    reason: e.to_string(),
                }
            })?;
            let len = der.len() - rest.len();
            authorities.push(Self::from_der(der[..len].to_vec())?);
            der = rest;
        }
        Ok(authorities)
    }

    /// The certificate, DER-encoded.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate in PEM.
    pub fn pem(&self) -> String {
        let mut pem = String::new();
        write_pem(&mut pem, &self.der);
        pem
    }

    /// The SPIFFE bundle JWK: the key's members, `use` = `x509-svid`, no `kid`, and exactly one
    /// standard-base64 `x5c` (X509-SVID §6.1, SPIFFE.md X509-14).
    fn to_jwk(&self) -> Value {
        let mut jwk = self.jwk.members();
        jwk.insert("use".into(), USE_X509_SVID.into());
        jwk.insert(
            "x5c".into(),
            Value::Array(vec![BASE64_STD_LENIENT.encode(&self.der).into()]),
        );
        Value::Object(jwk)
    }
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Authority")
            .field("der_len", &self.der.len())
            .field("key", &self.jwk.kind_name())
            .finish()
    }
}

// === impl JwtAuthority ===

impl JwtAuthority {
    /// `key_id` must be non-empty; `public_key_der` is a DER SubjectPublicKeyInfo of an EC P-256,
    /// P-384 or P-521 key, or of an RSA key of 2048 to 8192 bits.
    pub fn new(key_id: impl Into<String>, public_key_der: Vec<u8>) -> Result<Self, BundleError> {
        let key_id = key_id.into();
        if key_id.is_empty() {
            return Err(BundleError::EmptyKeyId);
        }
        let (rest, spki) = SubjectPublicKeyInfo::from_der(&public_key_der).map_err(|e| {
            BundleError::InvalidPublicKey {
                reason: e.to_string(),
            }
        })?;
        if !rest.is_empty() {
            return Err(BundleError::TrailingData { len: rest.len() });
        }
        let jwk = PublicJwk::from_spki(&spki)?;
        let (key_type, algorithm): (JwtKeyType, &'static dyn VerificationAlgorithm) = match &jwk {
            PublicJwk::Ec {
                curve: Curve::P256, ..
            } => (JwtKeyType::EcP256, &ECDSA_P256_SHA256_FIXED),
            PublicJwk::Ec {
                curve: Curve::P384, ..
            } => (JwtKeyType::EcP384, &ECDSA_P384_SHA384_FIXED),
            PublicJwk::Ec {
                curve: Curve::P521, ..
            } => (JwtKeyType::EcP521, &ECDSA_P521_SHA512_FIXED),
            PublicJwk::Rsa { n, .. } => {
                // aws-lc-rs checks the modulus size only when verifying; refuse a key that would
                // fail every verification now, with a reason.
                if !(2048..=8192).contains(&bit_len(n)) {
                    return Err(BundleError::UnsupportedPublicKey {
                        reason: "RSA modulus outside 2048 to 8192 bits",
                    });
                }
                (JwtKeyType::Rsa, &RSA_PKCS1_2048_8192_SHA256)
            }
            PublicJwk::Ed25519 { .. } => {
                return Err(BundleError::UnsupportedPublicKey {
                    reason: "Ed25519 cannot sign JWT-SVIDs (EdDSA is not on the JWT-SVID alg list)",
                });
            }
        };
        // aws-lc-rs checks what the DER parser does not: the point is on the curve, the RSA
        // modulus is 2048 to 8192 bits. A key it refuses could never verify a token.
        ParsedPublicKey::new(algorithm, &public_key_der).map_err(|e| {
            BundleError::InvalidPublicKey {
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            key_id,
            public_key_der,
            key_type,
            jwk,
        })
    }

    /// The `kid` tokens name this key by.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// The kind of key, which decides the JWS algorithms it verifies.
    pub fn key_type(&self) -> JwtKeyType {
        self.key_type
    }

    /// The JWK: key members and `kid`, plus `use` = `jwt-svid` in a SPIFFE bundle.
    fn to_jwk(&self, with_use: bool) -> Value {
        let mut jwk = self.jwk.members();
        jwk.insert("kid".into(), self.key_id.clone().into());
        if with_use {
            jwk.insert("use".into(), USE_JWT_SVID.into());
        }
        Value::Object(jwk)
    }

    /// Reads a `jwt-svid` JWK back into an authority. `Ok(None)`: a key type lanyard cannot use,
    /// which a consumer ignores (BUN-5).
    fn from_jwk(jwk: &Map<String, Value>) -> Result<Option<Self>, BundleError> {
        let Some(public) = PublicJwk::from_jwk(jwk)? else {
            return Ok(None);
        };
        let key_id = match jwk.get("kid") {
            None | Some(Value::Null) => return Err(BundleError::MissingKeyId),
            Some(Value::String(kid)) => kid.clone(),
            Some(_) => return Err(BundleError::InvalidJwkMember { member: "kid" }),
        };
        Self::new(key_id, public.to_spki_der()).map(Some)
    }
}

impl fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("key_id", &self.key_id)
            .field("key_type", &self.key_type)
            .finish()
    }
}

// === impl Bundle ===

impl Bundle {
    /// An empty bundle: no authorities, sequence 0, no refresh hint.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: 0,
            refresh_hint: None,
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 roots, in the order they were added.
    pub fn x509_authorities(&self) -> &[X509Authority] {
        &self.x509_authorities
    }

    /// The JWT keys, in the order they were added.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// True when the bundle has no authority of either kind: every SVID of its trust domain is
    /// then invalid (BUN-6).
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }

    /// Adds a root; `false` if the same certificate is already present.
    pub fn add_x509_authority(&mut self, a: X509Authority) -> bool {
        if self.x509_authorities.contains(&a) {
            return false;
        }
        self.x509_authorities.push(a);
        true
    }

    /// Removes the root with this DER encoding; `false` if there was none.
    pub fn remove_x509_authority(&mut self, der: &[u8]) -> bool {
        let before = self.x509_authorities.len();
        self.x509_authorities.retain(|a| a.der != der);
        self.x509_authorities.len() != before
    }

    /// Adds a JWT key; `false` if a key with the same `kid` is already present (the bundle is
    /// unchanged then: a `kid` names exactly one key).
    pub fn add_jwt_authority(&mut self, a: JwtAuthority) -> bool {
        if self.jwt_authority(&a.key_id).is_some() {
            return false;
        }
        self.jwt_authorities.push(a);
        true
    }

    /// Removes the JWT key with this `kid`; `false` if there was none.
    pub fn remove_jwt_authority(&mut self, key_id: &str) -> bool {
        let before = self.jwt_authorities.len();
        self.jwt_authorities.retain(|a| a.key_id != key_id);
        self.jwt_authorities.len() != before
    }

    /// The JWT key with this `kid`.
    pub fn jwt_authority(&self, key_id: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.key_id == key_id)
    }

    /// `spiffe_sequence`.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn set_sequence(&mut self, sequence: u64) {
        self.sequence = sequence;
    }

    /// `spiffe_refresh_hint`, whole seconds.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Sets `spiffe_refresh_hint`. The format carries whole seconds: a fraction is dropped when
    /// the bundle is written.
    pub fn set_refresh_hint(&mut self, hint: Option<Duration>) {
        self.refresh_hint = hint;
    }

    /// Reads a SPIFFE bundle (Trust Domain and Bundle §4). The document does not name its trust
    /// domain, so the caller says which one it belongs to (BUN-7).
    ///
    /// `keys` must be present (it may be empty). JWKs with an unknown `kty`, no `use` or an
    /// unknown `use` are ignored, as are `x509-svid` keys whose `x5c` is missing or empty; of an
    /// `x5c`, only the first certificate is used (X509-SVID §6.2). A malformed key that would
    /// otherwise be used fails the whole bundle.
    pub fn parse_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        check_len(json, MAX_BUNDLE_JSON_LEN)?;
        let value = parse_value(json)?;
        Self::from_value(trust_domain, &value, JwkSetKind::SpiffeBundle)
    }

    /// Reads the JWKS of JWT authorities that `FetchJWTBundles` sends (SPIFFE.md WAPI-11): every
    /// key needs a `kid`; a key without `use` counts as a JWT authority.
    pub fn parse_jwks(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        check_len(json, MAX_BUNDLE_JSON_LEN)?;
        let value = parse_value(json)?;
        Self::from_value(trust_domain, &value, JwkSetKind::JwtAuthorities)
    }

    /// Reads an identity provider's JWKS (RFC 7517) as the JWT authorities of a bundle whose trust
    /// domain only names the provider: every signing key (no `use`, or `sig`) needs a `kid`;
    /// encryption keys and unknown key types are ignored.
    pub fn parse_signing_jwks(name: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        check_len(json, MAX_BUNDLE_JSON_LEN)?;
        let value = parse_value(json)?;
        Self::from_value(name, &value, JwkSetKind::SigningKeys)
    }

    /// Writes the SPIFFE bundle: X.509 authorities then JWT authorities, each in insertion order,
    /// and `spiffe_sequence`; `spiffe_refresh_hint` when one is set (there is no value that means
    /// "none", so an unset hint is left out rather than invented).
    pub fn to_json(&self) -> String {
        sorted_json(self.to_value(true))
    }

    /// Only the JWT authorities, as `FetchJWTBundles` sends them: `{"keys":[…]}`, every key with
    /// its `kid`, no `use` and no `spiffe_*` members (as SPIRE sends them).
    pub fn jwks_json(&self) -> String {
        let keys = self
            .jwt_authorities
            .iter()
            .map(|a| a.to_jwk(false))
            .collect();
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        sorted_json(Value::Object(doc))
    }

    /// The X.509 authorities as concatenated DER, as the Workload API sends bundles.
    pub fn x509_authorities_der(&self) -> Vec<u8> {
        self.x509_authorities
            .iter()
            .flat_map(|a| a.der.iter().copied())
            .collect()
    }

    /// The X.509 authorities as PEM `CERTIFICATE` blocks.
    pub fn x509_authorities_pem(&self) -> String {
        let mut pem = String::new();
        for authority in &self.x509_authorities {
            write_pem(&mut pem, &authority.der);
        }
        pem
    }

    fn to_value(&self, with_refresh_hint: bool) -> Value {
        let keys = self
            .x509_authorities
            .iter()
            .map(X509Authority::to_jwk)
            .chain(self.jwt_authorities.iter().map(|a| a.to_jwk(true)))
            .collect();
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        doc.insert("spiffe_sequence".into(), self.sequence.into());
        if let (true, Some(hint)) = (with_refresh_hint, self.refresh_hint) {
            doc.insert("spiffe_refresh_hint".into(), hint.as_secs().into());
        }
        Value::Object(doc)
    }

    fn from_value(
        trust_domain: TrustDomain,
        value: &Value,
        kind: JwkSetKind,
    ) -> Result<Self, BundleError> {
        let doc = value.as_object().ok_or(BundleError::NotAnObject)?;
        let keys = match doc.get("keys") {
            None => return Err(BundleError::MissingKeys),
            Some(Value::Array(keys)) => keys,
            Some(_) => return Err(BundleError::KeysNotArray),
        };
        let mut bundle = Self::new(trust_domain);
        if kind == JwkSetKind::SpiffeBundle {
            bundle.sequence = match doc.get("spiffe_sequence") {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_u64().ok_or(BundleError::InvalidSequence)?,
            };
            bundle.refresh_hint = match doc.get("spiffe_refresh_hint") {
                None | Some(Value::Null) => None,
                Some(v) => Some(Duration::from_secs(
                    v.as_u64().ok_or(BundleError::InvalidRefreshHint)?,
                )),
            };
        }
        for (index, key) in keys.iter().enumerate() {
            bundle
                .add_jwk(key, kind)
                .map_err(|source| BundleError::InvalidKey {
                    index,
                    source: Box::new(source),
                })?;
        }
        Ok(bundle)
    }

    /// Adds the authority one JWK describes, or nothing if the JWK is to be ignored.
    fn add_jwk(&mut self, key: &Value, kind: JwkSetKind) -> Result<(), BundleError> {
        let jwk = key.as_object().ok_or(BundleError::KeyNotObject)?;
        let key_use = match jwk.get("use") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            // A `use` that is not a string is not one of the known uses.
            Some(_) => return Ok(()),
        };
        let is_jwt = match (kind, key_use) {
            (JwkSetKind::SpiffeBundle, Some(USE_X509_SVID)) => false,
            (JwkSetKind::SpiffeBundle, Some(USE_JWT_SVID)) => true,
            (JwkSetKind::JwtAuthorities, None | Some(USE_JWT_SVID)) => true,
            (JwkSetKind::SigningKeys, None | Some("sig")) => true,
            _ => return Ok(()),
        };
        if is_jwt {
            if let Some(authority) = JwtAuthority::from_jwk(jwk)? {
                let key_id = authority.key_id.clone();
                if !self.add_jwt_authority(authority) {
                    // Two keys under one `kid` would make the key a token selects ambiguous.
                    return Err(BundleError::DuplicateKeyId { key_id });
                }
            }
            return Ok(());
        }
        // An x509-svid JWK is judged by its certificate, but its `kty` must still be one of the
        // key types (BUN-5: an unknown `kty` is ignored).
        if !matches!(
            jwk.get("kty").and_then(Value::as_str),
            Some("EC" | "RSA" | "OKP")
        ) {
            return Ok(());
        }
        let first = match jwk.get("x5c") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(certs)) => match certs.first() {
                None => return Ok(()),
                Some(Value::String(first)) => first,
                Some(_) => {
                    return Err(BundleError::InvalidX5c {
                        reason: "the first entry is not a string",
                    });
                }
            },
            Some(_) => {
                return Err(BundleError::InvalidX5c {
                    reason: "not an array",
                });
            }
        };
        let der = BASE64_STD_LENIENT
            .decode(first)
            .map_err(|_| BundleError::InvalidX5c {
                reason: "the first entry is not standard base64",
            })?;
        // The same root listed twice is one root.
        self.add_x509_authority(X509Authority::from_der(der)?);
        Ok(())
    }
}

// === impl BundleSet ===

impl BundleSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `bundle` under its trust domain, returning the bundle it replaces.
    pub fn insert(&mut self, bundle: Bundle) -> Option<Bundle> {
        self.bundles.insert(bundle.trust_domain.clone(), bundle)
    }

    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.bundles.get(trust_domain)
    }

    pub fn remove(&mut self, trust_domain: &TrustDomain) -> Option<Bundle> {
        self.bundles.remove(trust_domain)
    }

    /// The bundles, ordered by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &Bundle> {
        self.bundles.values()
    }

    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// Reads a SPIFFE bundle map (Trust Domain and Bundle §5):
    /// `{"trust_domains": {"<td>": <bundle>, …}}`. `trust_domains` must be present and may be
    /// empty; a trust domain that appears twice is refused (BUN-9), including when one spelling is
    /// `spiffe://<td>`. The refresh hints inside entries are kept as read; callers must not let
    /// them steer how often the map is fetched.
    pub fn parse_bundle_map(json: &[u8]) -> Result<Self, BundleError> {
        #[derive(serde::Deserialize)]
        struct MapDocument {
            trust_domains: ObjectEntries,
        }

        check_len(json, MAX_BUNDLE_MAP_JSON_LEN)?;
        // A first pass names shape errors precisely; the second keeps duplicate keys, which
        // `serde_json::Value` silently collapses to the last one.
        let value = parse_value(json)?;
        let doc = value.as_object().ok_or(BundleError::NotAnObject)?;
        if !matches!(doc.get("trust_domains"), Some(Value::Object(_))) {
            return Err(BundleError::MissingTrustDomains);
        }
        drop(value);
        let doc: MapDocument =
            serde_json::from_slice(json).map_err(|e| BundleError::InvalidJson {
                reason: e.to_string(),
            })?;
        let mut set = Self::new();
        for (name, entry) in doc.trust_domains.0 {
            let trust_domain: TrustDomain = name
                .parse()
                .map_err(|source| BundleError::InvalidTrustDomain { name, source })?;
            if set.bundles.contains_key(&trust_domain) {
                return Err(BundleError::DuplicateTrustDomain { trust_domain });
            }
            let bundle = Bundle::from_value(trust_domain.clone(), &entry, JwkSetKind::SpiffeBundle)
                .map_err(|source| BundleError::InvalidMapEntry {
                    trust_domain: trust_domain.clone(),
                    source: Box::new(source),
                })?;
            set.insert(bundle);
        }
        Ok(set)
    }

    /// Writes the bundle map, keyed by bare trust-domain names in order, without refresh hints
    /// inside entries (BUN-9: producers should omit them).
    pub fn to_bundle_map_json(&self) -> String {
        let entries = self
            .bundles
            .iter()
            .map(|(td, bundle)| (td.as_str().to_owned(), bundle.to_value(false)))
            .collect();
        let mut doc = Map::new();
        doc.insert("trust_domains".into(), Value::Object(entries));
        sorted_json(Value::Object(doc))
    }
}

impl FromIterator<Bundle> for BundleSet {
    fn from_iter<I: IntoIterator<Item = Bundle>>(iter: I) -> Self {
        let mut set = Self::new();
        set.extend(iter);
        set
    }
}

impl Extend<Bundle> for BundleSet {
    fn extend<I: IntoIterator<Item = Bundle>>(&mut self, iter: I) {
        for bundle in iter {
            self.insert(bundle);
        }
    }
}

// === impl PublicJwk ===

impl PublicJwk {
    /// The key of a SubjectPublicKeyInfo, for the key types a bundle can carry.
    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, BundleError> {
        let algorithm = spki.algorithm.algorithm.as_bytes();
        let key = spki.subject_public_key.data.as_ref();
        if algorithm == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or(BundleError::InvalidPublicKey {
                    reason: "EC key without a named curve".into(),
                })?;
            let curve = match curve.as_bytes() {
                OID_P256 => Curve::P256,
                OID_P384 => Curve::P384,
                OID_P521 => Curve::P521,
                _ => {
                    return Err(BundleError::UnsupportedPublicKey {
                        reason: "EC curve other than P-256, P-384 or P-521",
                    });
                }
            };
            let width = curve.coordinate_len();
            // JWK has no form for a compressed point: only the uncompressed one is accepted.
            match key.split_first() {
                Some((0x04, xy)) if xy.len() == 2 * width => {
                    let (x, y) = xy.split_at(width);
                    Ok(Self::Ec {
                        curve,
                        x: x.to_vec(),
                        y: y.to_vec(),
                    })
                }
                _ => Err(BundleError::UnsupportedPublicKey {
                    reason: "EC point is not in uncompressed form",
                }),
            }
        } else if algorithm == OID_RSA_ENCRYPTION {
            match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => Ok(Self::Rsa {
                    n: strip_leading_zeros(rsa.modulus).to_vec(),
                    e: strip_leading_zeros(rsa.exponent).to_vec(),
                }),
                _ => Err(BundleError::InvalidPublicKey {
                    reason: "malformed RSA public key".into(),
                }),
            }
        } else if algorithm == OID_ED25519 {
            if key.len() != 32 {
                return Err(BundleError::InvalidPublicKey {
                    reason: "Ed25519 key is not 32 bytes".into(),
                });
            }
            Ok(Self::Ed25519 { x: key.to_vec() })
        } else {
            Err(BundleError::UnsupportedPublicKey {
                reason: "key type other than EC, RSA or Ed25519",
            })
        }
    }

    /// Reads the key members of a JWK. `Ok(None)` for a `kty` or `crv` lanyard does not use for
    /// JWT-SVIDs (BUN-5: ignored, not fatal).
    fn from_jwk(jwk: &Map<String, Value>) -> Result<Option<Self>, BundleError> {
        match jwk.get("kty").and_then(Value::as_str) {
            Some("EC") => {
                let curve = match jwk.get("crv") {
                    Some(Value::String(crv)) => match crv.as_str() {
                        "P-256" => Curve::P256,
                        "P-384" => Curve::P384,
                        "P-521" => Curve::P521,
                        _ => return Ok(None),
                    },
                    _ => return Err(BundleError::InvalidJwkMember { member: "crv" }),
                };
                let x = jwk_bytes(jwk, "x")?;
                let y = jwk_bytes(jwk, "y")?;
                let width = curve.coordinate_len();
                if x.len() != width {
                    return Err(BundleError::InvalidJwkMember { member: "x" });
                }
                if y.len() != width {
                    return Err(BundleError::InvalidJwkMember { member: "y" });
                }
                Ok(Some(Self::Ec { curve, x, y }))
            }
            Some("RSA") => {
                let n = jwk_bytes(jwk, "n")?;
                let e = jwk_bytes(jwk, "e")?;
                let n = strip_leading_zeros(&n);
                let e = strip_leading_zeros(&e);
                if n.is_empty() {
                    return Err(BundleError::InvalidJwkMember { member: "n" });
                }
                if e.is_empty() {
                    return Err(BundleError::InvalidJwkMember { member: "e" });
                }
                Ok(Some(Self::Rsa {
                    n: n.to_vec(),
                    e: e.to_vec(),
                }))
            }
            _ => Ok(None),
        }
    }

    /// The JWK members that describe the key (RFC 7518 §6.2.1, §6.3.1; RFC 8037 §2).
    fn members(&self) -> Map<String, Value> {
        let mut jwk = Map::new();
        match self {
            Self::Ec { curve, x, y } => {
                jwk.insert("kty".into(), "EC".into());
                jwk.insert("crv".into(), curve.jwk_name().into());
                jwk.insert("x".into(), BASE64URL_LENIENT.encode(x).into());
                jwk.insert("y".into(), BASE64URL_LENIENT.encode(y).into());
            }
            Self::Rsa { n, e } => {
                jwk.insert("kty".into(), "RSA".into());
                jwk.insert("n".into(), BASE64URL_LENIENT.encode(n).into());
                jwk.insert("e".into(), BASE64URL_LENIENT.encode(e).into());
            }
            Self::Ed25519 { x } => {
                jwk.insert("kty".into(), "OKP".into());
                jwk.insert("crv".into(), "Ed25519".into());
                jwk.insert("x".into(), BASE64URL_LENIENT.encode(x).into());
            }
        }
        jwk
    }

    /// The DER SubjectPublicKeyInfo of the key (RFC 5480, RFC 3279, RFC 8410).
    fn to_spki_der(&self) -> Vec<u8> {
        let (algorithm, key) = match self {
            Self::Ec { curve, x, y } => {
                let algorithm = [der_oid(OID_EC_PUBLIC_KEY), der_oid(curve.oid())].concat();
                let point = [&[0x04], x.as_slice(), y.as_slice()].concat();
                (algorithm, point)
            }
            Self::Rsa { n, e } => {
                let algorithm = [der_oid(OID_RSA_ENCRYPTION), der_tlv(0x05, &[])].concat();
                let key = der_tlv(0x30, &[der_uint(n), der_uint(e)].concat());
                (algorithm, key)
            }
            Self::Ed25519 { x } => (der_oid(OID_ED25519), x.clone()),
        };
        let bit_string = der_tlv(0x03, &[&[0x00], key.as_slice()].concat());
        der_tlv(0x30, &[der_tlv(0x30, &algorithm), bit_string].concat())
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Self::Ec { curve, .. } => curve.jwk_name(),
            Self::Rsa { .. } => "RSA",
            Self::Ed25519 { .. } => "Ed25519",
        }
    }
}

impl Curve {
    fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    fn jwk_name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            Self::P256 => OID_P256,
            Self::P384 => OID_P384,
            Self::P521 => OID_P521,
        }
    }
}

// === JSON helpers ===

/// The members of a JSON object in document order, duplicates kept, so that callers can refuse
/// duplicates (BUN-9, and JOSE headers) that `serde_json::Value` would silently collapse.
#[derive(Debug)]
pub(crate) struct ObjectEntries(pub(crate) Vec<(String, Value)>);

impl ObjectEntries {
    /// The first member name that appears twice.
    pub(crate) fn first_duplicate(&self) -> Option<&str> {
        let mut seen = std::collections::BTreeSet::new();
        self.0
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| !seen.insert(*name))
    }
}

impl<'de> Deserialize<'de> for ObjectEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;

        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = ObjectEntries;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    entries.push((name, map.next_value::<Value>()?));
                }
                Ok(ObjectEntries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor)
    }
}

fn check_len(json: &[u8], max: usize) -> Result<(), BundleError> {
    if json.len() > max {
        return Err(BundleError::TooLarge {
            len: json.len(),
            max,
        });
    }
    Ok(())
}

fn parse_value(json: &[u8]) -> Result<Value, BundleError> {
    serde_json::from_slice(json).map_err(|e| BundleError::InvalidJson {
        reason: e.to_string(),
    })
}

/// A base64url-encoded JWK member, decoded.
fn jwk_bytes(jwk: &Map<String, Value>, member: &'static str) -> Result<Vec<u8>, BundleError> {
    jwk.get(member)
        .and_then(Value::as_str)
        .and_then(|s| BASE64URL_LENIENT.decode(s).ok())
        .ok_or(BundleError::InvalidJwkMember { member })
}

fn write_pem(out: &mut String, der: &[u8]) {
    let b64 = BASE64_STD_LENIENT.encode(der);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    // base64 output is ASCII, so splitting the bytes never splits a character.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
}

// === DER writing (just enough for a SubjectPublicKeyInfo) ===

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Bits in a big-endian magnitude without leading zero bytes.
fn bit_len(magnitude: &[u8]) -> usize {
    magnitude
        .first()
        .map_or(0, |&b| magnitude.len() * 8 - b.leading_zeros() as usize)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes = len.to_be_bytes();
        let len_bytes = strip_leading_zeros(&len_bytes);
        out.push(0x80 | len_bytes.len() as u8);
        out.extend_from_slice(len_bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_oid(content: &[u8]) -> Vec<u8> {
    der_tlv(0x06, content)
}

/// A non-negative INTEGER from big-endian magnitude bytes.
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let magnitude = strip_leading_zeros(magnitude);
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    // A set top bit would read as negative; an empty magnitude is zero.
    if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    der_tlv(0x02, &content)
}

/// `value` as JSON text with every object's members in key order, whichever order the map kept
/// them in: serde_json keeps insertion order when any crate in the build enables its
/// `preserve_order` feature (cedar-policy does), and a bundle must print the same from every
/// binary, so documents stored by one build compare equal in another.
fn sorted_json(value: Value) -> String {
    fn sort(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut members: Vec<(String, Value)> = map.into_iter().collect();
                members.sort_by(|(a, _), (b, _)| a.cmp(b));
                Value::Object(members.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    sort(value).to_string()
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
