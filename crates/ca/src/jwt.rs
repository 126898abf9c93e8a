//! JWT-SVID signing (SPIFFE JWT-SVID §2–§3): compact JWS, header exactly `alg`, `kid`, `typ`.
//!
//! Tokens are signed directly with aws-lc-rs rather than through jsonwebtoken: jsonwebtoken parses
//! the PKCS#8 key again for every token, which costs about as much as the signature itself
//! (`docs/benchmarks.md` has both figures).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lanyard_core::SpiffeId;
use serde::Serialize;

use crate::CaError;
use crate::key::PrivateKey;

/// Claims the CA always sets itself; extra claims may not use these names.
pub const RESERVED_CLAIMS: [&str; 5] = ["sub", "aud", "exp", "iat", "jti"];

/// What a JWT-SVID should say.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSvidRequest {
    /// `sub`: the workload's SPIFFE ID, in the CA's trust domain, with a path.
    pub spiffe_id: SpiffeId,
    /// `aud`: at least one non-empty value; always written as an array.
    pub audience: Vec<String>,
    /// Lifetime; `None` means the configured default. Capped at the signing key's expiry.
    pub ttl: Option<Duration>,
    /// `jti`, if the caller wants one (e.g. to revoke the token by id later).
    pub jti: Option<String>,
    /// Further claims (task id, delegation chain, …). Must not name a [`RESERVED_CLAIMS`] entry.
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
}

/// A signed JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// The compact JWS.
    pub token: String,
    pub spiffe_id: SpiffeId,
    pub audience: Vec<String>,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    /// The `kid` of the signing key, as published in the bundle.
    pub key_id: String,
}

/// What an OAuth access token (RFC 9068) should say. `sub` is any principal (a person, or the
/// client's SPIFFE ID), so this is not a JWT-SVID: its header says `typ: at+jwt`, which JWT-SVID
/// validators refuse, and RFC 9068 validators require.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessTokenRequest {
    pub subject: String,
    /// The one resource the token is for.
    pub audience: String,
    pub ttl: Duration,
    pub jti: String,
    /// `iss`, `client_id`, `scope`, `act`, …. Must not name a [`RESERVED_CLAIMS`] entry.
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
}

/// A signed access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    pub key_id: String,
}

/// A JWT signing key with its precomputed headers.
#[derive(Debug)]
pub(crate) struct JwtSigner {
    key: Arc<PrivateKey>,
    kid: String,
    /// base64url of the JWT-SVID header JSON, followed by `.`.
    header_prefix: String,
    /// The same for access tokens (`typ: at+jwt`).
    access_header_prefix: String,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: &'a str,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a [String],
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

// === impl JwtSvidRequest ===

impl JwtSvidRequest {
    /// A request with the default TTL, no `jti` and no extra claims.
    pub fn new(spiffe_id: SpiffeId, audience: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            spiffe_id,
            audience: audience.into_iter().map(Into::into).collect(),
            ttl: None,
            jti: None,
            extra_claims: serde_json::Map::new(),
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

// === impl JwtSigner ===

impl JwtSigner {
    pub(crate) fn new(key: Arc<PrivateKey>) -> Result<Self, CaError> {
        let kid = key.jwt_key_id();
        let prefix = |typ: &str| -> Result<String, CaError> {
            let header = serde_json::to_vec(&Header {
                alg: key.key_type().jws_alg(),
                kid: &kid,
                typ,
            })
            .map_err(|e| CaError::ClaimsEncoding(e.to_string()))?;
            let mut prefix = URL_SAFE_NO_PAD.encode(header);
            prefix.push('.');
            Ok(prefix)
        };
        let header_prefix = prefix("JWT")?;
        let access_header_prefix = prefix("at+jwt")?;
        Ok(Self {
            key,
            kid,
            header_prefix,
            access_header_prefix,
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs a token for `req`; `iat` and `exp` are Unix seconds already decided by the caller.
    pub(crate) fn sign(&self, req: &JwtSvidRequest, iat: u64, exp: u64) -> Result<String, CaError> {
        let claims = serde_json::to_vec(&Claims {
            sub: req.spiffe_id.as_str(),
            aud: &req.audience,
            exp,
            iat,
            jti: req.jti.as_deref(),
            extra: &req.extra_claims,
        })
        .map_err(|e| CaError::ClaimsEncoding(e.to_string()))?;
        self.sign_claims(&self.header_prefix, &claims)
    }

    /// Signs an access token for `req`; `iat` and `exp` as for [`JwtSigner::sign`].
    pub(crate) fn sign_access_token(
        &self,
        req: &AccessTokenRequest,
        iat: u64,
        exp: u64,
    ) -> Result<String, CaError> {
        let claims = serde_json::to_vec(&AccessClaims {
            sub: &req.subject,
            aud: &req.audience,
            exp,
            iat,
            jti: &req.jti,
            extra: &req.extra_claims,
        })
        .map_err(|e| CaError::ClaimsEncoding(e.to_string()))?;
        self.sign_claims(&self.access_header_prefix, &claims)
    }

    fn sign_claims(&self, header_prefix: &str, claims: &[u8]) -> Result<String, CaError> {
        let mut token = String::with_capacity(header_prefix.len() + claims.len() * 4 / 3 + 100);
        token.push_str(header_prefix);
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let sig = self.key.sign_jws(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut token);
        Ok(token)
    }
}

/// Checks the parts of a request that do not depend on the CA's state.
pub(crate) fn check_request(req: &JwtSvidRequest) -> Result<(), CaError> {
    if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
        return Err(CaError::EmptyAudience);
    }
    check_extra_claims(&req.extra_claims)
}

/// Refuses extra claims that would override one the CA sets itself.
pub(crate) fn check_extra_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), CaError> {
    match RESERVED_CLAIMS
        .iter()
        .find(|name| claims.contains_key(**name))
    {
        Some(name) => Err(CaError::ReservedClaim((*name).to_owned())),
        None => Ok(()),
    }
}
