//! The `x509pop` node attestor: the agent proves possession of a private key whose certificate
//! chains to a CA the server is configured to trust.
//!
//! ```text
//! agent                                        server
//!   X509PopAttestationData { chain } ───────►  X509PopVerifier::begin: chain verified to the
//!                                              configured roots now; fresh 32-byte nonce
//!                         ◄─────────────────  X509PopChallenge { nonce }
//!   X509PopClient::respond: sign
//!   "lanyard x509pop v1\0" ‖ nonce
//!   X509PopResponse { nonce, signature } ───►  X509PopPending::finish: same nonce, in time,
//!                                              signature by the leaf's key → AttestedNode
//! ```
//!
//! A [`X509PopPending`] is consumed by `finish`, so each nonce is answered at most once; a
//! response to any other challenge fails (its nonce differs, and the signature covers the nonce).
//! The signed message starts with a fixed context string so that a signature made here cannot be
//! passed off as one over some other protocol's message, and vice versa.
//!
//! Agent ID: `spiffe://<td>/lanyard/agent/x509pop/<sha1 of the leaf's DER, hex>` — SPIRE's
//! fingerprint, so an operator sees the same value in both. Selectors, with SPIRE's names:
//! `x509pop:subject:cn:<cn>`, `x509pop:ca:fingerprint:<sha1>` for every certificate above the
//! leaf in the verified chain (the root included), `x509pop:serialnumber:<hex>`, and
//! `x509pop:san:<key>:<value>` for each URI SAN `x509pop://<td>/<key>/<value>`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    RSA_PSS_SHA256, RsaKeyPair,
};
use lanyard_core::{Clock, IdError, SelectorSet, SpiffeId, TrustDomain};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime,
};
use serde::{Deserialize, Serialize};
use webpki::aws_lc_rs as algs;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use super::{AttestedNode, agent_id};

/// The attestor's name, in agent IDs, selectors and the node API.
pub const X509POP_ATTESTOR: &str = "x509pop";

/// Bytes of randomness in a challenge.
pub const NONCE_LEN: usize = 32;

/// Prefix of every signed message: names the protocol and its version.
pub const SIGNATURE_CONTEXT: &[u8] = b"lanyard x509pop v1\0";

/// How long the server waits for the answer to a challenge, by default.
pub const DEFAULT_CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// Most certificates accepted in the agent's chain, leaf included.
pub const MAX_CHAIN_LEN: usize = 16;

/// Largest certificate accepted, in bytes.
pub const MAX_CERT_LEN: usize = 64 * 1024;

/// Largest signature accepted (an RSA-8192 signature is 1 KiB).
const MAX_SIGNATURE_LEN: usize = 2048;

/// Why x509pop attestation (or the setup of either side) failed. Each variant names one cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509PopError {
    #[error("no trusted CA certificates are configured for x509pop")]
    NoRoots,
    #[error("trusted CA certificate {index} cannot be used: {reason}")]
    BadRoot { index: usize, reason: String },
    #[error("the agent sent no certificates")]
    EmptyChain,
    #[error("the agent sent {len} certificates; the limit is {MAX_CHAIN_LEN}")]
    ChainTooLong { len: usize },
    #[error("certificate {index} is {len} bytes; the limit is {MAX_CERT_LEN}")]
    CertificateTooLarge { index: usize, len: usize },
    #[error("certificate {index} is malformed: {reason}")]
    MalformedCertificate { index: usize, reason: String },
    #[error("the agent's certificate is a CA certificate")]
    LeafIsCa,
    #[error("the agent's certificate does not allow digital signatures (keyUsage)")]
    NoDigitalSignature,
    #[error(
        "the agent's certificate has a {0} key; x509pop supports ECDSA P-256/P-384, Ed25519 and RSA"
    )]
    UnsupportedKey(String),
    #[error("the agent's certificate is not valid before {not_before:?}")]
    LeafNotYetValid { not_before: SystemTime },
    #[error("the agent's certificate expired at {not_after:?}")]
    LeafExpired { not_after: SystemTime },
    #[error("the agent's certificate does not chain to a trusted CA")]
    UntrustedChain,
    #[error(
        "a signature in the agent's chain does not verify (a CA named like a trusted one, with another key?)"
    )]
    ChainBadSignature,
    #[error("a certificate in the agent's chain has expired")]
    ChainCertificateExpired,
    #[error("a certificate in the agent's chain is not yet valid")]
    ChainCertificateNotYetValid,
    #[error("the trusted CA that issued the agent's chain has expired or is not yet valid")]
    RootNotValid,
    #[error("the agent's chain is invalid: {reason}")]
    InvalidChain { reason: String },
    #[error("the response answers a different challenge")]
    ChallengeMismatch,
    #[error("the challenge expired before it was answered")]
    ChallengeExpired,
    #[error("the signature does not verify with the certificate's key")]
    BadSignature,
    #[error("the private key cannot be used: {reason}")]
    PrivateKey { reason: String },
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("PEM input is malformed: {reason}")]
    Pem { reason: String },
    #[error("signing failed")]
    Signing,
    #[error("the system random number generator failed")]
    Random,
    #[error("cannot build the agent ID")]
    AgentId(#[source] IdError),
    #[error("the clock is before 1970")]
    TimeBeforeEpoch,
}

