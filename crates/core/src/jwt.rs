//! JWT-SVID verification (SPIFFE JWT-SVID §3, §4), with aws-lc-rs and no I/O.
//!
//! The order of the checks is part of the contract:
//! 1. the token is at most [`MAX_TOKEN_LEN`] bytes and in JWS Compact form (three parts; JSON
//!    serialization and JWE refused);
//! 2. the header is decoded and **`alg` is checked against the allow-list before anything else**
//!    (JWT-SVID §4): `none`, `HS*`, `EdDSA`, a missing or any other `alg` are refused;
//! 3. the header has no parameter but `alg`, `kid`, `typ`; `typ`, if present, is `JWT` or `JOSE`;
//! 4. the claims are decoded and `sub` is a SPIFFE ID;
//! 5. the key is found in the bundle of `sub`'s trust domain (by `kid`, or, for a token without
//!    `kid`, every key of that trust domain whose type fits `alg`), and the signature verified;
//! 6. only then are the claims judged: `aud` contains the audience, `exp` is not past, `nbf` (if
//!    present) is not ahead. Judging claims after the signature means a forged token learns
//!    nothing about why its claims would have failed.
//!
//! Times allow [`JWT_LEEWAY`] of clock skew in both directions.
//!
//! [`verify_jwt`] runs the same checks on a JWT from another issuer (an identity provider's token
//! naming a person, an access token): the keys are that issuer's, `sub` and `typ` may be
//! anything, and header parameters other than `alg`, `kid`, `typ` are ignored, except `crit`,
//! which is refused (lanyard understands no extension).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::bundle::{Bundle, BundleSet, JwtAuthority, JwtKeyType, ObjectEntries};
use crate::{IdError, SpiffeId, TrustDomain};

/// Longest token accepted, in bytes. SPIRE's tokens are well under 2 KiB; task credentials with a
/// delegation chain stay far below this.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Clock skew allowed on `exp` and `nbf`. go-spiffe's validator allows a minute, SPIRE's
/// issuers backdate nothing; 30 seconds covers NTP-synchronized hosts without stretching a
/// 5-minute token noticeably.
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);

/// Header parameters a JWT-SVID may carry (JWT-SVID §2).
const ALLOWED_HEADER_PARAMETERS: [&str; 3] = ["alg", "kid", "typ"];

/// The nine JWS algorithms JWT-SVIDs may use (JWT-SVID §2.1, SPIFFE.md JWT-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    Rs256,
    Rs384,
    Rs512,
    Es256,
    Es384,
    Es512,
    Ps256,
    Ps384,
    Ps512,
}

