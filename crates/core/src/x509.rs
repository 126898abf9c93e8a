//! X509-SVID verification (SPIFFE X509-SVID §4, §5): the SPIFFE checks on the leaf, then RFC 5280
//! path validation to a root in the bundle of **the leaf's own trust domain** only.
//!
//! The leaf and intermediates are checked with `x509-parser`, which tells exactly which rule broke;
//! the path (signatures, validity, CA flags, path length, name constraints) is built by
//! `rustls-webpki` with aws-lc-rs algorithms. No I/O: the caller passes the time to verify at.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::aws_lc_rs as algs;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::bundle::BundleSet;
use crate::{IdError, SpiffeId, TrustDomain};

/// Most certificates accepted in one chain (leaf included). SPIRE's chains are 2 to 4 long.
pub const MAX_CHAIN_LEN: usize = 16;

/// The algorithms a chain may be signed with: what SPIFFE issuers use, all from aws-lc-rs.
static SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    algs::ECDSA_P256_SHA256,
    algs::ECDSA_P256_SHA384,
    algs::ECDSA_P256_SHA512,
    algs::ECDSA_P384_SHA256,
    algs::ECDSA_P384_SHA384,
    algs::ECDSA_P384_SHA512,
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

/// Why an X509-SVID was refused. Each variant names one cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509SvidError {
    #[error("the certificate chain is empty")]
    EmptyChain,
    #[error("the certificate chain has {len} certificates; the limit is {MAX_CHAIN_LEN}")]
    ChainTooLong { len: usize },
    #[error("certificate {index} of the chain is not a DER X.509 certificate: {reason}")]
    MalformedCertificate { index: usize, reason: String },
    #[error("the leaf has no URI SAN")]
    MissingUriSan,
    #[error("the leaf has {count} URI SANs; an X509-SVID has exactly one")]
    MultipleUriSans { count: usize },
    #[error("the leaf's URI SAN {uri:?} is not a SPIFFE ID")]
    InvalidSpiffeId {
        uri: String,
        #[source]
        source: IdError,
    },
    #[error("the leaf's SPIFFE ID {id} has no path: a leaf SVID needs a non-root path")]
    RootIdLeaf { id: SpiffeId },
    #[error("the leaf has an empty subject but its SAN extension is not critical")]
    SanNotCritical,
    #[error("the leaf is a CA (basicConstraints cA=true)")]
    LeafIsCa,
    #[error("the leaf has no keyUsage extension")]
    MissingKeyUsage,
    #[error("the leaf's keyUsage extension is not critical")]
    KeyUsageNotCritical,
    #[error("the leaf's keyUsage lacks digitalSignature")]
    MissingDigitalSignature,
    #[error("the leaf's keyUsage has keyCertSign")]
    LeafKeyCertSign,
    #[error("the leaf's keyUsage has cRLSign")]
    LeafCrlSign,
    #[error("the leaf's extendedKeyUsage lacks serverAuth or clientAuth")]
    ExtendedKeyUsage,
    #[error("certificate {index} of the chain is not a CA (basicConstraints cA=true is missing)")]
    IntermediateNotCa { index: usize },
    #[error("certificate {index} of the chain lacks keyUsage keyCertSign")]
    IntermediateMissingKeyCertSign { index: usize },
    #[error(
        "certificate {index} of the chain is a signing certificate with a path in its SPIFFE ID {id}"
    )]
    IntermediateIdHasPath { index: usize, id: SpiffeId },
    #[error("the leaf expired at {}", crate::clock::unix_time(not_after))]
    Expired { not_after: SystemTime },
    #[error("the leaf is not valid before {}", crate::clock::unix_time(not_before))]
    NotYetValid { not_before: SystemTime },
    #[error("an intermediate certificate of the chain has expired")]
    IntermediateExpired,
    #[error("an intermediate certificate of the chain is not valid yet")]
    IntermediateNotYetValid,
    #[error("the root the chain leads to has expired")]
    AuthorityExpired,
    #[error("the root the chain leads to is not valid yet")]
    AuthorityNotYetValid,
    #[error("no bundle for trust domain {trust_domain}")]
    NoBundle { trust_domain: TrustDomain },
    #[error("the bundle of trust domain {trust_domain} has no X.509 authorities")]
    NoX509Authorities { trust_domain: TrustDomain },
    #[error("the chain does not lead to an X.509 authority of trust domain {trust_domain}")]
    UntrustedChain { trust_domain: TrustDomain },
    #[error("a signature in the chain is invalid or uses an unsupported algorithm")]
    BadSignature,
    #[error("a pathLenConstraint in the chain is violated")]
    PathLenConstraint,
    #[error("a name constraint in the chain is violated")]
    NameConstraint,
    #[error("path validation failed: {reason}")]
    PathValidation { reason: String },
    #[error("the verification time is before 1970")]
    TimeBeforeEpoch,
}

