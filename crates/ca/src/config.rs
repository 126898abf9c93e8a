//! The CA's typed configuration (built by the CLI from TOML and flags; read from nowhere here).

use std::time::Duration;

use lanyard_core::TrustDomain;

use crate::CaError;
use crate::key::KeyType;
use crate::upstream::UpstreamCa;

/// CA certificate and JWT key lifetime (SPIRE's `ca_ttl`).
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(24 * 3600);
/// X509-SVID lifetime when a request does not say.
pub const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(3600);
/// JWT-SVID lifetime when a request does not say.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// How far `NotBefore` is set in the past, for clock skew between machines.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(10);
/// `spiffe_refresh_hint` of the published bundle.
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// Shortest CA or JWT key lifetime accepted. Rotation runs at 1/2 and 5/6 of it; below a minute
/// the schedule would be finer than the second-granular certificate times.
pub const MIN_CA_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime of anything the CA makes (100 years), which keeps all time arithmetic far
/// from overflow.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How the CA is set up.
#[derive(Debug)]
pub struct CaConfig {
    pub trust_domain: TrustDomain,
    /// Key type of new CA and JWT keys (existing keys keep theirs).
    pub key_type: KeyType,
    /// Lifetime of each CA certificate (capped at the upstream CA's expiry).
    pub ca_ttl: Duration,
    /// Lifetime of each JWT signing key.
    pub jwt_key_ttl: Duration,
    /// Default X509-SVID lifetime.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub jwt_svid_ttl: Duration,
    /// `NotBefore` backdating of certificates.
    pub backdate: Duration,
    /// `spiffe_refresh_hint` of the bundle.
    pub refresh_hint: Duration,
    /// Sign CA certificates with this upstream CA instead of self-signing.
    pub upstream: Option<UpstreamCa>,
}

impl CaConfig {
    /// SPIRE's defaults (DESIGN.md §5) for `trust_domain`, self-signed, EC P-256.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            key_type: KeyType::default(),
            ca_ttl: DEFAULT_CA_TTL,
            jwt_key_ttl: DEFAULT_CA_TTL,
            x509_svid_ttl: DEFAULT_X509_SVID_TTL,
            jwt_svid_ttl: DEFAULT_JWT_SVID_TTL,
            backdate: DEFAULT_BACKDATE,
            refresh_hint: DEFAULT_REFRESH_HINT,
            upstream: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), CaError> {
        let range = |name: &str, v: Duration, min: Duration| {
            if v < min || v > MAX_TTL {
                Err(CaError::Config(format!(
                    "{name} is {v:?}; it must be between {min:?} and 100 years"
                )))
            } else {
                Ok(())
            }
        };
        range("ca_ttl", self.ca_ttl, MIN_CA_TTL)?;
        range("jwt_key_ttl", self.jwt_key_ttl, MIN_CA_TTL)?;
        range("x509_svid_ttl", self.x509_svid_ttl, Duration::from_secs(1))?;
        range("jwt_svid_ttl", self.jwt_svid_ttl, Duration::from_secs(1))?;
        range("refresh_hint", self.refresh_hint, Duration::from_secs(1))?;
        if self.backdate > Duration::from_secs(3600) {
            return Err(CaError::Config(format!(
                "backdate is {:?}; at most one hour",
                self.backdate
            )));
        }
        Ok(())
    }
}
