//! The running agent: start-up (resume or attest), the state its loops share, and shutdown.
//!
//! Tasks, each a loop that ends when the agent stops:
//! - `sync`: holds the `SyncEntries` stream, applies what it sends to the [`Cache`];
//! - `mint`: mints, renews and drops workload SVIDs;
//! - `renew`: renews the agent's own SVID;
//! - the Workload API server, reading the published [`Snapshot`]s.
//!
//! A loop that hears from the server that this agent is no longer accepted (evicted, banned,
//! unknown) asks [`Shared::reattest`]: with a usable node attestor the agent attests again and
//! carries on under its new SVID; without one `run` returns [`AgentError::Rejected`].

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use lanyard_core::{Bundle, BundleSet, SharedClock, SpiffeId, SystemClock};
use lanyard_proto::node::node_client::NodeClient;
use lanyard_tls::{BundleHandle, SvidHandle};
use lanyard_workload::{CallerAttestor, JwtSvidCache, Snapshot, WorkloadServer};
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

use crate::attest::{self, Attested};
use crate::cache::Cache;
use crate::config::{AgentConfig, TrustBootstrap};
use crate::node::{ChannelKind, Connector};
use crate::source::AgentSource;
use crate::storage::{AgentSvid, Storage};
use crate::tasks::{AgentTasks, ToolUseQueue};
use crate::timing::{self, Backoff};
use crate::workload_attestor::HostAttestor;
use crate::{AgentError, mint, renew, sync};

/// Longest a loop sleeps before looking at the clock again, so that a wall-clock jump is noticed.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(60);

/// An agent, configured; [`run`](crate::run) with defaults is the short form.
#[derive(Debug)]
pub struct Agent<A = HostAttestor> {
    config: AgentConfig,
    clock: SharedClock,
    attestor: A,
    /// The `unix` attestor to tune to the entries in use, when the default attestor is used.
    unix: Option<Arc<lanyard_attestation::UnixAttestor>>,
}

/// What the loops share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: AgentConfig,
    pub(crate) clock: SharedClock,
    pub(crate) storage: Storage,
    pub(crate) connector: Connector,
    /// The agent SVID in use, with its renewal time.
    identity: Mutex<Identity>,
    /// The mTLS channel for the current agent SVID. Replaced when the SVID changes, so that new
    /// calls go over a connection that presents the new one.
    channel: Mutex<Channel>,
    /// Increases whenever the agent SVID changes; the entry stream reconnects then.
    pub(crate) generation: watch::Sender<u64>,
    /// Locked for short, synchronous updates only, never across an await.
    pub(crate) cache: Mutex<Cache>,
    pub(crate) snapshots: Arc<watch::Sender<Arc<Snapshot>>>,
    /// Wakes the mint loop: entries changed, or the server is reachable again.
    pub(crate) mint_wakeup: Notify,
    pub(crate) jwt_cache: Arc<JwtSvidCache>,
    /// One re-attestation at a time.
    reattest_lock: tokio::sync::Mutex<()>,
    unix: Option<Arc<lanyard_attestation::UnixAttestor>>,
}

#[derive(Debug)]
struct Identity {
    svid: AgentSvid,
    renew_at: SystemTime,
}

/// The result of a node-API call, sorted by what the caller should do next.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The server does not accept this agent any more: re-attest or stop.
    Rejected(tonic::Status),
    /// Retry after a backoff.
    Transient(String),
}

/// Why a re-attestation is needed.
#[derive(Debug, Clone)]
pub(crate) enum ReattestReason {
    Expired(SystemTime),
    Rejected(String),
}

// === impl Agent ===

impl Agent<HostAttestor> {
    /// An agent with the system clock and the `unix` + `cgroup` workload attestors.
    pub fn new(config: AgentConfig) -> Self {
        let attestor = HostAttestor::default();
        let unix = Some(attestor.unix().clone());
        Self {
            config,
            clock: Arc::new(SystemClock),
            attestor,
            unix,
        }
    }
}

impl<A: CallerAttestor> Agent<A> {
    /// The clock SVID lifetimes, renewals and TLS certificate checks are judged by.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Attests Workload API callers with `attestor` instead of `unix` + `cgroup`.
    pub fn with_workload_attestor<B: CallerAttestor>(self, attestor: B) -> Agent<B> {
        Agent {
            config: self.config,
            clock: self.clock,
            attestor,
            unix: None,
        }
    }