/// An X509-SVID whose chain was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedX509Svid {
    spiffe_id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
}

// === impl VerifiedX509Svid ===

impl VerifiedX509Svid {
    /// The leaf's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The leaf's `notBefore`.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's `notAfter`.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// Verifies an X509-SVID chain (DER certificates, leaf first, then intermediates) at time `at`.
///
/// 1. The leaf meets X509-SVID §4: exactly one URI SAN, a SPIFFE ID with a non-root path, a
///    critical SAN if the subject is empty, `cA=false`, a critical keyUsage with
///    `digitalSignature` and without `keyCertSign`/`cRLSign`, and, if it has an extendedKeyUsage,
///    both `serverAuth` and `clientAuth` (or `anyExtendedKeyUsage`). The leaf is valid at `at`.
/// 2. Every further certificate is a CA with `keyCertSign`, and a SPIFFE ID it carries has no
///    path (X509-SVID §4.1, §4.3).
/// 3. RFC 5280 path validation at `at` to an X.509 authority of the bundle of the leaf's trust
///    domain (never another trust domain's), and that authority is itself valid at `at`.
pub fn verify_x509_svid(
    chain: &[Vec<u8>],
    bundles: &BundleSet,
    at: SystemTime,
) -> Result<VerifiedX509Svid, X509SvidError> {
    let (leaf_der, intermediates_der) = chain.split_first().ok_or(X509SvidError::EmptyChain)?;
    if chain.len() > MAX_CHAIN_LEN {
        return Err(X509SvidError::ChainTooLong { len: chain.len() });
    }
    let leaf = parse_certificate(0, leaf_der)?;
    let spiffe_id = check_leaf(&leaf)?;
    let (not_before, not_after) = validity(&leaf);
    if at < not_before {
        return Err(X509SvidError::NotYetValid { not_before });
    }
    if at > not_after {
        return Err(X509SvidError::Expired { not_after });
    }
    for (i, der) in intermediates_der.iter().enumerate() {
        let index = i + 1;
        check_signing_certificate(index, &parse_certificate(index, der)?)?;
    }

    let trust_domain = spiffe_id.trust_domain();
    let bundle = bundles
        .get(&trust_domain)
        .ok_or_else(|| X509SvidError::NoBundle {
            trust_domain: trust_domain.clone(),
        })?;
    if bundle.x509_authorities().is_empty() {
        return Err(X509SvidError::NoX509Authorities { trust_domain });
    }

    let time = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| X509SvidError::TimeBeforeEpoch)?;
    let time = UnixTime::since_unix_epoch(time);

    // Each usable authority as a trust anchor, with what webpki does not check on anchors: it
    // treats them as bare names and keys, but a SPIFFE root that has expired must not vouch for
    // anything, and its pathLenConstraint still binds (Go's verifier, which go-spiffe uses,
    // enforces both).
    let authority_ders: Vec<CertificateDer<'_>> = bundle
        .x509_authorities()
        .iter()
        .map(|a| CertificateDer::from(a.der()))
        .collect();
    let mut anchors: Vec<TrustAnchor<'_>> = Vec::new();
    let mut anchor_limits: Vec<AnchorLimits> = Vec::new();
    for der in &authority_ders {
        let (Ok(anchor), Ok((_, cert))) = (
            webpki::anchor_from_trusted_cert(der),
            x509_parser::parse_x509_certificate(der.as_ref()),
        ) else {
            continue;
        };
        anchors.push(anchor);
        anchor_limits.push(AnchorLimits::of(&cert));
    }

    let leaf_cert = CertificateDer::from(leaf_der.as_slice());
    let end_entity =
        EndEntityCert::try_from(&leaf_cert).map_err(|e| X509SvidError::MalformedCertificate {
            index: 0,
            reason: format!("{e:?}"),
        })?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates_der
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();