/// Why a JWT-SVID was refused. Each variant names one cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    #[error("the expected audience is empty")]
    NoExpectedAudience,
    #[error("token is {len} bytes long; the limit is {MAX_TOKEN_LEN}")]
    TooLarge { len: usize },
    #[error("token uses the JWS JSON serialization; a JWT-SVID uses the compact serialization")]
    JsonSerialization,
    #[error("token is a JWE; a JWT-SVID is a JWS")]
    Encrypted,
    #[error("compact JWS format must have three parts; this token has {parts}")]
    WrongPartCount { parts: usize },
    #[error("header is not base64url without padding")]
    HeaderEncoding,
    #[error("header is not JSON: {reason}")]
    HeaderJson { reason: String },
    #[error("header is not a JSON object")]
    HeaderNotObject,
    #[error("header parameter {name:?} appears more than once")]
    DuplicateHeaderParameter { name: String },
    #[error("header has no `alg`")]
    MissingAlg,
    #[error("`alg` is not a string")]
    AlgNotString,
    #[error("`alg` is `none`: unsigned tokens are refused")]
    AlgNone,
    #[error("`alg` {alg} is a symmetric (HMAC) algorithm; JWT-SVIDs are signed with public keys")]
    SymmetricAlg { alg: String },
    #[error("`alg` EdDSA is not on the JWT-SVID algorithm list")]
    EdDsaAlg,
    #[error("`alg` {alg:?} is not on the JWT-SVID algorithm list")]
    UnsupportedAlg { alg: String },
    #[error("header parameter {name:?} is not allowed; only `alg`, `kid` and `typ` are")]
    UnexpectedHeaderParameter { name: String },
    #[error("header `crit` names extensions lanyard does not understand")]
    CriticalHeader,
    #[error("header `typ` is {typ}; it must be absent, \"JWT\" or \"JOSE\"")]
    InvalidTyp { typ: String },
    #[error("header `kid` is not a non-empty string")]
    InvalidKid,
    #[error("claims are not base64url without padding")]
    ClaimsEncoding,
    #[error("claims are not JSON: {reason}")]
    ClaimsJson { reason: String },
    #[error("claims are not a JSON object")]
    ClaimsNotObject,
    #[error("claim {name:?} appears more than once")]
    DuplicateClaim { name: String },
    #[error("token has no `sub` claim")]
    MissingSub,
    #[error("`sub` is not a string")]
    SubNotString,
    #[error("`sub` {sub:?} is not a SPIFFE ID")]
    InvalidSub {
        sub: String,
        #[source]
        source: IdError,
    },
    #[error("no bundle for trust domain {trust_domain}")]
    NoBundle { trust_domain: TrustDomain },
    #[error("no keys found for trust domain {trust_domain}")]
    NoJwtAuthorities { trust_domain: TrustDomain },
    #[error("no key with ID {key_id:?} in the bundle of trust domain {trust_domain}")]
    UnknownKeyId {
        key_id: String,
        trust_domain: TrustDomain,
    },
    #[error("key {key_id:?} cannot verify `alg` {alg}")]
    KeyAlgMismatch { key_id: String, alg: JwtAlgorithm },
    #[error("no key of trust domain {trust_domain} can verify `alg` {alg}")]
    NoKeyForAlg {
        trust_domain: TrustDomain,
        alg: JwtAlgorithm,
    },
    #[error("signature is not base64url without padding")]
    SignatureEncoding,
    #[error("signature is invalid")]
    BadSignature,
    #[error("token has no `aud` claim")]
    MissingAud,
    #[error("`aud` is neither a string nor an array of strings")]
    InvalidAud,
    #[error("`aud` is an empty array")]
    EmptyAud,
    #[error("`aud` does not contain {expected:?}")]
    AudienceMismatch { expected: String },
    #[error("token has no `exp` claim")]
    MissingExp,
    #[error("`exp` is not a representable NumericDate")]
    InvalidExp,
    #[error("token expired at {}", crate::clock::unix_time(exp))]
    Expired { exp: SystemTime },
    #[error("`nbf` is not a representable NumericDate")]
    InvalidNbf,
    #[error("token is not valid before {}", crate::clock::unix_time(nbf))]
    NotYetValid { nbf: SystemTime },
}

/// A JWT-SVID whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwtSvid {
    spiffe_id: SpiffeId,
    jwt: VerifiedJwt,
}

/// A JWT whose signature, `aud`, `exp` and `nbf` were verified (see [`verify_jwt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    audience: Vec<String>,
    expiry: SystemTime,
    claims: Map<String, Value>,
    key_id: String,
    algorithm: JwtAlgorithm,
}

// === impl JwtAlgorithm ===

impl JwtAlgorithm {
    /// Every allowed algorithm.
    pub const ALL: [Self; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Es256,
        Self::Es384,
        Self::Es512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
    ];