    /// Runs until `shutdown` completes or a fatal error: binds the Workload API socket, resumes
    /// from the persisted SVID or attests, then keeps entries, bundles and SVIDs current. On the
    /// way out the entry stream is closed, open Workload API streams end and the socket is
    /// removed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let Self {
            config,
            clock,
            attestor,
            unix,
        } = self;
        let storage = Storage::open(&config.data_dir)?;
        let listener = lanyard_workload::bind(&config.socket_path)?;
        let socket_path = config.socket_path.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Until the first sync brings the revoked tokens, no token is validated.
        let snapshots = Arc::new(watch::Sender::new(Arc::new(
            Snapshot::empty(config.trust_domain.clone())
                .with_revocations(lanyard_workload::Revocations::Pending),
        )));
        let jwt_cache = Arc::new(JwtSvidCache::new(clock.clone()));
        let shared_cell: Arc<OnceLock<Arc<Shared>>> = Arc::new(OnceLock::new());
        let tool_uses = Arc::new(ToolUseQueue::default());
        let source = AgentSource::new(snapshots.clone(), jwt_cache.clone(), shared_cell.clone());
        let mut workload_stop = stop_rx.clone();
        let workload = tokio::spawn(
            WorkloadServer::new(source, attestor)
                .with_tasks(AgentTasks::new(shared_cell.clone(), tool_uses.clone()))
                .with_clock(clock.clone())
                .serve(listener, async move {
                    let _ = workload_stop.wait_for(|s| *s).await;
                }),
        );

        let result = tokio::select! {
            result = start_and_serve(config, clock, storage, snapshots, jwt_cache, unix, shared_cell, tool_uses, stop_rx) => result,
            () = shutdown => Ok(()),
        };
        let _ = stop_tx.send(true);
        // Dropping the loops' futures (above) closed the entry stream; now the Workload API.
        match workload.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the Workload API server failed"),
            Err(e) => tracing::warn!(error = %e, "the Workload API server task failed"),
        }
        match std::fs::remove_file(&socket_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %socket_path.display(), error = %e, "cannot remove the socket")
            }
        }
        result
    }
}

/// Resumes or attests, then runs the loops until one fails for good.
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces `run` made, handed over once"
)]
async fn start_and_serve(
    config: AgentConfig,
    clock: SharedClock,
    storage: Storage,
    snapshots: Arc<watch::Sender<Arc<Snapshot>>>,
    jwt_cache: Arc<JwtSvidCache>,
    unix: Option<Arc<lanyard_attestation::UnixAttestor>>,
    shared_cell: Arc<OnceLock<Arc<Shared>>>,
    tool_uses: Arc<ToolUseQueue>,
    stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (svid, bundle, connector) = start(&config, &clock, &storage).await?;
    let channel = connector.channel(ChannelKind::Agent)?;
    let renew_at = timing::renew_at(svid.not_before, svid.not_after);
    tracing::info!(agent = %svid.spiffe_id, "agent identity ready");
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::new(config.trust_domain.clone(), bundle)),
        config,
        clock,
        storage,
        connector,
        identity: Mutex::new(Identity { svid, renew_at }),
        channel: Mutex::new(channel),
        generation: watch::Sender::new(0),
        snapshots,
        mint_wakeup: Notify::new(),
        jwt_cache,
        reattest_lock: tokio::sync::Mutex::new(()),
        unix,
    });
    let _ = shared_cell.set(shared.clone());
    shared.publish();
    let result = tokio::try_join!(
        sync::sync_loop(shared.clone(), stop.clone()),
        mint::mint_loop(shared.clone(), stop.clone()),
        crate::tasks::send_tool_use(shared.clone(), tool_uses, stop.clone()),
        renew::renew_loop(shared.clone(), stop),
    );
    result.map(|_| ())
}