    // Set when a path reached an anchor whose limits it breaks; webpki then keeps looking for
    // another path and reports UnknownIssuer if there is none.
    let anchor_error: Cell<Option<X509SvidError>> = Cell::new(None);
    let check_anchor = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let intermediates = path.intermediate_certificates().count();
        // Several bundle entries may share one name and key (a re-issued root): any will do.
        let mut first_error = None;
        for limits in anchors
            .iter()
            .zip(&anchor_limits)
            .filter(|(anchor, _)| *anchor == path.anchor())
            .map(|(_, limits)| limits)
        {
            match limits.check(at, intermediates) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        anchor_error.set(first_error);
        Err(webpki::Error::UnknownIssuer)
    };

    end_entity
        .verify_for_usage(
            SIGNATURE_ALGORITHMS,
            &anchors,
            &intermediates,
            time,
            AnyExtendedKeyUsage,
            None,
            Some(&check_anchor),
        )
        // The callback runs only on paths whose signatures all verified: if one reached a root
        // and broke its limits, that is the answer, whatever other candidate paths failed on.
        .map_err(|e| match anchor_error.take() {
            Some(anchor_error) => anchor_error,
            None => map_webpki_error(e, &trust_domain),
        })?;

    Ok(VerifiedX509Svid {
        spiffe_id,
        not_before,
        not_after,
    })
}

/// The SPIFFE checks on a leaf alone (X509-SVID §4), without chain or time: what an issuer runs
/// on a certificate it just minted, and what [`verify_x509_svid`] runs first.
pub fn check_x509_svid_leaf(der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    check_leaf(&parse_certificate(0, der)?)
}

fn parse_certificate(index: usize, der: &[u8]) -> Result<X509Certificate<'_>, X509SvidError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        X509SvidError::MalformedCertificate {
            index,
            reason: e.to_string(),
        }
    })?;
    if !rest.is_empty() {
        return Err(X509SvidError::MalformedCertificate {
            index,
            reason: format!("{} bytes follow the certificate", rest.len()),
        });
    }
    Ok(cert)
}

fn malformed_extension(index: usize, e: impl std::fmt::Display) -> X509SvidError {
    X509SvidError::MalformedCertificate {
        index,
        reason: format!("extension: {e}"),
    }
}

fn check_leaf(cert: &X509Certificate<'_>) -> Result<SpiffeId, X509SvidError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| malformed_extension(0, e))?
        .ok_or(X509SvidError::MissingUriSan)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(X509SvidError::MissingUriSan),
        [uri] => *uri,
        _ => return Err(X509SvidError::MultipleUriSans { count: uris.len() }),
    };
    let spiffe_id = SpiffeId::parse(uri).map_err(|source| X509SvidError::InvalidSpiffeId {
        uri: uri.to_owned(),
        source,
    })?;
    if spiffe_id.is_trust_domain_id() {
        return Err(X509SvidError::RootIdLeaf { id: spiffe_id });
    }
    // RFC 5280 §4.1.2.6, required by X509-SVID §4: with no subject, the SAN carries the identity
    // and must be critical.
    if cert.subject().iter().next().is_none() && !san.critical {
        return Err(X509SvidError::SanNotCritical);
    }

    let basic_constraints = cert
        .basic_constraints()
        .map_err(|e| malformed_extension(0, e))?;
    if basic_constraints.is_some_and(|bc| bc.value.ca) {
        return Err(X509SvidError::LeafIsCa);
    }

    let key_usage = cert
        .key_usage()
        .map_err(|e| malformed_extension(0, e))?
        .ok_or(X509SvidError::MissingKeyUsage)?;
    if !key_usage.critical {
        return Err(X509SvidError::KeyUsageNotCritical);
    }
    if key_usage.value.key_cert_sign() {
        return Err(X509SvidError::LeafKeyCertSign);
    }
    if key_usage.value.crl_sign() {
        return Err(X509SvidError::LeafCrlSign);
    }
    if !key_usage.value.digital_signature() {
        return Err(X509SvidError::MissingDigitalSignature);
    }

    // X509-SVID §4.4: an SVID authenticates both ends of a connection, so an EKU, if present,
    // names both purposes.
    if let Some(eku) = cert
        .extended_key_usage()
        .map_err(|e| malformed_extension(0, e))?
    {
        let eku = eku.value;
        if !(eku.any || (eku.server_auth && eku.client_auth)) {
            return Err(X509SvidError::ExtendedKeyUsage);
        }
    }
    Ok(spiffe_id)
}