/// The agent's first message: its certificate chain, DER, leaf first.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509PopAttestationData {
    pub chain: Vec<Vec<u8>>,
}

/// The server's challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509PopChallenge {
    pub nonce: [u8; NONCE_LEN],
}

/// The agent's answer: the nonce it answers and its signature over
/// [`SIGNATURE_CONTEXT`] ‖ nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509PopResponse {
    pub nonce: [u8; NONCE_LEN],
    pub signature: Vec<u8>,
}

/// The server side's configuration.
#[derive(Debug, Clone)]
pub struct X509PopConfig {
    pub trust_domain: TrustDomain,
    /// The CA certificates (DER) agent certificates must chain to. Not the trust domain's own
    /// bundle: this is the PKI that provisioned the nodes.
    pub roots: Vec<Vec<u8>>,
    /// How long a challenge stays answerable.
    pub challenge_ttl: Duration,
}

/// The server side. Shared by all attestation streams.
#[derive(Debug)]
pub struct X509PopVerifier {
    trust_domain: TrustDomain,
    roots: Vec<Root>,
    challenge_ttl: Duration,
    clock: Arc<dyn Clock>,
}

/// A verified chain waiting for the answer to its challenge. Dropping it forgets the nonce.
#[derive(Debug)]
pub struct X509PopPending {
    nonce: [u8; NONCE_LEN],
    leaf: Vec<u8>,
    key: KeyKind,
    deadline: SystemTime,
    clock: Arc<dyn Clock>,
    node: AttestedNode,
}

/// The agent side: the certificate chain and the key that proves it.
#[derive(Debug)]
pub struct X509PopClient {
    chain: Vec<Vec<u8>>,
    key: SigningKey,
}

#[derive(Debug)]
struct Root {
    der: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// The leaf key types x509pop accepts, each with the one signature scheme used for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

enum SigningKey {
    /// The kind says which curve.
    Ecdsa(EcdsaKeyPair, KeyKind),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// The algorithms a chain may be signed with (as `lanyard-core` accepts for SVIDs).
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    algs::ECDSA_P256_SHA256,
    algs::ECDSA_P256_SHA384,
    algs::ECDSA_P384_SHA256,
    algs::ECDSA_P384_SHA384,
    algs::ECDSA_P521_SHA256,
    algs::ECDSA_P521_SHA384,
    algs::ECDSA_P521_SHA512,
    algs::ED25519,
    algs::RSA_PKCS1_2048_8192_SHA256,
    algs::RSA_PKCS1_2048_8192_SHA384,
    algs::RSA_PKCS1_2048_8192_SHA512,
    algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

// === impl X509PopAttestationData ===

impl fmt::Debug for X509PopAttestationData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lens: Vec<usize> = self.chain.iter().map(Vec::len).collect();
        f.debug_struct("X509PopAttestationData")
            .field("certificate_lengths", &lens)
            .finish()
    }
}

// === impl X509PopConfig ===

impl X509PopConfig {
    /// A configuration with the default challenge lifetime.
    pub fn new(trust_domain: TrustDomain, roots: Vec<Vec<u8>>) -> Self {
        Self {
            trust_domain,
            roots,
            challenge_ttl: DEFAULT_CHALLENGE_TTL,
        }
    }

