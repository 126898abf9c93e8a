//! A fake node server for the agent's tests: a real `lanyard_ca::Ca`, the real node-API protocol
//! over real TLS on 127.0.0.1, entries and join tokens held in memory, and counters the tests
//! assert on. Plus a clock that follows tokio's (paused) clock, and Workload API helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    reason = "test support shared by several test files"
)]

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use lanyard_agent::{AgentConfig, AgentError, NodeAttestorConfig, TrustBootstrap, Tuning};
use lanyard_ca::{
    Ca, CaConfig, JwtSvidRequest, KeyType, MemoryKeyManager, PrivateKey, X509SvidRequest,
};
use lanyard_core::{Clock, SelectorSet, SharedClock, SpiffeId, TrustDomain};
use lanyard_proto::node::{self as pb, node_server::NodeServer};
use lanyard_tls::{Authorizer, BundleHandle, SpiffeClientVerifier, SvidHandle};
use lanyard_workload::{FakeAttestor, WorkloadClient, X509Context};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

/// Long enough for anything the agent does in virtual time (renewals of 1 h SVIDs included).
pub const WAIT: Duration = Duration::from_secs(6 * 3600);

pub const TD: &str = "example.org";

pub fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

pub fn id(path: &str) -> SpiffeId {
    td().id_with_path(path).unwrap()
}

/// Wall-clock time that moves with tokio's clock, so paused-time tests age certificates.
#[derive(Debug)]
pub struct TokioClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: SystemTime::now(),
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// rustls' clock for the fake server.
#[derive(Debug)]
struct ClockTime(SharedClock);

impl rustls::time_provider::TimeProvider for ClockTime {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            self.0.now().duration_since(SystemTime::UNIX_EPOCH).ok()?,
        ))
    }
}

// === the fake server ===

/// What the fake server has seen and holds.
#[derive(Debug, Default)]
pub struct State {
    pub tokens: HashSet<String>,
    pub entries: BTreeMap<String, pb::Entry>,
    pub revision: u64,
    /// (revision, entry id) of every change, for resuming.
    pub log: Vec<(u64, String)>,
    pub evicted: HashSet<SpiffeId>,
    /// Entries per message of a full set.
    pub chunk: usize,
    pub agent_ttl: Duration,
    // Counters.
    pub attestations: usize,
    pub refused_attestations: usize,
    pub renewals: usize,
    pub batches: usize,
    pub minted: usize,
    pub jwt_minted: usize,
    /// `since_revision` of every SyncEntries call, in order.
    pub sync_requests: Vec<u64>,
    /// The server address (of several sharing this state) each SyncEntries call came to.
    pub sync_servers: Vec<SocketAddr>,
    /// Full sets sent.
    pub full_syncs: usize,
    /// The client SPIFFE ID of every call after attestation.
    pub callers: Vec<Option<SpiffeId>>,
}

#[derive(Clone)]
struct Service {
    ca: Arc<Ca>,
    state: Arc<Mutex<State>>,
    /// Ticks on every entry change.
    changes: watch::Sender<u64>,
    /// The bundle JSON pushed to agents.
    bundle: watch::Sender<String>,
    stop: watch::Receiver<bool>,
}

/// The client's verified SPIFFE ID, for tonic's request extensions.
#[derive(Debug, Clone)]
struct Peer(Option<SpiffeId>, SocketAddr);

pub struct FakeServer {
    pub ca: Arc<Ca>,
    pub clock: SharedClock,
    pub addr: SocketAddr,
    service: Service,
    tls: Arc<rustls::ServerConfig>,
    server_svid: SvidHandle,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// Bumped to cut every open connection while the listener stays (see [`Self::sever`]).
    sever: watch::Sender<u64>,
}

impl FakeServer {
    pub async fn start(clock: SharedClock) -> Self {
        let ca = Arc::new(
            Ca::new(
                CaConfig::new(td()),
                Arc::new(MemoryKeyManager::new()),
                clock.clone(),
            )
            .unwrap(),
        );
        let server_svid = SvidHandle::default();
        let bundles = BundleHandle::new(std::iter::once(ca.bundle()).collect());
        let verifier = SpiffeClientVerifier::new(bundles, Authorizer::MemberOf(td())).optional();
        let mut tls = lanyard_tls::server_config(server_svid.clone(), Some(verifier)).unwrap();
        tls.time_provider = Arc::new(ClockTime(clock.clone()));
        let (_, stop) = watch::channel(false);
        let service = Service {
            ca: ca.clone(),
            state: Arc::new(Mutex::new(State {
                chunk: 2,
                agent_ttl: Duration::from_secs(3600),
                ..State::default()
            })),
            changes: watch::Sender::new(0),
            bundle: watch::Sender::new(ca.bundle().to_json()),
            stop,
        };
        let mut server = Self {
            ca,
            clock,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            service,
            tls: Arc::new(tls),
            server_svid,
            running: None,
            sever: watch::Sender::new(0),
        };
        server.renew_server_svid();
        server.serve().await;
        server
    }

