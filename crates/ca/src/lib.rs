//! lanyard's certificate authority: everything a workload trusts comes from here.
//!
//! - [`KeyManager`]: where private keys live ([`MemoryKeyManager`], [`DiskKeyManager`]);
//! - [`Ca`]: X.509 authorities (a self-signed root, or an intermediate under an [`UpstreamCa`]) and
//!   JWT keys, their rotation (prepared → active → old, driven by [`Ca::tick`]), the trust
//!   [`Bundle`](lanyard_core::Bundle) they make, and minting of X509-SVIDs (from a CSR or a bare
//!   public key) and JWT-SVIDs;
//! - [`Journal`]: the serialisable state that lets a restarted CA continue with the same bundle.
//!
//! Pure logic: time comes from an injected [`Clock`](lanyard_core::Clock), rotation happens only
//! when the caller calls [`Ca::tick`], there is no network, and the only disk I/O is the
//! [`DiskKeyManager`]'s, in the directory its caller names. `docs/ca.md` describes the certificate
//! profile, the rotation timeline and the decisions taken where the specs are silent.

mod ca;
mod cert;
mod config;
mod der;
mod error;
mod journal;
mod jwt;
mod key;
mod key_manager;
mod leaf_key;
mod oid;
mod upstream;

pub use ca::{AuthorityInfo, AuthorityKind, Ca, TickOutcome, X509Svid, X509SvidRequest};
pub use config::{
    CaConfig, DEFAULT_BACKDATE, DEFAULT_CA_TTL, DEFAULT_JWT_SVID_TTL, DEFAULT_REFRESH_HINT,
    DEFAULT_X509_SVID_TTL, MAX_TTL, MIN_CA_TTL,
};
pub use error::CaError;
pub use journal::{AuthorityState, JOURNAL_VERSION, Journal};
pub use jwt::{AccessToken, AccessTokenRequest, JwtSvid, JwtSvidRequest, RESERVED_CLAIMS};
pub use key::{KeyType, Pkcs8Der, PrivateKey, key_id_for_spki};
pub use key_manager::{DiskKeyManager, KeyId, KeyManager, MemoryKeyManager};
pub use leaf_key::{MAX_CSR_LEN, MAX_SPKI_LEN, VerifiedCsr};
pub use upstream::UpstreamCa;