    /// The JWS name (`ES256`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
        }
    }

    /// True if a key of this type can verify this algorithm: ES256 ↔ P-256, ES384 ↔ P-384,
    /// ES512 ↔ P-521, RS*/PS* ↔ RSA.
    pub fn fits(self, key_type: JwtKeyType) -> bool {
        matches!(
            (self, key_type),
            (Self::Es256, JwtKeyType::EcP256)
                | (Self::Es384, JwtKeyType::EcP384)
                | (Self::Es512, JwtKeyType::EcP521)
                | (
                    Self::Rs256
                        | Self::Rs384
                        | Self::Rs512
                        | Self::Ps256
                        | Self::Ps384
                        | Self::Ps512,
                    JwtKeyType::Rsa
                )
        )
    }

    fn verification_algorithm(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::Rs256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            // JWS carries ECDSA signatures as fixed-width r || s, not DER (RFC 7518 §3.4).
            Self::Es256 => &sig::ECDSA_P256_SHA256_FIXED,
            Self::Es384 => &sig::ECDSA_P384_SHA384_FIXED,
            Self::Es512 => &sig::ECDSA_P521_SHA512_FIXED,
            Self::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
            Self::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
            Self::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
        }
    }
}

impl FromStr for JwtAlgorithm {
    type Err = JwtSvidError;

    /// Classifies an `alg` value, naming why a refused one is refused.
    fn from_str(alg: &str) -> Result<Self, Self::Err> {
        if let Some(known) = Self::ALL.into_iter().find(|a| a.as_str() == alg) {
            return Ok(known);
        }
        Err(match alg {
            "none" => JwtSvidError::AlgNone,
            "HS256" | "HS384" | "HS512" => JwtSvidError::SymmetricAlg {
                alg: alg.to_owned(),
            },
            "EdDSA" => JwtSvidError::EdDsaAlg,
            _ => JwtSvidError::UnsupportedAlg {
                alg: alg.to_owned(),
            },
        })
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl VerifiedJwtSvid ===

impl VerifiedJwtSvid {
    /// `sub`.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// `aud`, as a list even when the token carries a single string.
    pub fn audience(&self) -> &[String] {
        self.jwt.audience()
    }

    /// `exp`.
    pub fn expiry(&self) -> SystemTime {
        self.jwt.expiry()
    }

    /// Every claim of the payload, as the token carries them.
    pub fn claims(&self) -> &Map<String, Value> {
        self.jwt.claims()
    }

    /// The `kid` of the key that verified the signature.
    pub fn key_id(&self) -> &str {
        self.jwt.key_id()
    }

    /// `alg`.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.jwt.algorithm()
    }
}

// === impl VerifiedJwt ===

impl VerifiedJwt {
    /// `aud`, as a list even when the token carries a single string.
    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// `exp`.
    pub fn expiry(&self) -> SystemTime {
        self.expiry
    }

    /// Every claim of the payload, as the token carries them.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The `kid` of the key that verified the signature.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `alg`.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }
}

/// Verifies a JWT-SVID for `audience` against the bundles, at time `at`. See the module
/// documentation for the order of the checks.
pub fn verify_jwt_svid(
    token: &str,
    audience: &str,
    bundles: &BundleSet,
    at: SystemTime,
) -> Result<VerifiedJwtSvid, JwtSvidError> {
    let mut subject = None;
    let jwt = verify_compact(token, audience, at, Headers::JwtSvid, |claims| {
        let spiffe_id = match claims.get("sub") {
            None => return Err(JwtSvidError::MissingSub),
            Some(Value::String(sub)) => {
                SpiffeId::parse(sub).map_err(|source| JwtSvidError::InvalidSub {
                    sub: sub.clone(),
                    source,
                })?
            }
            Some(_) => return Err(JwtSvidError::SubNotString),
        };
        let trust_domain = spiffe_id.trust_domain();
        let bundle = bundles
            .get(&trust_domain)
            .ok_or(JwtSvidError::NoBundle { trust_domain })?;
        subject = Some(spiffe_id);
        Ok(bundle)
    })?;
    let spiffe_id = subject.ok_or(JwtSvidError::MissingSub)?;
    Ok(VerifiedJwtSvid { spiffe_id, jwt })
}

/// Verifies a JWT from another issuer (an identity provider) for `audience`, signed by one of the
/// JWT authorities of `keys` (the bundle's trust domain only names the issuer in errors), at `at`.
/// The checks are those of [`verify_jwt_svid`] but for `sub`, which is not looked at, `typ`, which
/// is not either, and header parameters beyond `alg`, `kid`, `typ`, which are ignored unless one is
/// `crit`. The caller checks `iss`, `sub` and, if it matters, `typ`.
pub fn verify_jwt(
    token: &str,
    audience: &str,
    keys: &Bundle,
    at: SystemTime,
) -> Result<VerifiedJwt, JwtSvidError> {
    verify_compact(token, audience, at, Headers::Foreign, |_| Ok(keys))
}

/// Which header parameters a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Headers {
    /// Only `alg`, `kid`, `typ` (JWT-SVID §2).
    JwtSvid,
    /// Any, but `crit`: a token from elsewhere may carry `x5t` and the like.
    Foreign,
}