    /// Another server of the same deployment on its own port: the same CA, entries, revisions and
    /// counters, as servers on one datastore share them.
    pub async fn sibling(&self) -> Self {
        let mut server = Self {
            ca: self.ca.clone(),
            clock: self.clock.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            service: self.service.clone(),
            tls: self.tls.clone(),
            server_svid: self.server_svid.clone(),
            running: None,
            sever: watch::Sender::new(0),
        };
        server.serve().await;
        server
    }

    /// Cuts every open connection (reads and writes fail) while the listener keeps accepting:
    /// a connection lost with the server still up.
    pub fn sever(&self) {
        self.sever.send_modify(|n| *n += 1);
    }

    /// A fresh server SVID from the current CA (long-lived: tests age agents, not the server).
    pub fn renew_server_svid(&self) {
        let (key, pkcs8) = PrivateKey::generate(KeyType::EcP256).unwrap();
        let svid = self
            .ca
            .mint_x509_svid(
                key.public_key_der(),
                &X509SvidRequest::new(id("/lanyard/server"))
                    .with_ttl(Duration::from_secs(20 * 3600)),
            )
            .unwrap();
        self.server_svid
            .set(&svid.cert_chain, pkcs8.as_bytes())
            .unwrap();
    }

    async fn serve(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut service = self.service.clone();
        service.stop = stop_rx.clone();
        let (conn_tx, conn_rx) = mpsc::channel::<io::Result<Conn>>(16);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let mut accept_stop = stop_rx.clone();
        let sever = self.sever.subscribe();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    () = stopped(&mut accept_stop) => return,
                };
                // Without it, Nagle holds small writes for the peer's delayed ACK: real time that
                // a paused-clock test does not see, so its clock would jump meanwhile.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let conn_tx = conn_tx.clone();
                let mut sever = sever.clone();
                sever.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(lanyard_tls::peer_spiffe_id);
                    let local = tls.get_ref().0.local_addr().unwrap();
                    let severed: Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                        Box::pin(async move {
                            let _ = sever.changed().await;
                        });
                    let _ = conn_tx
                        .send(Ok(Conn {
                            tls,
                            peer,
                            local,
                            severed: Some(severed),
                        }))
                        .await;
                });
            }
        });
        let mut shutdown = stop_rx;
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(NodeServer::new(service))
                .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await;
        });
        self.running = Some((stop_tx, task));
    }

    /// Stops serving: the listener closes, open streams end, connections close.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve().await;
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.service.state.lock().unwrap()
    }

    pub fn add_token(&self) -> String {
        let mut state = self.state();
        let token = format!("token{}", state.tokens.len() + state.attestations + 1);
        state.tokens.insert(token.clone());
        token
    }

    pub fn put_entry(&self, entry: pb::Entry) {
        let mut state = self.state();
        state.revision += 1;
        let revision = state.revision;
        state.log.push((revision, entry.id.clone()));
        state
            .entries
            .insert(entry.id.clone(), pb::Entry { revision, ..entry });
        drop(state);
        self.service.changes.send_replace(revision);
    }

    pub fn remove_entry(&self, entry_id: &str) {
        let mut state = self.state();
        state.revision += 1;
        let revision = state.revision;
        state.log.push((revision, entry_id.to_owned()));
        state.entries.remove(entry_id);
        drop(state);
        self.service.changes.send_replace(revision);
    }

    /// Pushes the CA's current bundle to agents.
    pub fn publish_bundle(&self) {
        self.service.bundle.send_replace(self.ca.bundle().to_json());
    }

    /// Evicts an agent: its calls are refused and its stream ends.
    pub fn evict(&self, agent: &SpiffeId) {
        self.state().evicted.insert(agent.clone());
        self.service.changes.send_modify(|_| {});
    }

    pub fn agent_id_for(token: &str) -> SpiffeId {
        let token: lanyard_agent::JoinToken = token.parse().unwrap();
        id(&format!("/lanyard/agent/join_token/{}", token.id()))
    }
}

