//! The connection to the servers' node API: TCP, then TLS with the aws-lc-rs provider (passed
//! explicitly), then a tonic channel over it.
//!
//! The server must present an X509-SVID for `spiffe://<td>/lanyard/server` that chains to the
//! trust domain's bundle ([`BundleHandle`], kept current from the entry stream). After attestation
//! the agent presents its own SVID ([`SvidHandle`]); every new connection takes the newest SVID
//! and bundle. Time for certificate checks comes from the agent's injected clock.
//!
//! Several servers: each new connection is one *round* over every address the configured names
//! resolve to: the server that last worked first, the others in random order (so that agents
//! spread across servers), until one completes TCP and TLS. The callers' backoff sits between
//! rounds; while it runs, [`Connector::until_reachable`] probes the servers that refused TCP, so
//! that a restarted server is used as soon as it listens, not when the backoff ends.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use lanyard_core::{SharedClock, SpiffeId};
use lanyard_proto::node::node_client::NodeClient;
use lanyard_tls::{Authorizer, BundleHandle, SpiffeServerVerifier, SvidHandle};
use rustls::pki_types::{ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::AgentError;
use crate::config::{ServerAddress, ServerList, Tuning};
use crate::timing::random_fraction;

/// How long a keep-alive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds node-API channels.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    servers: ServerList,
    server_id: SpiffeId,
    tuning: Tuning,
    clock: SharedClock,
    /// The bundle the server's certificate must chain to.
    pub(crate) bundles: BundleHandle,
    /// The agent's SVID, presented on mTLS channels.
    pub(crate) svid: SvidHandle,
    /// What the rounds learned; shared by every channel this connector makes, so that a new
    /// channel starts where the last connection succeeded. Locked briefly, never across an await.
    failover: Arc<Mutex<Failover>>,
}

/// Which servers answered, as the connection rounds found them.
#[derive(Debug, Default)]
struct Failover {
    /// The server of the last connection that completed TLS: tried first by the next round.
    last_good: Option<SocketAddr>,
    /// The server the current connection goes to; `None` once a round starts, until it succeeds.
    current: Option<SocketAddr>,
    /// A server that accepted the connection but failed the calls over it: tried last.
    avoid: Option<SocketAddr>,
    /// Addresses whose last TCP connect succeeded. The others are what the probe watches: a
    /// server that accepts TCP but fails later does not end a backoff early.
    tcp_ok: HashSet<SocketAddr>,
}

/// One address to try: where to connect and the name to send as SNI.
#[derive(Debug, Clone)]
struct Candidate {
    addr: SocketAddr,
    name: ServerName<'static>,
    /// The configured address it came from, for logs.
    configured: ServerAddress,
}

/// How long a TCP connect may stay pending before the next address is tried beside it (RFC 8305
/// recommends 250 ms between connection attempts).
const CONNECT_STAGGER: Duration = Duration::from_millis(250);