    /// The CA certificates of a PEM bundle (`ca_bundle_path`'s content), as DER.
    pub fn roots_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, X509PopError> {
        certificates_from_pem(pem)
    }
}

// === impl X509PopVerifier ===

impl X509PopVerifier {
    pub fn new(config: X509PopConfig, clock: Arc<dyn Clock>) -> Result<Self, X509PopError> {
        if config.roots.is_empty() {
            return Err(X509PopError::NoRoots);
        }
        let mut roots = Vec::with_capacity(config.roots.len());
        for (index, der) in config.roots.into_iter().enumerate() {
            let bad = |reason: String| X509PopError::BadRoot { index, reason };
            let cert = parse_certificate(index, &der).map_err(|e| bad(e.to_string()))?;
            let (not_before, not_after) = lanyard_core::x509::validity(&cert);
            webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map_err(|e| bad(format!("{e:?}")))?;
            roots.push(Root {
                not_before,
                not_after,
                der,
            });
        }
        Ok(Self {
            trust_domain: config.trust_domain,
            roots,
            challenge_ttl: config.challenge_ttl,
            clock,
        })
    }

    /// Verifies the agent's chain now and makes a challenge for it.
    pub fn begin(&self, data: &X509PopAttestationData) -> Result<X509PopPending, X509PopError> {
        let chain = &data.chain;
        let (leaf_der, intermediates_der) = chain.split_first().ok_or(X509PopError::EmptyChain)?;
        if chain.len() > MAX_CHAIN_LEN {
            return Err(X509PopError::ChainTooLong { len: chain.len() });
        }
        for (index, der) in chain.iter().enumerate() {
            parse_certificate(index, der)?;
        }
        let leaf = parse_certificate(0, leaf_der)?;
        let key = key_kind(&leaf)?;
        check_leaf(&leaf)?;

        let now = self.clock.now();
        let (not_before, not_after) = lanyard_core::x509::validity(&leaf);
        if now < not_before {
            return Err(X509PopError::LeafNotYetValid { not_before });
        }
        if now > not_after {
            return Err(X509PopError::LeafExpired { not_after });
        }
        let ca_ders = self.verify_chain(leaf_der, intermediates_der, now)?;

        let agent_id = agent_id(&self.trust_domain, X509POP_ATTESTOR, &sha1_hex(leaf_der))
            .map_err(X509PopError::AgentId)?;
        let selectors = selectors(&leaf, &ca_ders, &self.trust_domain);

        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| X509PopError::Random)?;
        Ok(X509PopPending {
            nonce,
            leaf: leaf_der.clone(),
            key,
            deadline: now.checked_add(self.challenge_ttl).unwrap_or(now),
            clock: Arc::clone(&self.clock),
            node: AttestedNode {
                agent_id,
                selectors,
                attestor: X509POP_ATTESTOR,
                can_reattest: true,
            },
        })
    }

    /// RFC 5280 path validation at `now` to one of the configured roots, which must itself be
    /// valid at `now` (webpki does not check an anchor's dates). Returns the DER of every
    /// certificate above the leaf on the path found, root last.
    fn verify_chain(
        &self,
        leaf_der: &[u8],
        intermediates_der: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<Vec<Vec<u8>>, X509PopError> {
        let time = UnixTime::since_unix_epoch(
            now.duration_since(UNIX_EPOCH)
                .map_err(|_| X509PopError::TimeBeforeEpoch)?,
        );
        let root_ders: Vec<CertificateDer<'_>> = self
            .roots
            .iter()
            .map(|r| CertificateDer::from(r.der.as_slice()))
            .collect();
        let mut anchors: Vec<TrustAnchor<'_>> = Vec::with_capacity(root_ders.len());
        let mut anchor_roots: Vec<&Root> = Vec::with_capacity(root_ders.len());
        for (der, root) in root_ders.iter().zip(&self.roots) {
            // Checked in `new`; a root that fails here is skipped rather than trusted.
            if let Ok(anchor) = webpki::anchor_from_trusted_cert(der) {
                anchors.push(anchor);
                anchor_roots.push(root);
            }
        }

        let leaf_cert = CertificateDer::from(leaf_der);
        let end_entity = EndEntityCert::try_from(&leaf_cert).map_err(|e| {
            X509PopError::MalformedCertificate {
                index: 0,
                reason: format!("{e:?}"),
            }
        })?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates_der
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();

        let root_expired = std::cell::Cell::new(false);
        let check_anchor = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
            let valid = anchors
                .iter()
                .zip(&anchor_roots)
                .filter(|(anchor, _)| *anchor == path.anchor())
                .any(|(_, root)| root.not_before <= now && now <= root.not_after);
            if valid {
                Ok(())
            } else {
                root_expired.set(true);
                Err(webpki::Error::UnknownIssuer)
            }
        };
        let path = end_entity
            .verify_for_usage(
                CHAIN_ALGORITHMS,
                &anchors,
                &intermediates,
                time,
                AnyExtendedKeyUsage,
                None,
                Some(&check_anchor),
            )
            .map_err(|e| {
                if root_expired.get() {
                    return X509PopError::RootNotValid;
                }
                match e {
                    webpki::Error::UnknownIssuer => X509PopError::UntrustedChain,
                    webpki::Error::CertExpired { .. } => X509PopError::ChainCertificateExpired,
                    webpki::Error::CertNotValidYet { .. } => {
                        X509PopError::ChainCertificateNotYetValid
                    }
                    webpki::Error::CaUsedAsEndEntity => X509PopError::LeafIsCa,
                    webpki::Error::InvalidSignatureForPublicKey
                    | webpki::Error::UnsupportedSignatureAlgorithmContext(_)
                    | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                        X509PopError::ChainBadSignature
                    }
                    other => X509PopError::InvalidChain {
                        reason: format!("{other:?}"),
                    },
                }
            })?;

        let mut ca_ders: Vec<Vec<u8>> = path
            .intermediate_certificates()
            .map(|cert| cert.der().as_ref().to_vec())
            .collect();
        if let Some((_, root)) = anchors
            .iter()
            .zip(&anchor_roots)
            .find(|(anchor, _)| *anchor == path.anchor())
        {
            ca_ders.push(root.der.clone());
        }
        Ok(ca_ders)
    }
}