/// The agent SVID and bundle to start with: the persisted ones if still valid, otherwise a new
/// attestation (retried while the server cannot be reached).
async fn start(
    config: &AgentConfig,
    clock: &SharedClock,
    storage: &Storage,
) -> Result<(AgentSvid, Bundle, Connector), AgentError> {
    let td = &config.trust_domain;
    // After the first attestation the bundle the server handed out, kept current from the
    // entry stream, authenticates the server; the bootstrap bundle is for the first time only.
    let bundle = match storage.load_bundle(td)? {
        Some(bundle) if !bundle.x509_authorities().is_empty() => Some(bundle),
        _ => match &config.trust {
            TrustBootstrap::Bundle(bundle) => Some(bundle.clone()),
            TrustBootstrap::InsecureBootstrap => None,
        },
    };
    let bundles = BundleHandle::new(bundle.iter().cloned().collect::<BundleSet>());
    let connector = Connector::new(
        config.servers.clone(),
        config.server_id(),
        config.tuning.clone(),
        clock.clone(),
        bundles,
        SvidHandle::default(),
    );
    let persisted = storage.load_agent_svid()?;
    let now = clock.now();
    if let (Some(svid), Some(bundle)) = (&persisted, &bundle) {
        if !svid.spiffe_id.is_member_of(td) {
            return Err(AgentError::CorruptState {
                path: storage.svid_path(),
                reason: format!("its SVID {} is not in trust domain {td}", svid.spiffe_id),
            });
        }
        if now < svid.not_after {
            tracing::info!(agent = %svid.spiffe_id, "resuming with the persisted agent SVID");
            connector.svid.set(&svid.chain, svid.key.as_pkcs8_der())?;
            return Ok((svid.clone(), bundle.clone(), connector));
        }
    }
    let reason = persisted
        .as_ref()
        .map(|s| ReattestReason::Expired(s.not_after));
    let previous_token = persisted.as_ref().and_then(|s| s.join_token_id.clone());
    let kind = if bundle.is_some() {
        ChannelKind::Attest
    } else {
        ChannelKind::InsecureAttest
    };
    let attested =
        attest_with_retry(config, clock, &connector, kind, reason, previous_token).await?;
    persist(storage, &attested.svid, &attested.bundle)?;
    connector
        .bundles
        .set(std::iter::once(attested.bundle.clone()).collect());
    connector
        .svid
        .set(&attested.svid.chain, attested.svid.key.as_pkcs8_der())?;
    Ok((attested.svid, attested.bundle, connector))
}