/// One TCP connect to `candidate`, within `timeout`; answers with the candidate it was for.
async fn tcp_attempt(
    candidate: Candidate,
    timeout: Duration,
) -> (Candidate, std::io::Result<TcpStream>) {
    let result = match tokio::time::timeout(timeout, TcpStream::connect(candidate.addr)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TCP connect timed out",
        )),
    };
    (candidate, result)
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
        servers: ServerList,
        server_id: SpiffeId,
        tuning: Tuning,
        clock: SharedClock,
        bundles: BundleHandle,
        svid: SvidHandle,
    ) -> Self {
        Self {
            servers,
            server_id,
            tuning,
            clock,
            bundles,
            svid,
            failover: Arc::default(),
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

    fn failover(&self) -> MutexGuard<'_, Failover> {
        self.failover.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A channel that connects on first use and again whenever its connection drops, each time
    /// with the SVID and bundle current then, and each time with a round over the servers.
    pub(crate) fn channel(&self, kind: ChannelKind) -> Result<Channel, AgentError> {
        let tls = TlsConnector::from(self.tls_config(kind)?);
        let this = self.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let tls = tls.clone();
            let this = this.clone();
            async move { this.connect_round(&tls).await.map(TokioIo::new) }
        });
        // The URI is only the requests' nominal authority: the connector chooses the server.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.servers.first()))
            .map_err(|e| AgentError::Config(format!("server address {}: {e}", self.servers)))?
            .http2_keep_alive_interval(self.tuning.keepalive_interval)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_with_connector_lazy(connector))
    }

    /// One round: every address in turn (last good first, the rest shuffled) until one completes
    /// TCP and TLS, each step within the connect timeout. A TCP connect still pending after
    /// [`CONNECT_STAGGER`] does not hold up the round: the next address is tried beside it and
    /// the first to connect is used (RFC 8305's staggered attempts), so a server that drops
    /// packets costs a quarter of a second, not the connect timeout. The error names every failure.
    async fn connect_round(&self, tls: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
        let timeout = self.tuning.connect_timeout;
        let (candidates, mut failures) = resolve(&self.servers, timeout).await;
        let mut ordered = {
            let mut failover = self.failover();
            failover.current = None;
            order(
                candidates,
                failover.last_good,
                failover.avoid,
                random_fraction,
            )
        }
        .into_iter();
        // TCP attempts in flight, each answering with its candidate; dropped (and so closed)
        // when the round ends.
        let mut attempts = tokio::task::JoinSet::new();
        loop {
            if attempts.is_empty() {
                let Some(candidate) = ordered.next() else {
                    break;
                };
                attempts.spawn(tcp_attempt(candidate, timeout));
            }
            let attempt = tokio::select! {
                done = attempts.join_next() => match done {
                    Some(Ok(attempt)) => attempt,
                    // A task cannot panic or be aborted here; were it to, the address is skipped.
                    Some(Err(_)) | None => continue,
                },
                () = tokio::time::sleep(CONNECT_STAGGER), if !ordered.as_slice().is_empty() => {
                    if let Some(candidate) = ordered.next() {
                        attempts.spawn(tcp_attempt(candidate, timeout));
                    }
                    continue;
                }
            };
            let (candidate, tcp) = match attempt {
                (candidate, Ok(tcp)) => (candidate, tcp),
                (candidate, Err(error)) => {
                    let addr = candidate.addr;
                    self.failover().tcp_ok.remove(&addr);
                    tracing::debug!(server = %candidate.configured, %addr, %error, "cannot connect");
                    failures.push(format!("{addr}: {error}"));
                    continue;
                }
            };
            let addr = candidate.addr;
            self.failover().tcp_ok.insert(addr);
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
            }
            match tokio::time::timeout(timeout, tls.connect(candidate.name.clone(), tcp)).await {
                Ok(Ok(stream)) => {
                    {
                        let mut failover = self.failover();
                        failover.last_good = Some(addr);
                        failover.current = Some(addr);
                        if failover.avoid == Some(addr) {
                            failover.avoid = None;
                        }
                    }
                    tracing::info!(server = %candidate.configured, %addr, "connected to the server");
                    return Ok(stream);
                }
                Ok(Err(e)) => {
                    tracing::warn!(server = %candidate.configured, %addr, error = %e, "TLS with the server failed");
                    failures.push(format!("{addr}: TLS: {e}"));
                }
                Err(_) => failures.push(format!("{addr}: TLS handshake timed out")),
            }
        }
        let mut message = String::from("no server answered");
        for (i, failure) in failures.iter().enumerate() {
            let _ = write!(message, "{}{failure}", if i == 0 { ": " } else { "; " });
        }
        Err(std::io::Error::other(message))
    }

    /// Completes when a server the last rounds could not reach over TCP (or one never tried)
    /// accepts a TCP connection; looks every `probe_interval` to twice that, at random. Never
    /// completes while every server accepts TCP: then the trouble is past TCP, and the caller's
    /// backoff is what should pace the next round.
    pub(crate) async fn until_reachable(&self) {
        let interval = self.tuning.probe_interval;
        // Names are resolved once per wait (each round resolves them again), not at every probe:
        // a pool name would otherwise cost its DNS server a query per agent every few hundred ms.
        let (candidates, _) = resolve(&self.servers, self.tuning.connect_timeout).await;
        loop {
            tokio::time::sleep(interval.mul_f64(1.0 + random_fraction())).await;
            let watched: Vec<SocketAddr> = {
                let failover = self.failover();
                candidates
                    .iter()
                    .map(|c| c.addr)
                    .filter(|addr| !failover.tcp_ok.contains(addr))
                    .collect()
            };
            let mut probes = tokio::task::JoinSet::new();
            for addr in watched {
                probes.spawn(async move {
                    matches!(
                        tokio::time::timeout(interval, TcpStream::connect(addr)).await,
                        Ok(Ok(_))
                    )
                    .then_some(addr)
                });
            }
            while let Some(probed) = probes.join_next().await {
                if let Ok(Some(addr)) = probed {
                    tracing::debug!(%addr, "a server that was down accepts connections again");
                    return;
                }
            }
        }
    }

    /// The current connection's server accepted it but failed the calls over it: the next round
    /// tries it last. The caller replaces its channel so that a round happens.
    pub(crate) fn avoid_current(&self) -> Option<SocketAddr> {
        let mut failover = self.failover();
        let current = failover.current.take()?;
        failover.avoid = Some(current);
        if failover.last_good == Some(current) {
            failover.last_good = None;
        }
        Some(current)
    }

    /// A node-API client on `channel` with the configured message limits.
    pub(crate) fn client(&self, channel: Channel) -> NodeClient<Channel> {
        NodeClient::new(channel)
            .max_decoding_message_size(self.tuning.max_message_size)
            .max_encoding_message_size(self.tuning.max_message_size)
    }
}