pub fn entry(entry_id: &str, path: &str, selector: &str) -> pb::Entry {
    pb::Entry {
        id: entry_id.into(),
        spiffe_id: id(path).to_string(),
        parent_id: id("/lanyard/agent/any").to_string(),
        selectors: vec![selector.into()],
        x509_svid_ttl_seconds: 3600,
        jwt_svid_ttl_seconds: 300,
        ..Default::default()
    }
}

impl Service {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The attested, unevicted agent making the call.
    fn caller<T>(&self, request: &Request<T>) -> Result<SpiffeId, Status> {
        let peer = request.extensions().get::<Peer>().and_then(|p| p.0.clone());
        self.state().callers.push(peer.clone());
        let id = peer.ok_or_else(|| Status::unauthenticated("mTLS with an agent SVID required"))?;
        if self.state().evicted.contains(&id) {
            return Err(Status::permission_denied(format!("agent {id} is evicted")));
        }
        Ok(id)
    }

    fn agent_svid(&self, agent: &SpiffeId, csr: &[u8]) -> Result<pb::AgentSvid, Status> {
        let ttl = self.state().agent_ttl;
        let svid = self
            .ca
            .mint_x509_svid_from_csr(csr, &X509SvidRequest::new(agent.clone()).with_ttl(ttl))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(pb::AgentSvid {
            spiffe_id: agent.to_string(),
            expires_at: unix(svid.not_after),
            cert_chain: svid.cert_chain,
            bundle_json: self.ca.bundle().to_json(),
            selectors: Vec::new(),
        })
    }
}