/// Checks that attestation is possible, then attests, retrying while the server is unreachable.
async fn attest_with_retry(
    config: &AgentConfig,
    clock: &SharedClock,
    connector: &Connector,
    kind: ChannelKind,
    reason: Option<ReattestReason>,
    previous_token: Option<String>,
) -> Result<Attested, AgentError> {
    let Some(attestor) = &config.node_attestor else {
        return Err(match reason {
            None => AgentError::NoAttestor,
            Some(ReattestReason::Expired(expired_at)) => AgentError::SvidExpired { expired_at },
            Some(ReattestReason::Rejected(reason)) => AgentError::Rejected { reason },
        });
    };
    if let Some(token) = attest::join_token_id(attestor)
        && previous_token.as_deref() == Some(token.as_str())
    {
        return Err(match reason {
            Some(ReattestReason::Rejected(reason)) => AgentError::Rejected { reason },
            _ => AgentError::JoinTokenUsed,
        });
    }
    let mut backoff = Backoff::new(config.tuning.retry_initial, config.tuning.retry_max);
    loop {
        match attest::attest(connector, kind, attestor, &config.trust_domain, || {
            clock.now()
        })
        .await
        {
            Ok(attested) => {
                tracing::info!(agent = %attested.svid.spiffe_id, "node attestation succeeded");
                return Ok(attested);
            }
            Err(e) if attest::is_transient(&e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "node attestation failed; retrying");
                // A server that was down and listens again ends the wait early.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = connector.until_reachable() => {}
                }
            }
            Err(AgentError::AttestationRefused { code, message }) => {
                return Err(match reason {
                    Some(ReattestReason::Rejected(reason)) => AgentError::Rejected {
                        reason: format!("{reason}; attesting again was refused: {message}"),
                    },
                    _ => AgentError::AttestationRefused { code, message },
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Bundle first: an SVID on disk always has a bundle beside it that verifies the server.
fn persist(storage: &Storage, svid: &AgentSvid, bundle: &Bundle) -> Result<(), AgentError> {
    storage.store_bundle(bundle)?;
    storage.store_agent_svid(svid)
}

// === impl Shared ===

impl Shared {
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn identity(&self) -> MutexGuard<'_, Identity> {
        self.identity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (SPIFFE ID, renewal time, NotAfter, join token id) of the agent SVID.
    pub(crate) fn agent_svid_times(&self) -> (SpiffeId, SystemTime, SystemTime, Option<String>) {
        let identity = self.identity();
        (
            identity.svid.spiffe_id.clone(),
            identity.renew_at,
            identity.svid.not_after,
            identity.svid.join_token_id.clone(),
        )
    }

    /// A node-API client over the current mTLS channel.
    pub(crate) fn client(&self) -> NodeClient<Channel> {
        let channel = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.connector.client(channel)
    }

    /// Publishes the cache's current state to the Workload API, if it changed.
    pub(crate) fn publish(&self) {
        let now = self.now();
        let snapshot = {
            let cache = self.cache();
            if let Some(unix) = &self.unix {
                let usage = cache.unix_selector_usage();
                unix.set_exe_sha256(usage.sha256);
                unix.set_exe_path(usage.path);
            }
            cache.snapshot(now)
        };
        self.snapshots.send_if_modified(|current| {
            if **current == snapshot {
                false
            } else {
                *current = Arc::new(snapshot);
                true
            }
        });
    }

    /// Makes `svid` the agent's SVID: persisted, presented on new connections, over a new channel.
    pub(crate) fn install_agent_svid(&self, svid: AgentSvid) -> Result<(), AgentError> {
        self.storage.store_agent_svid(&svid)?;
        self.connector
            .svid
            .set(&svid.chain, svid.key.as_pkcs8_der())?;
        let channel = self.connector.channel(ChannelKind::Agent)?;
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) = channel;
        // Just received (renewed or re-attested): its life counts from now.
        let renew_at = timing::renew_at_received(svid.not_before, svid.not_after, self.clock.now());
        *self.identity() = Identity { svid, renew_at };
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// The server of the current connection accepted it but failed the calls over it: the next
    /// connection starts with the other servers. A new channel, so that the next call connects.
    pub(crate) fn fail_over(&self) -> Result<(), AgentError> {
        let Some(addr) = self.connector.avoid_current() else {
            return Ok(());
        };
        tracing::info!(%addr, "the server fails calls; trying the others first");
        let channel = self.connector.channel(ChannelKind::Agent)?;
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) = channel;
        Ok(())
    }

    /// Makes `bundle` the trust domain's bundle for server authentication, and persists it.
    pub(crate) fn install_bundle(&self, bundle: &Bundle) -> Result<(), AgentError> {
        self.storage.store_bundle(bundle)?;
        self.connector
            .bundles
            .set(std::iter::once(bundle.clone()).collect());
        Ok(())
    }

    /// Attests again, unless another loop already did since it saw `seen_generation`. Errors:
    /// [`AgentError::Unreachable`] is passing (retry later); anything else is fatal.
    pub(crate) async fn reattest(
        &self,
        reason: ReattestReason,
        seen_generation: u64,
    ) -> Result<(), AgentError> {
        let _guard = self.reattest_lock.lock().await;
        if *self.generation.borrow() != seen_generation {
            return Ok(());
        }
        tracing::warn!(?reason, "attesting again");
        let (_, _, _, previous_token) = self.agent_svid_times();
        let Some(attestor) = &self.config.node_attestor else {
            return Err(match reason {
                ReattestReason::Expired(expired_at) => AgentError::SvidExpired { expired_at },
                ReattestReason::Rejected(reason) => AgentError::Rejected { reason },
            });
        };
        if let Some(token) = attest::join_token_id(attestor)
            && previous_token.as_deref() == Some(token.as_str())
        {
            return Err(match reason {
                ReattestReason::Rejected(reason) => AgentError::Rejected { reason },
                ReattestReason::Expired(_) => AgentError::JoinTokenUsed,
            });
        }
        let attested = match attest::attest(
            &self.connector,
            ChannelKind::Attest,
            attestor,
            &self.config.trust_domain,
            || self.now(),
        )
        .await
        {
            Ok(attested) => attested,
            Err(AgentError::AttestationRefused { code, message }) => {
                return Err(match reason {
                    ReattestReason::Rejected(reason) => AgentError::Rejected {
                        reason: format!("{reason}; attesting again was refused: {message}"),
                    },
                    ReattestReason::Expired(_) => AgentError::AttestationRefused { code, message },
                });
            }
            Err(e) => return Err(e),
        };
        tracing::info!(agent = %attested.svid.spiffe_id, "attested again");
        self.install_bundle(&attested.bundle)?;
        self.install_agent_svid(attested.svid)?;
        // A new identity may serve other entries: start over with a full set.
        self.cache().reset_revision();
        Ok(())
    }
}

/// Sorts a failed call.
pub(crate) fn classify(status: tonic::Status) -> CallError {
    if crate::node::is_rejection(&status) {
        CallError::Rejected(status)
    } else {
        CallError::Transient(attest::status_detail(&status))
    }
}

/// Waits `delay`, or less if the agent stops (true) or `wake` completes (false).
pub(crate) async fn pause(
    delay: Duration,
    stop: &mut watch::Receiver<bool>,
    wake: impl Future<Output = ()>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay.min(MAX_IDLE)) => false,
        () = wake => false,
        () = stopped(stop) => true,
    }
}

/// Completes when `stop` turns true or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