/// The checks every JWT gets, in the order of the module documentation; `keys_for` picks the
/// keys once the claims are decoded.
fn verify_compact<'k>(
    token: &str,
    audience: &str,
    at: SystemTime,
    headers: Headers,
    keys_for: impl FnOnce(&Map<String, Value>) -> Result<&'k Bundle, JwtSvidError>,
) -> Result<VerifiedJwt, JwtSvidError> {
    if audience.is_empty() {
        return Err(JwtSvidError::NoExpectedAudience);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtSvidError::TooLarge { len: token.len() });
    }
    if token.trim_start().starts_with('{') {
        return Err(JwtSvidError::JsonSerialization);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts.as_slice() else {
        return Err(match parts.len() {
            5 => JwtSvidError::Encrypted,
            parts => JwtSvidError::WrongPartCount { parts },
        });
    };

    let header = decode_object(header_b64, Part::Header)?;
    let algorithm = match header.get("alg") {
        None => return Err(JwtSvidError::MissingAlg),
        Some(Value::String(alg)) => alg.parse::<JwtAlgorithm>()?,
        Some(_) => return Err(JwtSvidError::AlgNotString),
    };
    match headers {
        Headers::JwtSvid => {
            if let Some(name) = header
                .keys()
                .find(|name| !ALLOWED_HEADER_PARAMETERS.contains(&name.as_str()))
            {
                return Err(JwtSvidError::UnexpectedHeaderParameter { name: name.clone() });
            }
        }
        Headers::Foreign => {
            if header.contains_key("crit") {
                return Err(JwtSvidError::CriticalHeader);
            }
        }
    }
    // A foreign token's `typ` is its issuer's business (an access token says `at+jwt`); the
    // caller checks it if it cares.
    match header.get("typ") {
        _ if headers == Headers::Foreign => {}
        None => {}
        Some(Value::String(typ)) if typ == "JWT" || typ == "JOSE" => {}
        Some(other) => {
            return Err(JwtSvidError::InvalidTyp {
                typ: other.to_string(),
            });
        }
    }
    let key_id = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if !kid.is_empty() => Some(kid.as_str()),
        Some(_) => return Err(JwtSvidError::InvalidKid),
    };

    let claims = decode_object(claims_b64, Part::Claims)?;
    let bundle = keys_for(&claims)?;
    let trust_domain = bundle.trust_domain().clone();
    if bundle.jwt_authorities().is_empty() {
        return Err(JwtSvidError::NoJwtAuthorities { trust_domain });
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtSvidError::SignatureEncoding)?;
    // The signing input is the first two parts exactly as they appear in the token.
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
    let verifies = |authority: &JwtAuthority| {
        UnparsedPublicKey::new(
            algorithm.verification_algorithm(),
            authority.public_key_der(),
        )
        .verify(signing_input, &signature)
        .is_ok()
    };
    let authority = match key_id {
        Some(key_id) => {
            let authority =
                bundle
                    .jwt_authority(key_id)
                    .ok_or_else(|| JwtSvidError::UnknownKeyId {
                        key_id: key_id.to_owned(),
                        trust_domain: trust_domain.clone(),
                    })?;
            if !algorithm.fits(authority.key_type()) {
                return Err(JwtSvidError::KeyAlgMismatch {
                    key_id: key_id.to_owned(),
                    alg: algorithm,
                });
            }
            if !verifies(authority) {
                return Err(JwtSvidError::BadSignature);
            }
            authority
        }
        // The spec makes `kid` optional (JWT-SVID §2.2): try every key that fits `alg`.
        None => {
            let mut candidates = bundle
                .jwt_authorities()
                .iter()
                .filter(|a| algorithm.fits(a.key_type()))
                .peekable();
            if candidates.peek().is_none() {
                return Err(JwtSvidError::NoKeyForAlg {
                    trust_domain,
                    alg: algorithm,
                });
            }
            candidates
                .find(|a| verifies(a))
                .ok_or(JwtSvidError::BadSignature)?
        }
    };

    let audiences = match claims.get("aud") {
        None => return Err(JwtSvidError::MissingAud),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(JwtSvidError::InvalidAud)?,
        Some(_) => return Err(JwtSvidError::InvalidAud),
    };
    if audiences.is_empty() {
        return Err(JwtSvidError::EmptyAud);
    }
    if !audiences.iter().any(|a| a == audience) {
        return Err(JwtSvidError::AudienceMismatch {
            expected: audience.to_owned(),
        });
    }

    let expiry = match claims.get("exp") {
        None => return Err(JwtSvidError::MissingExp),
        Some(exp) => numeric_date(exp).ok_or(JwtSvidError::InvalidExp)?,
    };
    if at >= expiry.checked_add(JWT_LEEWAY).unwrap_or(expiry) {
        return Err(JwtSvidError::Expired { exp: expiry });
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(JwtSvidError::InvalidNbf)?;
        if at.checked_add(JWT_LEEWAY).unwrap_or(at) < nbf {
            return Err(JwtSvidError::NotYetValid { nbf });
        }
    }

    Ok(VerifiedJwt {
        audience: audiences,
        expiry,
        key_id: authority.key_id().to_owned(),
        claims,
        algorithm,
    })
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Header,
    Claims,
}

