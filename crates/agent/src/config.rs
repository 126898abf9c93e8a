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
/// Most servers one agent may be given. Each is tried in turn when the agent connects, so a
/// longer list only makes an outage of all of them slower to sit out.
pub const MAX_SERVERS: usize = 64;

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The trust domain the agent and its server belong to.
    pub trust_domain: TrustDomain,
    /// The servers' node API: one address, or several servers on one datastore. The agent
    /// connects to one of them at a time (`node::Connector` chooses) and fails over to another.
    pub servers: ServerList,
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

/// The servers an agent may talk to: one to [`MAX_SERVERS`] distinct addresses, in no particular
/// order (the agent starts at a random one, so agents spread across servers). Written
/// `host:port,host:port`; a name that resolves to several addresses counts as all of them.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerList(Vec<ServerAddress>);

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
    /// How long the TCP connect, and then the TLS handshake, to one server may take before the
    /// next server is tried.
    pub connect_timeout: Duration,
    /// Largest node-API message accepted or sent.
    pub max_message_size: usize,
    /// HTTP/2 keep-alive ping interval on the node-API connection, so that a silently dead server
    /// is noticed and the entry stream reconnects.
    pub keepalive_interval: Duration,
    /// While waiting out a backoff, how often the agent tries a bare TCP connect to the servers
    /// it could not reach (each wait jittered up to twice this); one that answers ends the wait.
    pub probe_interval: Duration,
}

// === impl AgentConfig ===

impl AgentConfig {
    /// A configuration with default tuning and no node attestor.
    pub fn new(
        trust_domain: TrustDomain,
        servers: impl Into<ServerList>,
        data_dir: impl Into<PathBuf>,
        socket_path: impl Into<PathBuf>,
        trust: TrustBootstrap,
    ) -> Self {
        Self {
            trust_domain,
            servers: servers.into(),
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

// === impl ServerList ===

impl ServerList {
    /// A list of `addresses`: refused if empty, longer than [`MAX_SERVERS`], or holding one
    /// address twice.
    pub fn new(addresses: impl IntoIterator<Item = ServerAddress>) -> Result<Self, AgentError> {
        let addresses: Vec<ServerAddress> = addresses.into_iter().collect();
        let bad = |reason: String| AgentError::Config(format!("server list: {reason}"));
        if addresses.is_empty() {
            return Err(bad("no server address; give at least one host:port".into()));
        }
        if addresses.len() > MAX_SERVERS {
            return Err(bad(format!(
                "{} server addresses; at most {MAX_SERVERS} are allowed",
                addresses.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for address in &addresses {
            if !seen.insert(address) {
                return Err(bad(format!("{address} is listed twice")));
            }
        }
        Ok(Self(addresses))
    }

    /// The addresses, as configured.
    pub fn addresses(&self) -> &[ServerAddress] {
        &self.0
    }

    /// The first address configured (the channel's nominal authority; it does not choose where
    /// the agent connects).
    pub(crate) fn first(&self) -> &ServerAddress {
        // `new` refuses an empty list, and nothing else makes one.
        &self.0[0]
    }
}

impl FromStr for ServerList {
    type Err = AgentError;

    /// `host:port`, or several separated by commas: `a:8081,b:8081,[::1]:8081`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addresses = s
            .split(',')
            .map(|part| {
                let part = part.trim();
                if part.is_empty() {
                    Err(AgentError::Config(format!(
                        "server list {s:?}: an empty address (a comma too many?)"
                    )))
                } else {
                    part.parse()
                }
            })
            .collect::<Result<Vec<ServerAddress>, _>>()?;
        Self::new(addresses)
    }
}

impl fmt::Display for ServerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ServerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerList({self})")
    }
}

impl From<ServerAddress> for ServerList {
    fn from(address: ServerAddress) -> Self {
        Self(vec![address])
    }
}

impl From<std::net::SocketAddr> for ServerList {
    fn from(address: std::net::SocketAddr) -> Self {
        Self(vec![address.into()])
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
            probe_interval: Duration::from_millis(250),
        }
    }
}

impl Tuning {
    pub fn with_retry(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    /// How often a server that could not be reached is probed during a backoff (jittered up to
    /// twice this).
    pub fn with_probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval.max(Duration::from_millis(1));
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
    fn server_lists_round_trip() {
        for s in ["127.0.0.1:8081", "a:1,b:2,[::1]:3"] {
            let list: ServerList = s.parse().unwrap();
            assert_eq!(list.to_string(), s);
        }
        let list: ServerList = " a:1 , b:2".parse().unwrap();
        assert_eq!(list.to_string(), "a:1,b:2");
        assert_eq!(list.addresses().len(), 2);
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
