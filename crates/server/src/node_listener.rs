//! The node API's transport: TCP with TLS, the server presenting `spiffe://<td>/lanyard/server`
//! and verifying any client certificate against the trust bundle. A client certificate is
//! optional at the TLS layer because attestation comes before the agent has one; the node service
//! requires it on every other call.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use lanyard_ca::{KeyType, PrivateKey, X509SvidRequest};
use lanyard_core::{BundleSet, SpiffeId};
use lanyard_tls::{Authorizer, BundleHandle, SpiffeClientVerifier, SvidHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{ServerError, ServerState};

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the server's own SVID; renewed at half of it.
const SERVER_SVID_TTL: Duration = Duration::from_secs(3600);
/// How often the server checks whether its SVID needs renewing.
const SERVER_SVID_CHECK: Duration = Duration::from_secs(5);

/// Who is on the other end of a node API connection, as the TLS handshake established it.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    /// The verified SPIFFE ID of the client certificate; `None` if the client presented none.
    pub(crate) spiffe_id: Option<SpiffeId>,
    /// The serial number of the client certificate, as [`serial_of`] formats it.
    pub(crate) serial: Option<String>,
    pub(crate) addr: Option<std::net::SocketAddr>,
}

/// An accepted TLS connection that tells tonic who the peer is.
#[derive(Debug)]
pub(crate) struct NodeConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Held while the connection is open: counts it against the connection limit.
    _permit: OwnedSemaphorePermit,
}

/// The server's TLS identity and trust, kept current as the CA rotates.
#[derive(Debug, Clone)]
pub(crate) struct NodeTls {
    pub(crate) svid: SvidHandle,
    pub(crate) bundles: BundleHandle,
    /// Which CA authority signed the current server SVID, and when it expires.
    issued: Arc<std::sync::Mutex<Option<(String, SystemTime)>>>,
}

impl NodeTls {
    /// Mints the first server SVID.
    pub(crate) fn new(authority: &crate::authority::Authority) -> Result<Self, ServerError> {
        let tls = Self {
            svid: SvidHandle::default(),
            bundles: BundleHandle::new(BundleSet::new()),
            issued: Arc::default(),
        };
        tls.renew(authority)?;
        Ok(tls)
    }

    /// Mints a new server SVID and refreshes the trust bundle.
    fn renew(&self, authority: &crate::authority::Authority) -> Result<(), ServerError> {
        let ca = &authority.ca;
        let id = server_id(ca.trust_domain());
        let (key, pkcs8) = PrivateKey::generate(KeyType::EcP256)?;
        let svid = ca.mint_own_x509_svid(
            key.public_key_der(),
            &X509SvidRequest::new(id).with_ttl(SERVER_SVID_TTL),
        )?;
        self.svid
            .set(&svid.cert_chain, pkcs8.as_bytes())
            .map_err(|e| ServerError::State(format!("server SVID: {e}")))?;
        self.bundles
            .set([authority.trust_bundle()].into_iter().collect());
        *self.issued.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((svid.authority_id, svid.not_after));
        Ok(())
    }

    /// Renews the SVID at half its life or when the CA's active authority changed; always
    /// refreshes the bundle.
    fn maintain(
        &self,
        authority: &crate::authority::Authority,
        now: SystemTime,
    ) -> Result<(), ServerError> {
        let ca = &authority.ca;
        let active = ca
            .authorities()
            .into_iter()
            .find(|a| {
                a.kind == lanyard_ca::AuthorityKind::X509
                    && a.state == lanyard_ca::AuthorityState::Active
            })
            .map(|a| a.id);
        let due = match &*self.issued.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((authority, not_after)) => {
                Some(authority) != active.as_ref() || now + SERVER_SVID_TTL / 2 >= *not_after
            }
            None => true,
        };
        if due {
            self.renew(authority)
        } else {
            self.bundles
                .set([authority.trust_bundle()].into_iter().collect());
            Ok(())
        }
    }
}

/// A certificate's serial number as the agent records store it (hex bytes with colons); empty
/// for bytes that do not parse, which no record holds.
pub(crate) fn serial_of(leaf_der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(leaf_der)
        .map(|(_, cert)| cert.tbs_certificate.raw_serial_as_string())
        .unwrap_or_default()
}

/// `spiffe://<td>/lanyard/server`, the ID agents require of the server.
pub(crate) fn server_id(td: &lanyard_core::TrustDomain) -> SpiffeId {
    // Both segments are fixed valid ASCII; the trust domain's own ID plus two short segments stays
    // far under the length limit.
    td.id_from_segments(&["lanyard", "server"])
        .unwrap_or_else(|_| td.id())
}

/// Keeps the server SVID and bundle current until `stop`: checked every few seconds, and at once
/// when the published bundle changes (another server on the datastore added its root: the agents
/// it signed must be able to fail over to this server from that moment).
pub(crate) async fn maintain_tls(
    state: Arc<ServerState>,
    tls: NodeTls,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(SERVER_SVID_CHECK);
    let mut bundles = state.bundles.subscribe();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            changed = bundles.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = tls.maintain(&state.authority, state.clock.now()) {
            tracing::error!(error = %e, "cannot renew the server SVID");
        }
    }
}

/// Accepts TCP connections, completes TLS handshakes off the accept loop, and hands finished
/// connections to tonic through the returned channel. At most `max_connections` are open at once
/// (handshakes included); one over that is closed as soon as it is accepted.
pub(crate) fn accept(
    listener: TcpListener,
    tls: &NodeTls,
    trust_domain: lanyard_core::TrustDomain,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<io::Result<NodeConnection>>, ServerError> {
    let verifier =
        SpiffeClientVerifier::new(tls.bundles.clone(), Authorizer::MemberOf(trust_domain))
            .optional();
    let config = lanyard_tls::server_config(tls.svid.clone(), Some(verifier))
        .map_err(|e| ServerError::State(format!("node API TLS: {e}")))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(128);
    let open = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "node API: accept failed");
                        continue;
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(permit) = open.clone().try_acquire_owned() else {
                tracing::debug!(%addr, max_connections, "node API: too many connections; closed");
                continue;
            };
            // Pushed entry updates are small writes that must go out at once, not wait for Nagle.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream.get_ref().1.peer_certificates();
                        let peer = PeerInfo {
                            spiffe_id: certs.and_then(lanyard_tls::peer_spiffe_id),
                            serial: certs
                                .and_then(|c| c.first())
                                .map(|leaf| serial_of(leaf))
                                .filter(|s| !s.is_empty()),
                            addr: Some(addr),
                        };
                        let connection = NodeConnection {
                            stream,
                            peer,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "node API: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%addr, "node API: TLS handshake timed out"),
                }
            });
        }
    });
    Ok(rx)
}

// === impl NodeConnection ===

impl tonic::transport::server::Connected for NodeConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for NodeConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