// === impl X509PopPending ===

impl X509PopPending {
    /// The challenge to send to the agent.
    pub fn challenge(&self) -> X509PopChallenge {
        X509PopChallenge { nonce: self.nonce }
    }

    /// The agent ID this attestation will give, once the challenge is answered.
    pub fn agent_id(&self) -> &SpiffeId {
        &self.node.agent_id
    }

    /// Checks the agent's answer. Consumes the pending state: a nonce is answered once.
    pub fn finish(self, response: &X509PopResponse) -> Result<AttestedNode, X509PopError> {
        if self.clock.now() > self.deadline {
            return Err(X509PopError::ChallengeExpired);
        }
        if response.nonce != self.nonce {
            return Err(X509PopError::ChallengeMismatch);
        }
        if response.signature.len() > MAX_SIGNATURE_LEN {
            return Err(X509PopError::BadSignature);
        }
        let leaf = CertificateDer::from(self.leaf.as_slice());
        let end_entity =
            EndEntityCert::try_from(&leaf).map_err(|e| X509PopError::MalformedCertificate {
                index: 0,
                reason: format!("{e:?}"),
            })?;
        // The message is built from our own nonce, never from the response's copy.
        end_entity
            .verify_signature(
                self.key.verification_algorithm(),
                &signed_message(&self.nonce),
                &response.signature,
            )
            .map_err(|_| X509PopError::BadSignature)?;
        Ok(self.node)
    }
}

// === impl X509PopClient ===

impl X509PopClient {
    /// A client from a chain (DER, leaf first) and the leaf's private key (PKCS#8 for every key
    /// type; SEC1 for ECDSA and PKCS#1 for RSA also work). Checks the key matches the leaf.
    pub fn new(chain: Vec<Vec<u8>>, key: &PrivateKeyDer<'_>) -> Result<Self, X509PopError> {
        let leaf_der = chain.first().ok_or(X509PopError::EmptyChain)?;
        let leaf = parse_certificate(0, leaf_der)?;
        let key = SigningKey::load(key_kind(&leaf)?, key)?;

        // Sign something and check it with the certificate: a key of the right type but the
        // wrong pair is caught here, not as a refusal from the server.
        let probe = b"lanyard x509pop key check";
        let signature = key.sign(probe)?;
        let leaf_cert = CertificateDer::from(leaf_der.as_slice());
        EndEntityCert::try_from(&leaf_cert)
            .map_err(|e| X509PopError::MalformedCertificate {
                index: 0,
                reason: format!("{e:?}"),
            })?
            .verify_signature(key.kind().verification_algorithm(), probe, &signature)
            .map_err(|_| X509PopError::KeyMismatch)?;
        Ok(Self { chain, key })
    }