pub fn unix(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

type BoxStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::node_server::Node for Service {
    type AttestAgentStream = BoxStream<pb::AttestAgentResponse>;
    type SyncEntriesStream = BoxStream<pb::SyncEntriesResponse>;

    async fn attest_agent(
        &self,
        request: Request<Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<Self::AttestAgentStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no params"))?;
        let Some(pb::attest_agent_request::Step::Params(params)) = first.step else {
            return Err(Status::invalid_argument("params first"));
        };
        if params.attestor != "join_token" {
            return Err(Status::unimplemented("join_token only"));
        }
        let token = String::from_utf8(params.payload).unwrap_or_default();
        if !self.state().tokens.remove(&token) {
            self.state().refused_attestations += 1;
            return Err(Status::permission_denied("unknown or used join token"));
        }
        let agent = FakeServer::agent_id_for(&token);
        self.state().evicted.remove(&agent);
        let svid = self.agent_svid(&agent, &params.csr)?;
        self.state().attestations += 1;
        let response = pb::AttestAgentResponse {
            step: Some(pb::attest_agent_response::Step::Result(svid)),
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(response)))))
    }

    async fn renew_agent(
        &self,
        request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let agent = self.caller(&request)?;
        let svid = self.agent_svid(&agent, &request.get_ref().csr)?;
        self.state().renewals += 1;
        Ok(Response::new(pb::RenewAgentResponse { svid: Some(svid) }))
    }

    async fn sync_entries(
        &self,
        request: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let agent = self.caller(&request)?;
        let since = request.get_ref().since_revision;
        let local = request.extensions().get::<Peer>().unwrap().1;
        self.state().sync_requests.push(since);
        self.state().sync_servers.push(local);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(self.clone().stream(agent, since, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn batch_new_x509_svid(
        &self,
        request: Request<pb::BatchNewX509SvidRequest>,
    ) -> Result<Response<pb::BatchNewX509SvidResponse>, Status> {
        self.caller(&request)?;
        self.state().batches += 1;
        let mut results = Vec::new();
        for param in &request.get_ref().params {
            let entry = self.state().entries.get(&param.entry_id).cloned();
            let result = match entry {
                None => pb::X509SvidResult {
                    entry_id: param.entry_id.clone(),
                    code: tonic::Code::PermissionDenied as i32,
                    message: "not yours".into(),
                    ..Default::default()
                },
                Some(entry) => {
                    let req = X509SvidRequest::new(entry.spiffe_id.parse().unwrap())
                        .with_ttl(Duration::from_secs(
                            u64::try_from(entry.x509_svid_ttl_seconds).unwrap(),
                        ))
                        .with_dns_names(
                            entry.dns_names.iter().map(|d| d.parse().unwrap()).collect(),
                        );
                    let svid = self
                        .ca
                        .mint_x509_svid_from_csr(&param.csr, &req)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    self.state().minted += 1;
                    pb::X509SvidResult {
                        entry_id: param.entry_id.clone(),
                        code: 0,
                        message: String::new(),
                        expires_at: unix(svid.not_after),
                        cert_chain: svid.cert_chain,
                    }
                }
            };
            results.push(result);
        }
        Ok(Response::new(pb::BatchNewX509SvidResponse { results }))
    }

    async fn new_jwt_svid(
        &self,
        request: Request<pb::NewJwtSvidRequest>,
    ) -> Result<Response<pb::NewJwtSvidResponse>, Status> {
        self.caller(&request)?;
        let request = request.into_inner();
        let entry = self
            .state()
            .entries
            .get(&request.entry_id)
            .cloned()
            .ok_or_else(|| Status::permission_denied("not yours"))?;
        let svid = self
            .ca
            .mint_jwt_svid(&JwtSvidRequest::new(
                entry.spiffe_id.parse().unwrap(),
                request.audience,
            ))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.state().jwt_minted += 1;
        Ok(Response::new(pb::NewJwtSvidResponse {
            token: svid.token,
            issued_at: unix(svid.issued_at),
            expires_at: unix(svid.expires_at),
        }))
    }

    // Task credentials are decided by the real server; tests/tests/tasks.rs covers them end to end.
    async fn begin_task(
        &self,
        _request: Request<pb::BeginTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::BeginTaskResponse>, Status> {
        Err(Status::unimplemented("the fake server decides no tasks"))
    }

    async fn get_task(
        &self,
        _request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::Task>, Status> {
        Err(Status::unimplemented("the fake server decides no tasks"))
    }

    async fn list_tasks(
        &self,
        _request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<lanyard_proto::task::ListTasksResponse>, Status> {
        Err(Status::unimplemented("the fake server decides no tasks"))
    }

    async fn end_task(
        &self,
        _request: Request<pb::EndTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::Task>, Status> {
        Err(Status::unimplemented("the fake server decides no tasks"))
    }

    async fn await_approval(
        &self,
        _request: Request<pb::AwaitApprovalRequest>,
    ) -> Result<Response<lanyard_proto::task::BeginTaskResponse>, Status> {
        Err(Status::unimplemented("the fake server decides no tasks"))
    }

    async fn record_tool_use(
        &self,
        _request: Request<pb::RecordToolUseRequest>,
    ) -> Result<Response<pb::RecordToolUseResponse>, Status> {
        Err(Status::unimplemented("the fake server records no tool use"))
    }
}

impl Service {
    async fn stream(
        self,
        agent: SpiffeId,
        since: u64,
        tx: mpsc::Sender<Result<pb::SyncEntriesResponse, Status>>,
    ) {
        let mut changes = self.changes.subscribe();
        let mut bundle = self.bundle.subscribe();
        let mut stop = self.stop.clone();
        let bundle_json = bundle.borrow_and_update().clone();
        changes.borrow_and_update();
        let (messages, mut sent) = {
            let mut state = self.state();
            let revision = state.revision;
            if since > 0 && since <= revision {
                let mut msg = delta(&state, since);
                msg.revision = revision;
                msg.bundle_json = bundle_json;
                // As the real server does: the (here empty) revocation list first.
                msg.revocations = true;
                (vec![msg], revision)
            } else {
                state.full_syncs += 1;
                let entries: Vec<pb::Entry> = state.entries.values().cloned().collect();
                let chunks: Vec<&[pb::Entry]> = if entries.is_empty() {
                    vec![&[]]
                } else {
                    entries.chunks(state.chunk.max(1)).collect()
                };
                let last = chunks.len() - 1;
                let messages = chunks
                    .into_iter()
                    .enumerate()
                    .map(|(i, chunk)| pb::SyncEntriesResponse {
                        full_sync: i == 0,
                        revocations: i == 0,
                        entries: chunk.to_vec(),
                        more: i != last,
                        revision: if i == last { revision } else { 0 },
                        bundle_json: if i == last {
                            bundle_json.clone()
                        } else {
                            String::new()
                        },
                        ..Default::default()
                    })
                    .collect();
                (messages, revision)
            }
        };
        for msg in messages {
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() { return; }
                    let msg = {
                        let state = self.state();
                        if state.evicted.contains(&agent) {
                            None
                        } else {
                            let mut msg = delta(&state, sent);
                            msg.revision = state.revision;
                            sent = state.revision;
                            Some(msg)
                        }
                    };
                    let Some(msg) = msg else {
                        let _ = tx.send(Err(Status::permission_denied("evicted"))).await;
                        return;
                    };
                    if msg.entries.is_empty() && msg.removed_entry_ids.is_empty() {
                        continue;
                    }
                    if tx.send(Ok(msg)).await.is_err() { return; }
                }
                changed = bundle.changed() => {
                    if changed.is_err() { return; }
                    let json = bundle.borrow_and_update().clone();
                    let msg = pb::SyncEntriesResponse { bundle_json: json, revision: sent, ..Default::default() };
                    if tx.send(Ok(msg)).await.is_err() { return; }
                }
                () = stopped(&mut stop) => return,
                () = tx.closed() => return,
            }
        }
    }
}

/// What changed after `since`: current entries, and ids that are gone.
fn delta(state: &State, since: u64) -> pb::SyncEntriesResponse {
    let ids: std::collections::BTreeSet<&String> = state
        .log
        .iter()
        .filter(|(r, _)| *r > since)
        .map(|(_, id)| id)
        .collect();
    let mut msg = pb::SyncEntriesResponse::default();
    for id in ids {
        match state.entries.get(id) {
            Some(entry) => msg.entries.push(entry.clone()),
            None => msg.removed_entry_ids.push(id.clone()),
        }
    }
    msg
}

/// A TLS connection that tells tonic the client's SPIFFE ID.
struct Conn {
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Option<SpiffeId>,
    /// The server address the client connected to.
    local: SocketAddr,
    /// Completes when the server severs its connections; `None` once it has.
    severed: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl Conn {
    fn check_severed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(severed) = &mut self.severed
            && severed.as_mut().poll(cx).is_ready()
        {
            self.severed = None;
        }
        match self.severed {
            None => Err(io::ErrorKind::ConnectionReset.into()),
            Some(_) => Ok(()),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        Peer(self.peer.clone(), self.local)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_severed(cx)?;
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_severed(cx)?;
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

// === the agent under test ===

pub const SELECTOR: &str = "unix:uid:1000";

pub struct Env {
    pub clock: Arc<TokioClock>,
    pub server: FakeServer,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let clock = TokioClock::new();
        let server = FakeServer::start(clock.clone()).await;
        Self {
            clock,
            server,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock/api.sock")
    }

    pub fn config(&self, token: Option<&str>) -> AgentConfig {
        let trust = TrustBootstrap::from_bytes(&td(), self.server.ca.bundle().to_json().as_bytes())
            .unwrap();
        let mut config = AgentConfig::new(
            td(),
            self.server.addr,
            self.data_dir(),
            self.socket(),
            trust,
        )
        .with_tuning(
            Tuning::default().with_retry(Duration::from_millis(200), Duration::from_secs(5)),
        );
        if let Some(token) = token {
            config =
                config.with_node_attestor(NodeAttestorConfig::JoinToken(token.parse().unwrap()));
        }
        config
    }

    /// Starts an agent that attests every Workload API caller with [`SELECTOR`].
    pub fn spawn(&self, config: AgentConfig) -> RunningAgent {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let agent = lanyard_agent::Agent::new(config)
            .with_clock(self.clock.clone())
            .with_workload_attestor(FakeAttestor::new(selectors(&[SELECTOR])));
        let task = tokio::spawn(agent.run(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        RunningAgent {
            stop: stop_tx,
            task,
        }
    }
}

pub fn selectors(s: &[&str]) -> SelectorSet {
    s.iter().map(|s| s.parse().unwrap()).collect()
}

pub struct RunningAgent {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    pub async fn shutdown(self) -> Result<(), AgentError> {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits for the agent to stop by itself.
    pub async fn join(self) -> Result<(), AgentError> {
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
    }
}

/// Waits until a Workload API caller gets an X.509 context for which `pred` holds, and returns
/// it. Until the agent has something for the caller, its answers are errors; those are retried.
pub async fn wait_for_x509(socket: &Path, pred: impl Fn(&X509Context) -> bool) -> X509Context {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(mut client) = WorkloadClient::connect(socket).await
                && let Ok(mut updates) = client.watch_x509_context().await
            {
                while let Ok(ctx) = updates.next().await {
                    if pred(&ctx) {
                        return ctx;
                    }
                }
            }
            // The agent has nothing for this caller yet, or is not listening yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the Workload API never served the expected SVIDs")
}

/// The SPIFFE IDs in a context, sorted.
pub fn ids(ctx: &X509Context) -> Vec<String> {
    let mut ids: Vec<String> = ctx.svids.iter().map(|s| s.spiffe_id.to_string()).collect();
    ids.sort();
    ids
}

/// The leaf of the SVID for `path` in `ctx`.
pub fn leaf<'a>(ctx: &'a X509Context, path: &str) -> &'a [u8] {
    let want = id(path);
    &ctx.svids
        .iter()
        .find(|s| s.spiffe_id == want)
        .unwrap()
        .chain[0]
}

pub fn not_after(der: &[u8]) -> SystemTime {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap())
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
