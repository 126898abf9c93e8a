//! Fresh keys and CSRs: every SVID the agent asks for (its own and each entry's) gets a new EC
//! P-256 key, generated with aws-lc-rs, and a PKCS#10 CSR signed with it. The server uses only the
//! CSR's public key, so the CSR names nothing.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use lanyard_workload::SvidKey;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::AgentError;

/// A new private key and a CSR for it.
#[derive(Debug)]
pub(crate) struct KeyAndCsr {
    pub(crate) key: SvidKey,
    /// PKCS#10, DER.
    pub(crate) csr: Vec<u8>,
    /// The public key as a DER SubjectPublicKeyInfo, to check the certificate that comes back.
    pub(crate) spki: Vec<u8>,
}

/// Generates an EC P-256 key and a CSR signed with it.
pub(crate) fn generate() -> Result<KeyAndCsr, AgentError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| AgentError::Key("EC P-256 key generation failed".into()))?;
    let key = SvidKey::from_pkcs8_der(pkcs8.as_ref().to_vec());
    let der = PrivatePkcs8KeyDer::from(key.as_pkcs8_der());
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Key(format!("cannot load the new key: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&pair)
        .map_err(|e| AgentError::Key(format!("cannot sign the CSR: {e}")))?;
    Ok(KeyAndCsr {
        key,
        csr: csr.der().to_vec(),
        spki: pair.subject_public_key_info(),
    })
}

/// The DER SubjectPublicKeyInfo of a PKCS#8 EC P-256 key, to check a persisted key against its
/// certificate.
pub(crate) fn spki_of(key: &SvidKey) -> Result<Vec<u8>, AgentError> {
    let der = PrivatePkcs8KeyDer::from(key.as_pkcs8_der());
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Key(format!("not an EC P-256 PKCS#8 key: {e}")))?;
    Ok(pair.subject_public_key_info())
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub(crate) fn spki_of_cert(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[test]
    fn csr_carries_the_new_public_key() {
        let first = generate().unwrap();
        let second = generate().unwrap();
        assert_ne!(first.spki, second.spki);
        assert_eq!(spki_of(&first.key).unwrap(), first.spki);
        use x509_parser::prelude::FromDer as _;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&first.csr)
                .unwrap();
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            first.spki.as_slice()
        );
    }
}