    /// A client from PEM: the certificate file (leaf first, then intermediates) and the key file.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, X509PopError> {
        let chain = certificates_from_pem(chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| X509PopError::Pem {
            reason: format!("private key: {e}"),
        })?;
        Self::new(chain, &key)
    }

    /// The first message to send.
    pub fn attestation_data(&self) -> X509PopAttestationData {
        X509PopAttestationData {
            chain: self.chain.clone(),
        }
    }

    /// Answers the server's challenge.
    pub fn respond(&self, challenge: &X509PopChallenge) -> Result<X509PopResponse, X509PopError> {
        Ok(X509PopResponse {
            nonce: challenge.nonce,
            signature: self.key.sign(&signed_message(&challenge.nonce))?,
        })
    }
}

// === impl KeyKind ===

impl KeyKind {
    fn verification_algorithm(self) -> &'static dyn SignatureVerificationAlgorithm {
        match self {
            Self::EcdsaP256 => algs::ECDSA_P256_SHA256,
            Self::EcdsaP384 => algs::ECDSA_P384_SHA384,
            Self::Ed25519 => algs::ED25519,
            Self::Rsa => algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        }
    }
}

// === impl SigningKey ===

impl SigningKey {
    fn load(kind: KeyKind, key: &PrivateKeyDer<'_>) -> Result<Self, X509PopError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| X509PopError::PrivateKey {
            reason: format!("not a {kind:?} key the certificate names ({e})"),
        };
        let wrong_format = || X509PopError::PrivateKey {
            reason: format!("a {kind:?} key cannot be read from this key format"),
        };
        match (kind, key) {
            (KeyKind::EcdsaP256 | KeyKind::EcdsaP384, _) => {
                let alg = if kind == KeyKind::EcdsaP256 {
                    &ECDSA_P256_SHA256_ASN1_SIGNING
                } else {
                    &ECDSA_P384_SHA384_ASN1_SIGNING
                };
                match key {
                    PrivateKeyDer::Pkcs8(der) => {
                        EcdsaKeyPair::from_pkcs8(alg, der.secret_pkcs8_der())
                    }
                    PrivateKeyDer::Sec1(der) => {
                        EcdsaKeyPair::from_private_key_der(alg, der.secret_sec1_der())
                    }
                    _ => return Err(wrong_format()),
                }
                .map(|key| Self::Ecdsa(key, kind))
                .map_err(rejected)
            }
            (KeyKind::Ed25519, PrivateKeyDer::Pkcs8(der)) => {
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                    .map(Self::Ed25519)
                    .map_err(rejected)
            }
            (KeyKind::Rsa, PrivateKeyDer::Pkcs8(der)) => {
                RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
                    .map(Self::Rsa)
                    .map_err(rejected)
            }
            (KeyKind::Rsa, PrivateKeyDer::Pkcs1(der)) => {
                RsaKeyPair::from_der(der.secret_pkcs1_der())
                    .map(Self::Rsa)
                    .map_err(rejected)
            }
            _ => Err(wrong_format()),
        }
    }

    fn kind(&self) -> KeyKind {
        match self {
            Self::Ecdsa(_, kind) => *kind,
            Self::Ed25519(_) => KeyKind::Ed25519,
            Self::Rsa(_) => KeyKind::Rsa,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, X509PopError> {
        let rng = SystemRandom::new();
        match self {
            Self::Ecdsa(key, _) => key
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| X509PopError::Signing),
            Self::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            Self::Rsa(key) => {
                let mut signature = vec![0u8; key.public_modulus_len()];
                key.sign(&RSA_PSS_SHA256, &rng, message, &mut signature)
                    .map_err(|_| X509PopError::Signing)?;
                Ok(signature)
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, …)", self.kind())
    }
}

// === helpers ===

/// The bytes the agent signs.
fn signed_message(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_CONTEXT.len() + NONCE_LEN);
    message.extend_from_slice(SIGNATURE_CONTEXT);
    message.extend_from_slice(nonce);
    message
}

