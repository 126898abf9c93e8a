//! The server's typed configuration. The binary builds it from flags and a TOML file; this crate
//! never reads files or the environment for configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lanyard_core::TrustDomain;

/// The admin socket of a server not running as root, unless told otherwise (the default of
/// [`ServerConfig::new`]).
pub const DEFAULT_ADMIN_SOCKET: &str = "/tmp/lanyard-server/admin.sock";
/// The admin socket of a server running as root, unless told otherwise: under `/run`, where only
/// root can create anything. This crate does not look at its uid; the binary chooses.
pub const DEFAULT_ROOT_ADMIN_SOCKET: &str = "/run/lanyard/server/admin.sock";

/// Everything `lanyard server run` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub trust_domain: TrustDomain,
    /// Keys, the SQLite file (by default) and other state live here; created 0700.
    pub data_dir: PathBuf,
    /// The admin API's Unix socket, created 0600 in a directory only this user or root controls.
    pub admin_socket: PathBuf,
    /// The node API's TCP address (agents connect here); port 0 picks a free port, which is logged.
    pub bind: SocketAddr,
    /// `/live`, `/ready` and `/metrics` over HTTP; `None` turns them off.
    pub health_bind: Option<SocketAddr>,
    /// `sqlite://PATH` or `postgres://…`; `None` means SQLite in `data_dir`.
    pub datastore: Option<String>,
    /// How often the server reads other servers' writes to a shared datastore without being told
    /// of them: a backstop for the datastore's change notices, which carry them at once.
    pub datastore_poll_interval: Duration,
    pub ca: CaSettings,
    /// Lifetime of join tokens when the request does not say.
    pub join_token_ttl: Duration,
    /// Lifetime of agent SVIDs (SPIRE's default: 1 hour).
    pub agent_svid_ttl: Duration,
    /// CA certificates (DER) that agent certificates must chain to for x509pop attestation;
    /// `None` turns the attestor off.
    pub x509pop_roots: Option<Vec<Vec<u8>>>,
    pub node_api: NodeApiLimits,
    pub retention: Retention,
    /// Where the `*.cedar` grant policies are; `None`: no policy, every task grant is refused.
    pub policy_dir: Option<PathBuf>,
    /// How often the audit log is checked for new records and, if there are, a checkpoint signed.
    pub audit_checkpoint_interval: Duration,
    /// How often this server records that it is alive in the datastore (`lanyard server list`);
    /// servers sharing a database drop a dead one's authorities once its credentials expired.
    pub heartbeat_interval: Duration,
    /// Most delegation hops below a task begun directly (a child of a child of a child: 3).
    pub max_delegation_depth: u32,
    /// How long a grant that needs a human's approval waits for one before it is refused.
    pub approval_timeout: Duration,
    /// The identity providers whose tokens say whom a task acts for (`on_behalf_of`).
    pub identity_providers: Vec<IdentityProviderConfig>,
    /// The OAuth authorization server for tool servers; `None` turns it off.
    pub oauth: Option<OAuthConfig>,
}

/// lanyard as an OAuth 2.1 authorization server (`docs/oauth.md`).
#[derive(Clone)]
pub struct OAuthConfig {
    /// The HTTPS listener; port 0 picks a free port, which is logged.
    pub bind: SocketAddr,
    /// The issuer identifier (`https://host[:port]`, no path); `None`: `https://<bound address>`.
    pub issuer: Option<String>,
    /// The endpoint's certificate chain and PKCS#8 key, in PEM (read by the binary).
    pub cert_pem: String,
    pub key_pem: String,
    /// Lifetime of access tokens (capped by the task's, and by 15 minutes).
    pub access_token_ttl: Duration,
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("bind", &self.bind)
            .field("issuer", &self.issuer)
            .field("access_token_ttl", &self.access_token_ttl)
            .finish_non_exhaustive()
    }
}

