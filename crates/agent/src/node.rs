//! The connection to the server's node API: TCP, then TLS with the aws-lc-rs provider (passed
//! explicitly), then a tonic channel over it.
//!
//! The server must present an X509-SVID for `spiffe://<td>/lanyard/server` that chains to the
//! trust domain's bundle ([`BundleHandle`], kept current from the entry stream). After attestation
//! the agent presents its own SVID ([`SvidHandle`]); every new connection takes the newest SVID
//! and bundle. Time for certificate checks comes from the agent's injected clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use lanyard_core::{SharedClock, SpiffeId};
use lanyard_proto::node::node_client::NodeClient;
use lanyard_tls::{Authorizer, BundleHandle, SpiffeServerVerifier, SvidHandle};
use rustls::pki_types::{ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::AgentError;
use crate::config::{ServerAddress, Tuning};

/// How long a keep-alive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds node-API channels.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    address: ServerAddress,
    server_id: SpiffeId,
    tuning: Tuning,
    clock: SharedClock,
    /// The bundle the server's certificate must chain to.
    pub(crate) bundles: BundleHandle,
    /// The agent's SVID, presented on mTLS channels.
    pub(crate) svid: SvidHandle,
}

/// Whether a channel presents the agent SVID, and how the server is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    /// mTLS with the agent SVID: every call but attestation.
    Agent,
    /// No client certificate: attestation, server checked against the bundle.
    Attest,
    /// No client certificate, server certificate unverified except for its SPIFFE ID:
    /// `insecure_bootstrap` attestation only.
    InsecureAttest,
}

/// rustls' clock: the agent's injected one.
#[derive(Debug)]
struct ClockTime(SharedClock);

impl rustls::time_provider::TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        let since = self.0.now().duration_since(SystemTime::UNIX_EPOCH).ok()?;
        Some(UnixTime::since_unix_epoch(since))
    }
}

// === impl Connector ===

impl Connector {
    pub(crate) fn new(
        address: ServerAddress,
        server_id: SpiffeId,
        tuning: Tuning,
        clock: SharedClock,
        bundles: BundleHandle,
        svid: SvidHandle,
    ) -> Self {
        Self {
            address,
            server_id,
            tuning,
            clock,
            bundles,
            svid,
        }
    }

    fn tls_config(&self, kind: ChannelKind) -> Result<Arc<rustls::ClientConfig>, AgentError> {
        let mut config = match kind {
            ChannelKind::Agent | ChannelKind::Attest => {
                let verifier = SpiffeServerVerifier::new(
                    self.bundles.clone(),
                    Authorizer::Exact(self.server_id.clone()),
                );
                let svid = (kind == ChannelKind::Agent).then(|| self.svid.clone());
                lanyard_tls::client_config(verifier, svid)?
            }
            ChannelKind::InsecureAttest => {
                lanyard_tls::danger::insecure_bootstrap_client_config(self.server_id.clone())?
            }
        };
        config.time_provider = Arc::new(ClockTime(self.clock.clone()));
        Ok(Arc::new(config))
    }

    /// A channel that connects on first use and again whenever its connection drops, each time
    /// with the SVID and bundle current then.
    pub(crate) fn channel(&self, kind: ChannelKind) -> Result<Channel, AgentError> {
        let tls = TlsConnector::from(self.tls_config(kind)?);
        let host = self.address.host().to_owned();
        let port = self.address.port();
        // The name only feeds SNI; the server is authenticated by its SPIFFE ID. `ServerAddress`
        // accepted the host as a DNS name or an IP address, so the fallback is never taken.
        let name = ServerName::try_from(host.clone()).unwrap_or_else(|_| {
            ServerName::IpAddress(rustls::pki_types::IpAddr::from(
                std::net::Ipv4Addr::LOCALHOST,
            ))
        });
        let connector = tower::service_fn(move |_: http::Uri| {
            let tls = tls.clone();
            let host = host.clone();
            let name = name.clone();
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address))
            .map_err(|e| AgentError::Config(format!("server address {}: {e}", self.address)))?
            .connect_timeout(self.tuning.connect_timeout)
            .http2_keep_alive_interval(self.tuning.keepalive_interval)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_with_connector_lazy(connector))
    }

    /// A node-API client on `channel` with the configured message limits.
    pub(crate) fn client(&self, channel: Channel) -> NodeClient<Channel> {
        NodeClient::new(channel)
            .max_decoding_message_size(self.tuning.max_message_size)
            .max_encoding_message_size(self.tuning.max_message_size)
    }
}

/// True when a status from the server means it does not accept this agent any more (unknown,
/// evicted or banned), as opposed to a passing failure.
pub(crate) fn is_rejection(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
    )
}
