//! The SPIFFE vocabulary lanyard speaks, with no I/O and no async.
//!
//! - [`id`]: [`SpiffeId`] and [`TrustDomain`], parsed strictly (SPIFFE-ID §2);
//! - [`selector`]: [`Selector`] (`type:value`) and [`SelectorSet`] with the subset test used to match
//!   callers to entries;
//! - [`entry`]: [`RegistrationEntry`] with SPIRE's fields and rules;
//! - [`bundle`]: [`Bundle`] and [`BundleSet`], read and written in SPIFFE bundle JSON;
//! - [`x509`]: X509-SVID verification against the bundle of the leaf's trust domain;
//! - [`jwt`]: JWT-SVID verification (alg allow-list first, key from `sub`'s trust domain);
//! - [`revocation`]: the [`RevocationList`] of revoked tokens (ended tasks) by `jti`, which agents
//!   and services validating locally check after verification;
//! - [`clock`]: the injected [`Clock`].
//!
//! Parse, don't validate: every type here is built through a constructor that checks it, so a value
//! that exists is valid. Nothing here reads files, the environment or the network.

pub mod bundle;
pub mod clock;
pub mod endpoint;
pub mod entry;
pub mod id;
pub mod jwt;
pub mod revocation;
pub mod selector;
pub mod x509;

pub use bundle::{Bundle, BundleSet, JwtAuthority, X509Authority};
pub use bundle::{BundleError, JwtKeyType};
pub use clock::{Clock, SharedClock, SystemClock};
pub use endpoint::{ENDPOINT_SOCKET_ENV, EndpointAddress, EndpointError};
pub use entry::{DnsName, DnsNameError, EntryError, EntryId, EntrySpec, RegistrationEntry};
pub use id::{IdError, SpiffeId, TrustDomain};
pub use jwt::{
    JwtAlgorithm, JwtSvidError, VerifiedJwt, VerifiedJwtSvid, verify_jwt, verify_jwt_svid,
};
pub use revocation::{RevocationList, Revoked};
pub use selector::{Selector, SelectorError, SelectorSet};
pub use x509::{VerifiedX509Svid, X509SvidError, check_x509_svid_leaf, verify_x509_svid};

#[cfg(any(test, feature = "testing"))]
pub use clock::ManualClock;
