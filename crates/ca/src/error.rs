//! The one error type of this crate.

use std::path::PathBuf;

/// Why the CA refused or failed. Variants name causes; none carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    // --- configuration ---
    #[error("invalid CA configuration: {0}")]
    Config(String),

    // --- keys and key managers ---
    #[error("key id {0:?} is invalid: use 1 to 64 characters from [a-z0-9-]")]
    InvalidKeyId(String),
    #[error("key {0:?} is not in the key manager")]
    KeyNotFound(String),
    #[error("key generation failed")]
    KeyGeneration,
    #[error("stored key {key_id:?} is not a PKCS#8 EC P-256 or P-384 private key")]
    InvalidStoredKey { key_id: String },
    #[error(
        "key file {path} or its directory is readable by group or others (mode {mode:o}); use 0600 files in a 0700 directory"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("cannot use the key directory {path}: {source}")]
    KeyDir {
        path: PathBuf,
        #[source]
        source: lanyard_fs::Error,
    },
    #[error("key storage I/O failed at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing failed")]
    Signing,

    // --- SVID requests ---
    #[error("CSR is {len} bytes; the limit is {max}")]
    CsrTooLarge { len: usize, max: usize },
    #[error("CSR is not a well-formed PKCS#10 request: {0}")]
    CsrMalformed(String),
    #[error("CSR signature does not verify with its own public key")]
    CsrBadSignature,
    #[error(
        "CSR signature algorithm is not supported (use ECDSA with SHA-256/384, Ed25519 or RSA PKCS#1 v1.5)"
    )]
    CsrUnsupportedSignatureAlgorithm,
    #[error("public key is {len} bytes; the limit is {max}")]
    PublicKeyTooLarge { len: usize, max: usize },
    #[error("public key is not a well-formed SubjectPublicKeyInfo: {0}")]
    PublicKeyMalformed(String),
    #[error(
        "public key type is not supported (use EC P-256, EC P-384 with an uncompressed point, Ed25519, or RSA 2048-8192 bits)"
    )]
    UnsupportedKeyType,
    #[error("public key is invalid for its type (e.g. not a point on the curve)")]
    InvalidPublicKey,
    #[error("SPIFFE ID {id} is not in trust domain {trust_domain}")]
    ForeignTrustDomain { id: String, trust_domain: String },
    #[error("SPIFFE ID {0} has no path; an SVID names a workload, not the trust domain")]
    RootIdNotAllowed(String),
    #[error("TTL must be greater than zero")]
    ZeroTtl,
    #[error("JWT audience must hold at least one non-empty value")]
    EmptyAudience,
    #[error("an access token needs a subject, an audience and a jti")]
    IncompleteAccessToken,
    #[error("extra JWT claim {0:?} would override a claim the CA sets itself")]
    ReservedClaim(String),
    #[error("JWT claims could not be encoded: {0}")]
    ClaimsEncoding(String),
    #[error("time is outside what certificates can express")]
    TimeOutOfRange,

    // --- authorities ---
    #[error("no active {kind} authority valid now; call tick() to rotate")]
    NoActiveAuthority { kind: &'static str },
    #[error("no authority with id {0:?}")]
    UnknownAuthority(String),
    #[error("authority {0:?} is active; taint it (forcing a rotation) before revoking it")]
    RevokeActive(String),

    // --- upstream authority ---
    #[error("upstream CA: {0}")]
    Upstream(String),

    #[error("bundle could not be assembled: {0}")]
    Bundle(#[from] lanyard_core::BundleError),

    // --- journal ---
    #[error("CA journal is invalid: {0}")]
    Journal(String),
}

impl CaError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