/// A certificate after the leaf: a CA allowed to sign certificates (RFC 5280 §4.2.1.3, §4.2.1.9;
/// go-spiffe refuses chains where it is not), whose SPIFFE ID, if any, has no path.
fn check_signing_certificate(
    index: usize,
    cert: &X509Certificate<'_>,
) -> Result<(), X509SvidError> {
    let basic_constraints = cert
        .basic_constraints()
        .map_err(|e| malformed_extension(index, e))?;
    if !basic_constraints.is_some_and(|bc| bc.value.ca) {
        return Err(X509SvidError::IntermediateNotCa { index });
    }
    let key_usage = cert
        .key_usage()
        .map_err(|e| malformed_extension(index, e))?;
    if !key_usage.is_some_and(|ku| ku.value.key_cert_sign()) {
        return Err(X509SvidError::IntermediateMissingKeyCertSign { index });
    }
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| malformed_extension(index, e))?
    {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Ok(id) = SpiffeId::parse(uri)
                && !id.is_trust_domain_id()
            {
                return Err(X509SvidError::IntermediateIdHasPath { index, id });
            }
        }
    }
    Ok(())
}

/// What a root of the bundle demands of a path that ends at it.
#[derive(Debug, Clone, Copy)]
struct AnchorLimits {
    not_before: SystemTime,
    not_after: SystemTime,
    /// pathLenConstraint: how many intermediates may follow the root.
    max_intermediates: Option<u32>,
}

impl AnchorLimits {
    fn of(cert: &X509Certificate<'_>) -> Self {
        let (not_before, not_after) = validity(cert);
        let max_intermediates = cert
            .basic_constraints()
            .ok()
            .flatten()
            .and_then(|bc| bc.value.path_len_constraint);
        Self {
            not_before,
            not_after,
            max_intermediates,
        }
    }

    fn check(&self, at: SystemTime, intermediates: usize) -> Result<(), X509SvidError> {
        if at < self.not_before {
            return Err(X509SvidError::AuthorityNotYetValid);
        }
        if at > self.not_after {
            return Err(X509SvidError::AuthorityExpired);
        }
        if self
            .max_intermediates
            .is_some_and(|max| intermediates > max as usize)
        {
            return Err(X509SvidError::PathLenConstraint);
        }
        Ok(())
    }
}

/// A certificate's (`notBefore`, `notAfter`) as `SystemTime`s. Shared by every crate that reads
/// certificates with x509-parser, so dates convert one way everywhere.
pub fn validity(cert: &X509Certificate<'_>) -> (SystemTime, SystemTime) {
    let validity = cert.validity();
    (
        to_system_time(validity.not_before.timestamp()),
        to_system_time(validity.not_after.timestamp()),
    )
}

fn to_system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
    // X.509 dates stop at year 9999, which SystemTime holds on every platform lanyard runs on.
    .unwrap_or(UNIX_EPOCH)
}

fn map_webpki_error(error: webpki::Error, trust_domain: &TrustDomain) -> X509SvidError {
    use webpki::Error as E;
    match error {
        E::UnknownIssuer => X509SvidError::UntrustedChain {
            trust_domain: trust_domain.clone(),
        },
        // The leaf's own dates were checked first, so these are about an intermediate.
        E::CertExpired { .. } => X509SvidError::IntermediateExpired,
        E::CertNotValidYet { .. } => X509SvidError::IntermediateNotYetValid,
        E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => X509SvidError::BadSignature,
        E::CaUsedAsEndEntity => X509SvidError::LeafIsCa,
        E::PathLenConstraintViolated => X509SvidError::PathLenConstraint,
        E::NameConstraintViolation => X509SvidError::NameConstraint,
        other => X509SvidError::PathValidation {
            reason: format!("{other:?}"),
        },
    }
}

/// Accepts every extended key usage: the SPIFFE rule for the leaf is checked separately, and an
/// EKU on a CA does not restrict SVIDs (go-spiffe verifies with `ExtKeyUsageAny`).
#[derive(Debug, Clone, Copy)]
struct AnyExtendedKeyUsage;

impl ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        // Still refuse a malformed extension.
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "x509_tests.rs"]
mod tests;
