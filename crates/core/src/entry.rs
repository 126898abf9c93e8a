//! Registration entries: "a caller with these selectors, under this parent, is this SPIFFE ID".
//!
//! The fields are SPIRE's, so that its users find what they know. An entry is built from an
//! [`EntrySpec`] (plain data from a request or a database row) by [`RegistrationEntry::new`], which
//! checks every rule; a `RegistrationEntry` that exists is valid.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{IdError, SelectorSet, SpiffeId, TrustDomain};

/// Default X509-SVID lifetime (SPIRE's).
pub const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(3600);
/// Default JWT-SVID lifetime (SPIRE's).
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// Shortest SVID lifetime an entry may ask for.
pub const MIN_SVID_TTL: Duration = Duration::from_secs(1);
/// Longest SVID lifetime an entry may ask for: SVIDs are meant to be short-lived, and the CA caps
/// each at its own expiry anyway.
pub const MAX_SVID_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest entry id, in bytes.
pub const MAX_ENTRY_ID_LEN: usize = 64;
/// Longest hint, in bytes (Workload API: hints SHOULD NOT exceed 1024 bytes).
pub const MAX_HINT_LEN: usize = 1024;
/// Most DNS names on one entry.
pub const MAX_DNS_NAMES: usize = 64;

/// Why an entry, entry id or DNS name was refused. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    #[error("spiffe_id: {0}")]
    SpiffeId(IdError),
    #[error("parent_id: {0}")]
    ParentId(IdError),
    #[error("spiffe_id: a workload ID needs a path; `{0}` is the trust domain's own ID")]
    RootSpiffeId(SpiffeId),
    #[error(
        "spiffe_id: `{0}` is reserved for lanyard's own server and agents; an entry may have it as parent_id, not as spiffe_id"
    )]
    ReservedSpiffeId(SpiffeId),
    #[error("spiffe_id: `{id}` is not in trust domain `{expected}`")]
    ForeignTrustDomain { id: SpiffeId, expected: TrustDomain },
    #[error("parent_id: `{id}` is not in trust domain `{expected}`")]
    ForeignParent { id: SpiffeId, expected: TrustDomain },
    #[error("selectors: an entry needs at least one selector")]
    NoSelectors,
    #[error("{field}: {ttl:?} is out of range; allowed is {MIN_SVID_TTL:?} to {MAX_SVID_TTL:?}")]
    TtlOutOfRange { field: &'static str, ttl: Duration },
    #[error("dns_names: {0}")]
    DnsName(#[from] DnsNameError),
    #[error("dns_names: at most {MAX_DNS_NAMES} names are allowed, got {0}")]
    TooManyDnsNames(usize),
    #[error("hint: {len} bytes is over the limit of {MAX_HINT_LEN}")]
    HintTooLong { len: usize },
    #[error("hint: must not contain control characters")]
    HintControlChar,
    #[error("entry id: must be 1 to {MAX_ENTRY_ID_LEN} characters of a-z, A-Z, 0-9, `-` and `_`")]
    BadEntryId,
}

/// Why a string is not a DNS name usable as an X.509 SAN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsNameError {
    #[error("DNS name is empty")]
    Empty,
    #[error("DNS name `{0}` is longer than 253 bytes")]
    TooLong(String),
    #[error(
        "DNS name `{name}`: label `{label}` must be 1 to 63 characters of a-z, 0-9 and `-`, not starting or ending with `-`"
    )]
    BadLabel { name: String, label: String },
}

/// An entry's server-assigned id (SPIRE uses UUIDs; any 1–64 chars of `[A-Za-z0-9_-]` are
/// accepted so that ids from an import survive).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(String);

/// A DNS name for an X.509 SAN, lowercase, optionally with a leading `*.` wildcard label.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

/// The unchecked fields of an entry, as they arrive from a request or a database row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub id: EntryId,
    pub spiffe_id: SpiffeId,
    pub parent_id: SpiffeId,
    pub selectors: SelectorSet,
    pub x509_svid_ttl: Duration,
    pub jwt_svid_ttl: Duration,
    pub dns_names: Vec<DnsName>,
    pub federates_with: Vec<TrustDomain>,
    pub admin: bool,
    pub downstream: bool,
    pub hint: String,
    pub expires_at: Option<SystemTime>,
    pub revision: u64,
}

/// A validated registration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationEntry {
    spec: EntrySpec,
}

// === impl EntryId ===