/// SHA-1 of a certificate's DER, lowercase hex: SPIRE's x509pop fingerprint.
pub fn fingerprint(der: &[u8]) -> String {
    sha1_hex(der)
}

fn sha1_hex(der: &[u8]) -> String {
    crate::hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

fn parse_certificate(index: usize, der: &[u8]) -> Result<X509Certificate<'_>, X509PopError> {
    if der.len() > MAX_CERT_LEN {
        return Err(X509PopError::CertificateTooLarge {
            index,
            len: der.len(),
        });
    }
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(X509PopError::MalformedCertificate {
            index,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(X509PopError::MalformedCertificate {
            index,
            reason: e.to_string(),
        }),
    }
}

/// The leaf must be an end entity allowed to sign (SPIRE requires `digitalSignature` too).
fn check_leaf(leaf: &X509Certificate<'_>) -> Result<(), X509PopError> {
    let malformed = |e: x509_parser::error::X509Error| X509PopError::MalformedCertificate {
        index: 0,
        reason: e.to_string(),
    };
    if leaf
        .basic_constraints()
        .map_err(malformed)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(X509PopError::LeafIsCa);
    }
    match leaf.key_usage().map_err(malformed)? {
        Some(ku) if ku.value.digital_signature() => Ok(()),
        _ => Err(X509PopError::NoDigitalSignature),
    }
}

fn key_kind(cert: &X509Certificate<'_>) -> Result<KeyKind, X509PopError> {
    let spki = cert.public_key();
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyKind::EcdsaP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyKind::EcdsaP384),
            Some(c) => Err(X509PopError::UnsupportedKey(format!("EC curve {c}"))),
            None => Err(X509PopError::UnsupportedKey(
                "EC key without a named curve".into(),
            )),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return Ok(KeyKind::Ed25519);
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return Ok(KeyKind::Rsa);
    }
    Err(X509PopError::UnsupportedKey(alg.to_id_string()))
}

fn selectors(
    leaf: &X509Certificate<'_>,
    ca_ders: &[Vec<u8>],
    trust_domain: &TrustDomain,
) -> SelectorSet {
    let mut set = SelectorSet::new();
    let mut push = |value: String| {
        // A value that cannot be a selector (control characters, too long) is left out: no
        // entry can name it anyway.
        if let Ok(selector) = lanyard_core::Selector::new(X509POP_ATTESTOR, &value) {
            set.insert(selector);
        }
    };
    if let Some(cn) = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
    {
        push(format!("subject:cn:{cn}"));
    }
    for der in ca_ders {
        push(format!("ca:fingerprint:{}", sha1_hex(der)));
    }
    push(format!("serialnumber:{}", serial_hex(leaf.raw_serial())));
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        let prefix = format!("x509pop://{}/", trust_domain.as_str());
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Some(rest) = uri.strip_prefix(&prefix)
            {
                // As SPIRE: the URI's path, without query or fragment, is `key/value`.
                let path = rest.split(['?', '#']).next().unwrap_or_default();
                if let Some((key, value)) = path.trim_matches('/').split_once('/')
                    && !key.is_empty()
                    && !value.is_empty()
                {
                    push(format!("san:{key}:{value}"));
                }
            }
        }
    }
    set
}

/// The serial as SPIRE writes it: lowercase hex of its big-endian bytes, without leading zero
/// bytes (so always an even number of digits).
fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let hex = crate::hex(raw.get(start..).unwrap_or_default());
    if hex.is_empty() { "00".to_owned() } else { hex }
}

fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, X509PopError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .map(|cert| cert.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| X509PopError::Pem {
            reason: format!("certificates: {e}"),
        })?;
    if chain.is_empty() {
        return Err(X509PopError::EmptyChain);
    }
    Ok(chain)
}

/// Accepts any extended key usage: node certificates come from many PKIs, and SPIRE does not
/// restrict them either. A malformed extension is still refused.
#[derive(Debug, Clone, Copy)]
struct AnyExtendedKeyUsage;

impl ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}
