//! The CA journal: the small record of authorities and their states that lets a restarted CA
//! continue where it stopped, with the same bundle.
//!
//! It holds certificates, public keys and key names, never private keys (those stay in the key
//! manager). The caller stores it (the store crate keeps it as a blob) whenever
//! [`Journal::revision`] changes.

use serde::{Deserialize, Serialize};

use lanyard_core::TrustDomain;

use crate::CaError;
use crate::key_manager::KeyId;

/// The journal format version this crate writes and reads.
pub const JOURNAL_VERSION: u32 = 1;

/// Where an authority is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorityState {
    /// Published in the bundle, not yet signing.
    Prepared,
    /// Signing new SVIDs; exactly one per kind.
    Active,
    /// No longer signing; published until everything it signed has expired.
    Old,
}

/// The serialisable state of a CA. Compare [`revision`](Self::revision)s to tell whether it
/// changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub(crate) version: u32,
    pub(crate) trust_domain: TrustDomain,
    /// Increases on every change of the journal.
    pub(crate) revision: u64,
    /// `spiffe_sequence` of the bundle built from this journal.
    pub(crate) bundle_sequence: u64,
    /// In creation order (which is also the order of the bundle).
    pub(crate) x509_authorities: Vec<X509Record>,
    pub(crate) jwt_authorities: Vec<JwtRecord>,
}

/// One X.509 CA certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct X509Record {
    /// Hex subject key identifier: the authority's name in the API.
    pub(crate) id: String,
    pub(crate) key_id: KeyId,
    pub(crate) state: AuthorityState,
    pub(crate) tainted: bool,
    #[serde(with = "b64")]
    pub(crate) certificate: Vec<u8>,
    /// Upstream certificates that follow this one in SVID chains (empty when self-signed).
    #[serde(with = "b64_list")]
    pub(crate) upstream_chain: Vec<Vec<u8>>,
    /// The roots that anchor this authority: itself when self-signed, else the upstream roots.
    #[serde(with = "b64_list")]
    pub(crate) roots: Vec<Vec<u8>>,
    /// Unix seconds, as in the certificate.
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

/// One JWT signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JwtRecord {
    /// The `kid`.
    pub(crate) id: String,
    pub(crate) key_id: KeyId,
    pub(crate) state: AuthorityState,
    pub(crate) tainted: bool,
    /// DER SubjectPublicKeyInfo.
    #[serde(with = "b64")]
    pub(crate) public_key: Vec<u8>,
    /// Unix seconds: creation, and the latest `exp` a token signed with it may carry.
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

impl Journal {
    /// An empty journal: a CA built from it creates its first authorities.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            version: JOURNAL_VERSION,
            trust_domain,
            revision: 0,
            bundle_sequence: 0,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Increases on every change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn bundle_sequence(&self) -> u64 {
        self.bundle_sequence
    }

    /// The bundle of this journal's authorities, without sequence or refresh hint: what a
    /// server sharing the trust domain adds to its own when the bundle is the union of several
    /// servers' CAs.
    pub fn authorities(&self) -> Result<lanyard_core::Bundle, crate::CaError> {
        crate::ca::journal_bundle(self)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: all map keys are strings.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(json: &[u8]) -> Result<Self, CaError> {
        let journal: Self =
            serde_json::from_slice(json).map_err(|e| CaError::Journal(e.to_string()))?;
        if journal.version != JOURNAL_VERSION {
            return Err(CaError::Journal(format!(
                "version {} is not supported (this build reads version {JOURNAL_VERSION})",
                journal.version
            )));
        }
        Ok(journal)
    }
}

/// Common view of the two record kinds, for the rotation schedule.
pub(crate) trait Record {
    fn state(&self) -> AuthorityState;
    fn set_state(&mut self, state: AuthorityState);
    fn not_before(&self) -> u64;
    fn not_after(&self) -> u64;
    fn key_id(&self) -> &KeyId;
}

macro_rules! impl_record {
    ($t:ty) => {
        impl Record for $t {
            fn state(&self) -> AuthorityState {
                self.state
            }
            fn set_state(&mut self, state: AuthorityState) {
                self.state = state;
            }
            fn not_before(&self) -> u64 {
                self.not_before
            }
            fn not_after(&self) -> u64 {
                self.not_after
            }
            fn key_id(&self) -> &KeyId {
                &self.key_id
            }
        }
    };
}
impl_record!(X509Record);
impl_record!(JwtRecord);

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64_list {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::ser::SerializeSeq as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&STANDARD.encode(item))?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}
