//! Shared test fixtures.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_ca::{Ca, CaConfig, KeyManager, MemoryKeyManager, X509SvidRequest};
use lanyard_core::{Bundle, BundleSet, ManualClock, SharedClock, SpiffeId, TrustDomain};
use rcgen::PublicKeyData as _;

pub(crate) const TD: &str = "example.org";

/// A fixed start time (2026-01-01T00:00:00Z) so failures reproduce.
pub(crate) fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

pub(crate) fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

pub(crate) fn id(path: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{TD}{path}")).unwrap()
}

pub(crate) fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(t0()))
}

pub(crate) fn shared(clock: &Arc<ManualClock>) -> SharedClock {
    Arc::clone(clock) as SharedClock
}

pub(crate) fn memory_keys() -> Arc<dyn KeyManager> {
    Arc::new(MemoryKeyManager::new())
}

/// A self-signed CA with default settings on `clock`.
pub(crate) fn new_ca(clock: &Arc<ManualClock>) -> Ca {
    Ca::new(CaConfig::new(td()), memory_keys(), shared(clock)).unwrap()
}

pub(crate) fn bundle_set(bundle: Bundle) -> BundleSet {
    let mut set = BundleSet::new();
    set.insert(bundle);
    set
}

/// A workload key pair: PKCS#8 DER (for the `spiffe` crate) and its SPKI DER.
pub(crate) struct WorkloadKey {
    pub(crate) key_pair: rcgen::KeyPair,
}

impl WorkloadKey {
    pub(crate) fn p256() -> Self {
        Self::new(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    pub(crate) fn new(alg: &'static rcgen::SignatureAlgorithm) -> Self {
        Self {
            key_pair: rcgen::KeyPair::generate_for(alg).unwrap(),
        }
    }

    pub(crate) fn spki(&self) -> Vec<u8> {
        self.key_pair.subject_public_key_info()
    }

    pub(crate) fn pkcs8(&self) -> Vec<u8> {
        self.key_pair.serialize_der()
    }

    /// A CSR that asks for things the CA must ignore: another subject and foreign SANs.
    pub(crate) fn csr(&self) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(vec!["evil.example.com".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "requested-cn");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://evil.org/admin").unwrap(),
        ));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .serialize_request(&self.key_pair)
            .unwrap()
            .der()
            .to_vec()
    }
}

pub(crate) fn request(path: &str) -> X509SvidRequest {
    X509SvidRequest::new(id(path))
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}
