//! Trust bundles: the X.509 roots and JWT public keys of one trust domain, and the SPIFFE bundle
//! JSON format (SPIFFE Trust Domain and Bundle §4) they travel in.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::TrustDomain;

/// One X.509 authority: a CA certificate, DER-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct X509Authority {
    der: Vec<u8>,
}

/// One JWT authority: a public key and the `kid` that tokens name it by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwtAuthority {
    key_id: String,
    /// The public key as a DER SubjectPublicKeyInfo.
    public_key_der: Vec<u8>,
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
