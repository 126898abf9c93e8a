//! The agent's typed configuration. The CLI builds it from flags and TOML; nothing here reads the
//! environment or a configuration file (the x509pop certificate and key are credentials, read when
//! the agent attests).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lanyard_attestation::JoinToken;
use lanyard_core::{Bundle, SpiffeId, TrustDomain, X509Authority};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::AgentError;

/// Where an agent not running as root serves the Workload API unless told otherwise (SPIRE's is
/// `/tmp/spire-agent/public/api.sock`).
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/lanyard-agent/public/api.sock";
/// Where an agent running as root serves the Workload API unless told otherwise: under `/run`,
/// where only root can create anything. This crate does not look at its uid; the binary chooses.
pub const DEFAULT_ROOT_SOCKET_PATH: &str = "/run/lanyard/agent/public/api.sock";
/// Where the agent keeps its SVID, key and bundle unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = ".lanyard/agent";
/// The server's node API unless told otherwise.
pub const DEFAULT_SERVER_ADDRESS: &str = "127.0.0.1:8081";

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The trust domain the agent and its server belong to.
    pub trust_domain: TrustDomain,
    /// The server's node API.
    pub server_address: ServerAddress,
    /// Holds the agent SVID, its key and the bundle (created 0700; files 0600).
    pub data_dir: PathBuf,
    /// The Workload API socket.
    pub socket_path: PathBuf,
    /// How to attest when there is no usable persisted SVID; `None`: only resume.
    pub node_attestor: Option<NodeAttestorConfig>,
    /// What to trust before the first attestation.
    pub trust: TrustBootstrap,
    /// Retry, batching and message limits.
    pub tuning: Tuning,
}

/// A `host:port` the agent dials. The host is a DNS name or an IP address; it is only used to
/// connect, never to authenticate the server (the server's SPIFFE ID does that).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    host: String,
    port: u16,
}

/// How the agent proves to the server which node it runs on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeAttestorConfig {
    /// A single-use token from `lanyard token generate` (`Debug` shows only its id).
    JoinToken(JoinToken),
    /// Proof of possession of a key certified by a CA the server trusts.
    X509Pop {
        /// PEM: the node's certificate, then any intermediates.
        cert_chain_path: PathBuf,
        /// PEM: the node's private key (PKCS#8, SEC1 or PKCS#1).
        key_path: PathBuf,
    },
}

/// What the agent trusts when it first talks to the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TrustBootstrap {
    /// The trust domain's bundle (`--trust-bundle`).
    Bundle(Bundle),
    /// Development only: the first connection accepts any certificate that names the server's
    /// SPIFFE ID, unverified; the bundle the server then hands out is trusted from there on.
    InsecureBootstrap,
}

/// Knobs with defaults that suit production; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tuning {
    /// First delay after a failed call or a dropped stream; doubled per failure, jittered.
    pub retry_initial: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
    /// CSRs per `BatchNewX509Svid` call.
    pub mint_batch_size: usize,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Largest node-API message accepted or sent.
    pub max_message_size: usize,
    /// HTTP/2 keep-alive ping interval on the node-API connection, so that a silently dead server
    /// is noticed and the entry stream reconnects.
    pub keepalive_interval: Duration,
}

// === impl AgentConfig ===

impl AgentConfig {
    /// A configuration with default tuning and no node attestor.
    pub fn new(
        trust_domain: TrustDomain,
        server_address: ServerAddress,
        data_dir: impl Into<PathBuf>,
        socket_path: impl Into<PathBuf>,
        trust: TrustBootstrap,
    ) -> Self {
        Self {
            trust_domain,
            server_address,
            data_dir: data_dir.into(),
            socket_path: socket_path.into(),
            node_attestor: None,
            trust,
            tuning: Tuning::default(),
        }
    }

    pub fn with_node_attestor(mut self, attestor: NodeAttestorConfig) -> Self {
        self.node_attestor = Some(attestor);
        self
    }

    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// The SPIFFE ID the server must present: `spiffe://<td>/lanyard/server`.
    pub fn server_id(&self) -> SpiffeId {
        server_id(&self.trust_domain)
    }
}