/// Every address the configured servers resolve to, each once, in configuration order; and a
/// line for each name that did not resolve.
async fn resolve(servers: &ServerList, timeout: Duration) -> (Vec<Candidate>, Vec<String>) {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut failures = Vec::new();
    for configured in servers.addresses() {
        let (host, port) = (configured.host(), configured.port());
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
                    Ok(Ok(addrs)) => addrs.collect(),
                    Ok(Err(e)) => {
                        failures.push(format!("{configured}: cannot resolve: {e}"));
                        continue;
                    }
                    Err(_) => {
                        failures.push(format!("{configured}: name resolution timed out"));
                        continue;
                    }
                }
            }
        };
        // The name only feeds SNI; the server is authenticated by its SPIFFE ID. `ServerAddress`
        // accepted the host as a DNS name or an IP address, so the fallback is never taken.
        let name = ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
            ServerName::IpAddress(rustls::pki_types::IpAddr::from(
                std::net::Ipv4Addr::LOCALHOST,
            ))
        });
        for addr in addrs {
            if candidates.iter().all(|c| c.addr != addr) {
                candidates.push(Candidate {
                    addr,
                    name: name.clone(),
                    configured: configured.clone(),
                });
            }
        }
    }
    (candidates, failures)
}

/// The order of one round: shuffled (`random` gives numbers in `[0, 1)`), then `first` moved to
/// the front and `last` to the back, if present.
fn order<T: HasAddr>(
    mut items: Vec<T>,
    first: Option<SocketAddr>,
    last: Option<SocketAddr>,
    mut random: impl FnMut() -> f64,
) -> Vec<T> {
    // Fisher–Yates.
    for i in (1..items.len()).rev() {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "random() < 1, so the product is in [0, i]"
        )]
        let j = ((random() * (i + 1) as f64) as usize).min(i);
        items.swap(i, j);
    }
    if let Some(last) = last
        && let Some(i) = items.iter().position(|c| c.addr() == last)
    {
        let item = items.remove(i);
        items.push(item);
    }
    if let Some(first) = first
        && let Some(i) = items.iter().position(|c| c.addr() == first)
    {
        let item = items.remove(i);
        items.insert(0, item);
    }
    items
}

/// What [`order`] sorts by.
trait HasAddr {
    fn addr(&self) -> SocketAddr;
}

impl HasAddr for Candidate {
    fn addr(&self) -> SocketAddr {
        self.addr
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    impl HasAddr for SocketAddr {
        fn addr(&self) -> SocketAddr {
            *self
        }
    }

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    #[test]
    fn the_last_good_server_comes_first_and_the_avoided_one_last() {
        let all = addrs(5);
        for _ in 0..200 {
            let ordered = order(all.clone(), Some(all[3]), Some(all[1]), random_fraction);
            assert_eq!(ordered[0], all[3]);
            assert_eq!(ordered[4], all[1]);
            let mut sorted = ordered.clone();
            sorted.sort();
            assert_eq!(sorted, all, "a permutation");
        }
        // A remembered address no longer among the candidates changes nothing.
        let gone = SocketAddr::from(([10, 0, 0, 1], 1));
        assert_eq!(order(all, Some(gone), None, || 0.999).len(), 5);
    }

    #[test]
    fn rounds_start_at_every_server_about_equally_often() {
        let all = addrs(4);
        let mut firsts = [0usize; 4];
        let rounds = 4000;
        for _ in 0..rounds {
            let ordered = order(all.clone(), None, None, random_fraction);
            firsts[usize::from(ordered[0].port() - 1)] += 1;
        }
        // Each is expected 1000 times; 800 is more than six standard deviations below.
        for (i, n) in firsts.iter().enumerate() {
            assert!(
                *n > 800,
                "server {i} came first {n} times of {rounds}: {firsts:?}"
            );
        }
    }

    #[tokio::test]
    async fn names_resolve_to_all_their_addresses_once() {
        let servers: ServerList = "localhost:8081,127.0.0.1:8081,127.0.0.1:8082"
            .parse()
            .unwrap();
        let (candidates, failures) = resolve(&servers, Duration::from_secs(5)).await;
        assert!(failures.is_empty(), "{failures:?}");
        let found: Vec<SocketAddr> = candidates.iter().map(|c| c.addr).collect();
        // localhost gives 127.0.0.1 (and ::1 where configured); 127.0.0.1:8081 is not repeated.
        assert!(found.contains(&"127.0.0.1:8081".parse().unwrap()));
        assert!(found.contains(&"127.0.0.1:8082".parse().unwrap()));
        let unique: HashSet<_> = found.iter().collect();
        assert_eq!(unique.len(), found.len(), "{found:?}");
    }
}
