//! An upstream CA: the CA's certificates become intermediates signed by it.
//!
//! The caller reads the files (this crate does no configuration I/O) and passes their bytes:
//! the upstream CA certificate, optionally followed by its own intermediates; its private key; and
//! optionally the upstream root(s). Without roots, the last certificate of the chain must be
//! self-issued and is taken as the root. Roots go into the trust bundle; every other upstream
//! certificate travels in each SVID's chain, after lanyard's intermediate.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cert::{CertInfo, CertSigner};
use crate::{CaError, oid};

/// An upstream CA that signs lanyard's intermediates.
#[derive(Debug)]
pub struct UpstreamCa {
    /// The upstream CA certificate that signs our intermediates.
    pub(crate) info: CertInfo,
    /// Certificates to append after our intermediate in every SVID chain (not roots).
    pub(crate) chain: Vec<Vec<u8>>,
    /// The roots that anchor the chain; they go into the bundle.
    pub(crate) roots: Vec<Vec<u8>>,
    pub(crate) key: UpstreamKey,
}

/// The upstream CA's private key; `Debug` prints `…`.
pub(crate) enum UpstreamKey {
    Ecdsa(EcdsaKeyPair, &'static [u8]),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

// === impl UpstreamCa ===

impl UpstreamCa {
    /// Reads the upstream CA from PEM bytes: `cert_chain_pem` (the CA certificate first, then any
    /// intermediates above it), `key_pem` (PKCS#8, SEC1 or PKCS#1; EC P-256/P-384, Ed25519 or
    /// RSA), and `roots_pem` (optional; see the module docs).
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        roots_pem: Option<&[u8]>,
    ) -> Result<Self, CaError> {
        let mut certs = parse_certs(cert_chain_pem, "certificate")?;
        let roots = match roots_pem {
            Some(pem) => parse_certs(pem, "roots")?,
            None => {
                let last = certs.last().ok_or_else(|| upstream("no certificate"))?;
                let info = CertInfo::parse(last).map_err(upstream)?;
                if !info.self_issued {
                    return Err(upstream(
                        "the last certificate of the chain is not a root; pass the roots explicitly",
                    ));
                }
                vec![last.clone()]
            }
        };
        for root in &roots {
            CertInfo::parse(root).map_err(upstream)?;
        }
        let first = certs.first().ok_or_else(|| upstream("no certificate"))?;
        let info = CertInfo::parse(first).map_err(upstream)?;
        if !info.can_sign_certs {
            return Err(upstream(
                "the certificate is not a CA (basicConstraints cA and keyUsage keyCertSign)",
            ));
        }
        let key = UpstreamKey::from_pem(key_pem)?;
        if key.public_key_bits() != info.public_key_bits.as_slice() {
            return Err(upstream("the private key does not match the certificate"));
        }
        certs.retain(|c| !roots.contains(c));
        Ok(Self {
            info,
            chain: certs,
            roots,
            key,
        })
    }

    /// The upstream roots, DER; they anchor the trust bundle.
    pub fn roots_der(&self) -> &[Vec<u8>] {
        &self.roots
    }

    /// When the upstream CA certificate expires; intermediates never outlive it.
    pub fn not_after(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.info.not_after)
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| upstream(format!("{what} PEM does not parse: {e}")))?;
        out.push(cert.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(upstream(format!("{what} PEM holds no CERTIFICATE block")));
    }
    Ok(out)
}

fn upstream(msg: impl Into<String>) -> CaError {
    CaError::Upstream(msg.into())
}

// === impl UpstreamKey ===

impl UpstreamKey {
    fn from_pem(pem: &[u8]) -> Result<Self, CaError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| upstream("the key PEM holds no private key"))?;
        let bad = || upstream("the private key is not EC P-256/P-384, Ed25519 or RSA");
        match &der {
            PrivateKeyDer::Pkcs8(k) => {
                let b = k.secret_pkcs8_der();
                if let Ok(k) =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, b)
                {
                    Ok(Self::Ecdsa(k, oid::ALG_ECDSA_SHA256))
                } else if let Ok(k) =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, b)
                {
                    Ok(Self::Ecdsa(k, oid::ALG_ECDSA_SHA384))
                } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(b) {
                    Ok(Self::Ed25519(k))
                } else {
                    RsaKeyPair::from_pkcs8(b).map(Self::Rsa).map_err(|_| bad())
                }
            }
            PrivateKeyDer::Sec1(k) => {
                let b = k.secret_sec1_der();
                EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, b)
                    .map(|k| Self::Ecdsa(k, oid::ALG_ECDSA_SHA256))
                    .or_else(|_| {
                        EcdsaKeyPair::from_private_key_der(
                            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                            b,
                        )
                        .map(|k| Self::Ecdsa(k, oid::ALG_ECDSA_SHA384))
                    })
                    .map_err(|_| bad())
            }
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(Self::Rsa)
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    fn public_key_bits(&self) -> &[u8] {
        match self {
            Self::Ecdsa(k, _) => k.public_key().as_ref(),
            Self::Ed25519(k) => k.public_key().as_ref(),
            Self::Rsa(k) => k.public_key().as_ref(),
        }
    }
}

impl CertSigner for UpstreamKey {
    fn signature_algorithm_der(&self) -> &'static [u8] {
        match self {
            Self::Ecdsa(_, alg) => alg,
            Self::Ed25519(_) => oid::ALG_ED25519,
            Self::Rsa(_) => oid::ALG_RSA_SHA256,
        }
    }

    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CaError> {
        let rng = SystemRandom::new();
        match self {
            Self::Ecdsa(k, _) => k
                .sign(&rng, tbs)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CaError::Signing),
            Self::Ed25519(k) => Ok(k.sign(tbs).as_ref().to_vec()),
            Self::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, tbs, &mut sig)
                    .map_err(|_| CaError::Signing)?;
                Ok(sig)
            }
        }
    }
}

impl fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Ecdsa(..) => "ecdsa",
            Self::Ed25519(_) => "ed25519",
            Self::Rsa(_) => "rsa",
        };
        write!(f, "UpstreamKey({kind}, …)")
    }
}