pub(crate) fn server_id(trust_domain: &TrustDomain) -> SpiffeId {
    // "lanyard" and "server" are valid segments, so this cannot fail; fall back to the trust
    // domain's own ID (which no server presents) rather than panic.
    trust_domain
        .id_from_segments(&["lanyard", "server"])
        .unwrap_or_else(|_| trust_domain.id())
}

// === impl ServerAddress ===

impl ServerAddress {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for ServerAddress {
    type Err = AgentError;

    /// `host:port`, `1.2.3.4:port` or `[::1]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| AgentError::Config(format!("server address {s:?}: {reason}"));
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        if port == 0 {
            return Err(bad("the port is 0"));
        }
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => {
                v6.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| bad("not an IPv6 address in brackets"))?;
                v6
            }
            None => {
                if host.contains(':') {
                    return Err(bad("write an IPv6 address in brackets: [::1]:8081"));
                }
                rustls_pki_types::ServerName::try_from(host)
                    .map_err(|_| bad("the host is neither a DNS name nor an IP address"))?;
                host
            }
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerAddress({self})")
    }
}

impl From<std::net::SocketAddr> for ServerAddress {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

// === impl TrustBootstrap ===

impl TrustBootstrap {
    /// Parses a bootstrap bundle for `trust_domain`: SPIFFE bundle JSON, or PEM CA certificates.
    /// A bundle without an X.509 authority is refused: it could never verify the server.
    pub fn from_bytes(trust_domain: &TrustDomain, bytes: &[u8]) -> Result<Self, AgentError> {
        let bad = |reason: String| AgentError::TrustBundle(reason);
        let trimmed = bytes.trim_ascii_start();
        let bundle = if trimmed.starts_with(b"{") {
            Bundle::parse_json(trust_domain.clone(), bytes)
                .map_err(|e| bad(format!("not a SPIFFE bundle: {e}")))?
        } else if trimmed.starts_with(b"-----BEGIN") {
            let mut bundle = Bundle::new(trust_domain.clone());
            for cert in CertificateDer::pem_slice_iter(bytes) {
                let cert = cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
                let authority = X509Authority::from_der(cert.as_ref().to_vec())
                    .map_err(|e| bad(format!("bad CA certificate: {e}")))?;
                bundle.add_x509_authority(authority);
            }
            bundle
        } else {
            return Err(bad(
                "expected SPIFFE bundle JSON or PEM CA certificates".into()
            ));
        };
        if bundle.x509_authorities().is_empty() {
            return Err(bad("it holds no X.509 authority".into()));
        }
        Ok(Self::Bundle(bundle))
    }
}

// === impl Tuning ===

impl Default for Tuning {
    fn default() -> Self {
        Self {
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            mint_batch_size: 500,
            connect_timeout: Duration::from_secs(10),
            max_message_size: 16 * 1024 * 1024,
            keepalive_interval: Duration::from_secs(30),
        }
    }
}

impl Tuning {
    pub fn with_retry(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    pub fn with_mint_batch_size(mut self, size: usize) -> Self {
        self.mint_batch_size = size.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[test]
    fn server_address_round_trips() {
        for s in ["127.0.0.1:8081", "lanyard-server.example:443", "[::1]:8081"] {
            let addr: ServerAddress = s.parse().unwrap();
            assert_eq!(addr.to_string(), s);
        }
        let addr: ServerAddress = "[::1]:1".parse().unwrap();
        assert_eq!((addr.host(), addr.port()), ("::1", 1));
    }

    #[test]
    fn bad_server_addresses_are_refused() {
        for s in [
            "",
            "host",
            "host:",
            "host:0",
            "host:70000",
            "::1:80",
            "[zz]:80",
            "a b:1",
        ] {
            assert!(s.parse::<ServerAddress>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn trust_bundles_are_refused_when_useless() {
        let td = TrustDomain::new("example.org").unwrap();
        assert!(TrustBootstrap::from_bytes(&td, b"garbage").is_err());
        assert!(TrustBootstrap::from_bytes(&td, br#"{"keys":[]}"#).is_err());
        assert!(TrustBootstrap::from_bytes(&td, b"-----BEGIN CERTIFICATE-----\nAA==\n").is_err());
    }

    #[test]
    fn server_id_is_fixed() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            server_id(&td).as_str(),
            "spiffe://example.org/lanyard/server"
        );
    }
}