impl EntryId {
    pub fn new(id: &str) -> Result<Self, EntryError> {
        let ok = !id.is_empty()
            && id.len() <= MAX_ENTRY_ID_LEN
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(EntryError::BadEntryId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EntryId {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", self.0)
    }
}

// === impl DnsName ===

impl DnsName {
    /// Parses a DNS name; uppercase letters are refused rather than folded, like IDs.
    pub fn new(name: &str) -> Result<Self, DnsNameError> {
        if name.is_empty() {
            return Err(DnsNameError::Empty);
        }
        if name.len() > 253 {
            return Err(DnsNameError::TooLong(name.to_owned()));
        }
        let rest = name.strip_prefix("*.").unwrap_or(name);
        for label in rest.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'));
            if !ok {
                return Err(DnsNameError::BadLabel {
                    name: name.to_owned(),
                    label: label.to_owned(),
                });
            }
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsName {
    type Err = DnsNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({})", self.0)
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(EntryId);
string_serde!(DnsName);

// === impl RegistrationEntry ===

impl RegistrationEntry {
    /// Checks every rule of an entry: a workload ID with a path, at least one selector, TTLs in
    /// range, a short printable hint, a bounded number of DNS names.
    pub fn new(spec: EntrySpec) -> Result<Self, EntryError> {
        if spec.spiffe_id.is_trust_domain_id() {
            return Err(EntryError::RootSpiffeId(spec.spiffe_id));
        }
        if spec.selectors.is_empty() {
            return Err(EntryError::NoSelectors);
        }
        check_ttl("x509_svid_ttl", spec.x509_svid_ttl)?;
        check_ttl("jwt_svid_ttl", spec.jwt_svid_ttl)?;
        if spec.dns_names.len() > MAX_DNS_NAMES {
            return Err(EntryError::TooManyDnsNames(spec.dns_names.len()));
        }
        if spec.hint.len() > MAX_HINT_LEN {
            return Err(EntryError::HintTooLong {
                len: spec.hint.len(),
            });
        }
        if spec.hint.chars().any(char::is_control) {
            return Err(EntryError::HintControlChar);
        }
        Ok(Self { spec })
    }

    /// Like [`new`](Self::new), and also refuses an entry whose SPIFFE ID or parent ID is not in
    /// `trust_domain`: a server only issues for its own trust domain, and a parent is this
    /// trust domain's server, one of its agents or another of its entries (SPIRE refuses a foreign
    /// parent the same way). The SPIFFE ID must not be one lanyard keeps for its server and agents
    /// ([`SpiffeId::is_reserved_for_lanyard`]); the parent may be.
    ///
    /// This is the constructor for entries arriving from outside (admin requests, the server's
    /// push to agents). `new` alone builds rows read back from a datastore, so that a row an older
    /// version wrote cannot stop the server from starting; the server then refuses to serve it.
    pub fn new_in(spec: EntrySpec, trust_domain: &TrustDomain) -> Result<Self, EntryError> {
        if !spec.spiffe_id.is_member_of(trust_domain) {
            return Err(EntryError::ForeignTrustDomain {
                id: spec.spiffe_id,
                expected: trust_domain.clone(),
            });
        }
        if spec.spiffe_id.is_reserved_for_lanyard() {
            return Err(EntryError::ReservedSpiffeId(spec.spiffe_id));
        }
        if !spec.parent_id.is_member_of(trust_domain) {
            return Err(EntryError::ForeignParent {
                id: spec.parent_id,
                expected: trust_domain.clone(),
            });
        }
        Self::new(spec)
    }

    pub fn id(&self) -> &EntryId {
        &self.spec.id
    }
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spec.spiffe_id
    }
    pub fn parent_id(&self) -> &SpiffeId {
        &self.spec.parent_id
    }
    pub fn selectors(&self) -> &SelectorSet {
        &self.spec.selectors
    }
    pub fn x509_svid_ttl(&self) -> Duration {
        self.spec.x509_svid_ttl
    }
    pub fn jwt_svid_ttl(&self) -> Duration {
        self.spec.jwt_svid_ttl
    }
    pub fn dns_names(&self) -> &[DnsName] {
        &self.spec.dns_names
    }
    pub fn federates_with(&self) -> &[TrustDomain] {
        &self.spec.federates_with
    }
    pub fn admin(&self) -> bool {
        self.spec.admin
    }
    pub fn downstream(&self) -> bool {
        self.spec.downstream
    }
    pub fn hint(&self) -> &str {
        &self.spec.hint
    }
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.spec.expires_at
    }
    pub fn revision(&self) -> u64 {
        self.spec.revision
    }

    /// True once `expires_at` has passed: an expired entry is no longer served.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.spec.expires_at.is_some_and(|at| at <= now)
    }

    /// The plain fields, for storing or editing (a changed spec goes through `new` again).
    pub fn spec(&self) -> &EntrySpec {
        &self.spec
    }

    pub fn into_spec(self) -> EntrySpec {
        self.spec
    }

    /// The same entry at another revision (the store assigns revisions on write).
    pub fn with_revision(mut self, revision: u64) -> Self {
        self.spec.revision = revision;
        self
    }
}

fn check_ttl(field: &'static str, ttl: Duration) -> Result<(), EntryError> {
    if (MIN_SVID_TTL..=MAX_SVID_TTL).contains(&ttl) {
        Ok(())
    } else {
        Err(EntryError::TtlOutOfRange { field, ttl })
    }
}

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