/// An identity provider the server trusts to name the people tasks act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProviderConfig {
    /// Its tokens' `iss`, exactly.
    pub issuer: String,
    /// Its JWKS, as a file something else keeps current; read at start and on policy reload.
    pub jwks_file: PathBuf,
    /// The `aud` its tokens must carry to be accepted here (lanyard's client id at the provider).
    pub audience: String,
}

/// What the node API spends on one peer. It is reachable from the network, and `AttestAgent` is
/// open to callers that have proved nothing yet.
#[derive(Debug, Clone)]
pub struct NodeApiLimits {
    /// Longest wait for each step of an attestation: the first message, the x509pop answer.
    pub attestation_timeout: Duration,
    /// Most bytes one `AttestAgent` call may send, all its messages together.
    pub max_attestation_bytes: usize,
    /// Most open connections (TLS handshakes included); a connection over it is closed at once.
    pub max_connections: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection. An agent needs two or three.
    pub max_streams_per_connection: u32,
}

/// How long the datastore keeps what only serves diagnosis or catching up. (The audit log is kept
/// whole.)
#[derive(Debug, Clone)]
pub struct Retention {
    /// A used join token is kept this long after its use (to answer "already used" rather than
    /// "unknown"), and never past its expiry.
    pub used_join_tokens: Duration,
    /// Deleted entries are remembered this long, so an agent that was away for less catches up
    /// by revision; one away for longer gets the full set.
    pub entry_tombstones: Duration,
    /// How often the pruning runs.
    pub prune_interval: Duration,
}

impl Default for NodeApiLimits {
    fn default() -> Self {
        Self {
            attestation_timeout: Duration::from_secs(10),
            max_attestation_bytes: 256 * 1024,
            max_connections: 16_384,
            max_streams_per_connection: 64,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            used_join_tokens: Duration::from_secs(3600),
            entry_tombstones: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(600),
        }
    }
}

/// How the CA is run.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// Lifetime of each X.509 CA certificate and JWT key.
    pub ca_ttl: Duration,
    pub default_x509_svid_ttl: Duration,
    pub default_jwt_svid_ttl: Duration,
    /// `spiffe_refresh_hint` written into the bundle.
    pub bundle_refresh_hint: Duration,
    /// Use P-384 instead of P-256 for CA and JWT keys.
    pub p384: bool,
    /// Sign the CA under this upstream authority instead of self-signing a root.
    pub upstream: Option<UpstreamAuthority>,
}

/// An upstream CA: certificate chain and key in PEM, read by the binary.
#[derive(Clone)]
pub struct UpstreamAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for UpstreamAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamAuthority")
            .field("key_pem", &"…")
            .finish_non_exhaustive()
    }
}

impl Default for CaSettings {
    /// SPIRE's defaults, which its users know.
    fn default() -> Self {
        Self {
            ca_ttl: Duration::from_secs(24 * 3600),
            default_x509_svid_ttl: Duration::from_secs(3600),
            default_jwt_svid_ttl: Duration::from_secs(300),
            bundle_refresh_hint: Duration::from_secs(300),
            p384: false,
            upstream: None,
        }
    }
}

impl ServerConfig {
    /// A configuration with the defaults for everything but the trust domain and data directory.
    pub fn new(trust_domain: TrustDomain, data_dir: PathBuf) -> Self {
        Self {
            trust_domain,
            admin_socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            data_dir,
            bind: SocketAddr::from(([127, 0, 0, 1], 8081)),
            health_bind: None,
            datastore: None,
            datastore_poll_interval: Duration::from_secs(5),
            ca: CaSettings::default(),
            join_token_ttl: Duration::from_secs(600),
            agent_svid_ttl: Duration::from_secs(3600),
            x509pop_roots: None,
            node_api: NodeApiLimits::default(),
            retention: Retention::default(),
            policy_dir: None,
            audit_checkpoint_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            max_delegation_depth: 3,
            approval_timeout: Duration::from_secs(600),
            identity_providers: Vec::new(),
            oauth: None,
        }
    }

    /// The datastore URL to open.
    pub fn datastore_url(&self) -> String {
        self.datastore.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("datastore.sqlite3").display()
            )
        })
    }
}