/// Decodes a base64url JSON object, refusing duplicate member names: with duplicates, which
/// value counts depends on the parser, and a verifier must not disagree with the signer.
fn decode_object(b64: &str, part: Part) -> Result<Map<String, Value>, JwtSvidError> {
    let json = URL_SAFE_NO_PAD.decode(b64).map_err(|_| match part {
        Part::Header => JwtSvidError::HeaderEncoding,
        Part::Claims => JwtSvidError::ClaimsEncoding,
    })?;
    let json_error = |e: serde_json::Error| match part {
        Part::Header => JwtSvidError::HeaderJson {
            reason: e.to_string(),
        },
        Part::Claims => JwtSvidError::ClaimsJson {
            reason: e.to_string(),
        },
    };
    let value: Value = serde_json::from_slice(&json).map_err(json_error)?;
    let Value::Object(object) = value else {
        return Err(match part {
            Part::Header => JwtSvidError::HeaderNotObject,
            Part::Claims => JwtSvidError::ClaimsNotObject,
        });
    };
    let entries: ObjectEntries = serde_json::from_slice(&json).map_err(json_error)?;
    if let Some(name) = entries.first_duplicate() {
        let name = name.to_owned();
        return Err(match part {
            Part::Header => JwtSvidError::DuplicateHeaderParameter { name },
            Part::Claims => JwtSvidError::DuplicateClaim { name },
        });
    }
    Ok(object)
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional or negative.
fn numeric_date(value: &Value) -> Option<SystemTime> {
    let seconds = value.as_f64().filter(|s| s.is_finite())?;
    let magnitude = Duration::try_from_secs_f64(seconds.abs()).ok()?;
    if seconds >= 0.0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
