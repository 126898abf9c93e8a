//! The lanyard server: it opens the datastore, loads or creates the CA, keeps the CA rotating, and
//! serves the admin API on a private Unix socket plus health and metrics over HTTP.
//!
//! Layout: [`run`] wires everything (this file); `admin` is the admin gRPC service and `convert`
//! the parsing of its messages into lanyard-core types; `authority` loads the CA and drives its
//! rotation, persisting the journal and publishing the bundle; `http` serves `/live`, `/ready`,
//! `/metrics`; `socket` binds the private admin socket; `prune` keeps diagnostic records bounded.
//!
//! Task credentials: `policy` holds the Cedar grant policies read from `policy_dir` (reloaded on
//! SIGHUP or `lanyard policy reload`), `tasks` decides and mints them for the node API, and
//! `audit` runs the verifiable audit log every record goes into (checkpoints signed here).
//!
//! The node API (`node`, over TLS from `node_listener`) serves agents: attestation, SVIDs, and a
//! pushed entry stream fed by the in-memory `index`, which follows the datastore's revision log.
//! `follow` keeps this server current with other servers' writes to a shared datastore, on the
//! datastore's change notices.

mod admin;
mod audit;
mod authority;
mod config;
mod convert;
mod delegation;
mod follow;
mod heartbeat;
mod http;
mod identity;
mod index;
mod limits;
mod metrics;
mod node;
mod node_listener;
mod oauth;
mod policy;
mod prune;
mod socket;
mod tasks;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lanyard_core::{SharedClock, SystemClock};
use lanyard_store::{DataStore, StoreConfig};
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::UnixListenerStream;

pub use config::{
    CaSettings, DEFAULT_ADMIN_SOCKET, DEFAULT_ROOT_ADMIN_SOCKET, IdentityProviderConfig,
    NodeApiLimits, OAuthConfig, Retention, ServerConfig, UpstreamAuthority,
};

use crate::authority::Authority;
use crate::index::EntryIndex;
use crate::metrics::Metrics;
use crate::node::{AgentRevoked, PublishedBundles};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the datastore: {0}")]
    Store(#[from] lanyard_store::Error),
    #[error("CA: {0}")]
    Ca(#[from] lanyard_ca::CaError),
    /// The data directory was refused (another user's, or others can write into it) or could not
    /// be made.
    #[error("cannot use data directory {path}: {source}")]
    UnsafeDataDir {
        path: PathBuf,
        #[source]
        source: lanyard_fs::Error,
    },
    #[error("cannot bind the admin socket {path}: {source}")]
    AdminSocket {
        path: PathBuf,
        #[source]
        source: lanyard_fs::Error,
    },
    #[error("cannot listen on the admin socket {path}: {source}")]
    AdminListen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the node API at {addr}: {source}")]
    NodeBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the health endpoint {addr}: {source}")]
    HealthBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin API failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("server state is inconsistent: {0}")]
    State(String),
    #[error("grant policies: {0}")]
    Policy(String),
    #[error("OAuth endpoint: {0}")]
    OAuth(String),
}

/// Shared by every request handler.
#[derive(Debug)]
pub(crate) struct ServerState {
    pub(crate) config: ServerConfig,
    /// The datastore; every write is one transaction.
    pub(crate) store: Arc<dyn DataStore>,
    /// The CA and its persistence; rotation runs in a background task.
    pub(crate) authority: Authority,
    pub(crate) metrics: Metrics,
    /// The metrics registry, rendered for `/metrics`.
    pub(crate) registry: prometheus_client::registry::Registry,
    pub(crate) clock: SharedClock,
    /// Every entry, indexed for agent authorization; follows the datastore's revision log.
    pub(crate) index: EntryIndex,
    /// `spiffe://<td>/lanyard/server`: entries parented here are node aliases.
    pub(crate) node_alias_parent: lanyard_core::SpiffeId,
    /// The bundles agents receive on their sync streams; replaced when any changes.
    pub(crate) bundles: watch::Sender<PublishedBundles>,
    /// Tokens of ended tasks that have not expired yet, which every agent refuses; sent whole
    /// on every sync stream at its start and on every change.
    pub(crate) revocations: watch::Sender<Arc<Vec<lanyard_proto::node::RevokedToken>>>,
    /// Bans and evictions, which end the agent's open streams.
    pub(crate) agent_revoked: broadcast::Sender<AgentRevoked>,
    /// The x509pop node attestor, if the server trusts a CA for agent certificates.
    pub(crate) x509pop: Option<lanyard_attestation::X509PopVerifier>,
    /// Which refused attestations are recorded (a bounded rate per peer).
    pub(crate) refusals: limits::RefusalLimiter,
    /// The Cedar policies that decide task grants.
    pub(crate) policies: policy::Policies,
    /// The verifiable audit log: this server's checkpoint key and its view of the log.
    pub(crate) audit: audit::AuditLog,
    /// The OAuth authorization server, if configured.
    pub(crate) oauth: Option<oauth::OAuth>,
}

/// Runs the server until `shutdown` completes, then stops accepting requests, lets in-flight ones
/// finish, closes the datastore and removes the admin socket.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_with_clock(config, Arc::new(SystemClock), shutdown).await
}

/// [`run`] with an injected clock.
pub async fn run_with_clock(
    config: ServerConfig,
    clock: SharedClock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    create_private_dir(&config.data_dir)?;

    let mut store_config = StoreConfig::new(config.datastore_url());
    store_config.clock = clock.clone();
    let store = lanyard_store::open(store_config).await?;

    let authority = Authority::load(&config, store.clone(), clock.clone()).await?;
    let audit = audit::AuditLog::load(
        &config.data_dir,
        &config.trust_domain,
        authority.server_id(),
        &*store,
    )
    .await?;
    let policies =
        policy::Policies::load(config.policy_dir.clone(), config.identity_providers.clone())
            .map_err(|e| ServerError::Policy(e.to_string()))?;
    let node_alias_parent = node_listener::server_id(&config.trust_domain);
    let index = EntryIndex::load(&*store, node_alias_parent.clone()).await?;
    let node_tls = node_listener::NodeTls::new(&authority)?;
    let node_listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServerError::NodeBind {
            addr: config.bind,
            source,
        })?;
    let node_address = node_listener.local_addr().unwrap_or(config.bind);
    tracing::info!(addr = %node_address, "node API listening");
    let (metrics, registry) = Metrics::new();
    let admin_listener = socket::bind_private(&config.admin_socket)?;
    let health_listener = match config.health_bind {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::HealthBind { addr, source })?,
        ),
        None => None,
    };
    let health_address = health_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(addr) = health_address {
        tracing::info!(%addr, "health endpoint listening (/live, /ready, /metrics)");
    }

    let (oauth, oauth_listener) = match &config.oauth {
        Some(settings) => {
            let (oauth, listener) = oauth::bind(settings).await?;
            (Some(oauth), Some(listener))
        }
        None => (None, None),
    };

    let bundles = watch::Sender::new(published_bundles(&authority, &*store).await?);
    let revocations = watch::Sender::new(Arc::new(revoked_tokens(&*store, clock.now()).await?));
    let (agent_revoked, _) = broadcast::channel(256);
    let x509pop = match &config.x509pop_roots {
        Some(roots) => Some(
            lanyard_attestation::X509PopVerifier::new(
                lanyard_attestation::X509PopConfig::new(config.trust_domain.clone(), roots.clone()),
                clock.clone(),
            )
            .map_err(|e| ServerError::State(format!("x509pop: {e}")))?,
        ),
        None => None,
    };
    let refusals = limits::RefusalLimiter::new(clock.clone());
    let state = Arc::new(ServerState {
        config,
        store,
        authority,
        metrics,
        registry,
        clock,
        index,
        node_alias_parent,
        bundles,
        revocations,
        agent_revoked,
        x509pop,
        refusals,
        policies,
        audit,
        oauth,
    });
    state.refresh_gauges().await;
    tracing::info!(
        trust_domain = %state.config.trust_domain,
        admin_socket = %state.config.admin_socket.display(),
        datastore = ?state.store.backend(),
        "lanyard server started"
    );

    // The first beat before anything is signed, so that other servers count this one as live.
    let identity = heartbeat::Identity {
        node_address,
        health_address,
        started_at: state.clock.now(),
    };
    if let Err(e) = heartbeat::beat(&state, &identity).await {
        tracing::warn!(error = %e, "cannot record this server's heartbeat");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let rotation = tokio::spawn(authority::drive_rotation(state.clone(), stop_rx.clone()));
    let heartbeats = tokio::spawn(heartbeat::run(state.clone(), identity, stop_rx.clone()));
    let health = health_listener
        .map(|listener| tokio::spawn(http::serve(listener, state.clone(), stop_rx.clone())));
    let oauth_endpoint = oauth_listener
        .map(|listener| tokio::spawn(oauth::serve(listener, state.clone(), stop_rx.clone())));
    let followers = tokio::spawn(follow::run(state.clone(), stop_rx.clone()));
    let pruning = tokio::spawn(prune::run(state.clone(), stop_rx.clone()));
    let checkpoints = tokio::spawn(sign_checkpoints(state.clone(), stop_rx.clone()));
    let reloads = tokio::spawn(reload_on_hangup(state.clone(), stop_rx.clone()));
    let tls_upkeep = tokio::spawn(node_listener::maintain_tls(
        state.clone(),
        node_tls.clone(),
        stop_rx.clone(),
    ));
    let limits = state.config.node_api.clone();
    let connections = node_listener::accept(
        node_listener,
        &node_tls,
        state.config.trust_domain.clone(),
        limits.max_connections,
        stop_rx.clone(),
    )?;
    let mut node_stop = stop_rx.clone();
    let node_api = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .max_concurrent_streams(Some(limits.max_streams_per_connection))
            .layer(tower::util::MapRequestLayer::new(
                limits::cap_attestation_body(limits.max_attestation_bytes),
            ))
            .add_service(node::service(state.clone(), stop_rx.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(connections),
                async move {
                    let _ = node_stop.wait_for(|stop| *stop).await;
                },
            ),
    );

    let mut admin_stop = stop_rx.clone();
    let admin = tonic::transport::Server::builder()
        .add_service(admin::service(state.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(admin_listener), async move {
            let _ = admin_stop.wait_for(|stop| *stop).await;
        });
    tokio::pin!(admin);

    let result = tokio::select! {
        result = &mut admin => result.map_err(ServerError::from),
        () = shutdown => {
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
            admin.await.map_err(ServerError::from)
        }
    };
    let _ = stop_tx.send(true);
    let _ = rotation.await;
    let _ = heartbeats.await;
    let _ = followers.await;
    let _ = pruning.await;
    let _ = checkpoints.await;
    let _ = reloads.await;
    let _ = tls_upkeep.await;
    match node_api.await {
        Ok(Err(e)) => tracing::error!(error = %e, "node API failed"),
        Err(e) => tracing::error!(error = %e, "node API task failed"),
        Ok(Ok(())) => {}
    }
    if let Some(health) = health {
        let _ = health.await;
    }
    if let Some(oauth_endpoint) = oauth_endpoint {
        let _ = oauth_endpoint.await;
    }
    state.store.close().await;
    let _ = std::fs::remove_file(&state.config.admin_socket);
    tracing::info!("lanyard server stopped");
    result
}

/// Signs a checkpoint of the audit log whenever it has grown, every `checkpoint_interval`.
async fn sign_checkpoints(state: Arc<ServerState>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(state.config.audit_checkpoint_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if let Err(e) = state.audit.checkpoint(&*state.store).await {
            tracing::warn!(error = %e, "cannot sign an audit checkpoint; the next tick retries");
        }
    }
    // A last checkpoint, so that what was recorded before a clean stop is signed.
    if let Err(e) = state.audit.checkpoint(&*state.store).await {
        tracing::warn!(error = %e, "cannot sign the last audit checkpoint");
    }
}

/// Reloads the grant policies on SIGHUP.
async fn reload_on_hangup(state: Arc<ServerState>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload policies with `lanyard policy reload`");
            return;
        }
    };
    loop {
        tokio::select! {
            received = hangups.recv() => if received.is_none() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        // A refused set is logged and recorded; the old one keeps deciding.
        let _ = state.reload_policies("signal:SIGHUP").await;
    }
}

/// The bundles agents receive: the CA's and every federated one stored.
pub(crate) async fn published_bundles(
    authority: &Authority,
    store: &dyn DataStore,
) -> Result<PublishedBundles, lanyard_store::Error> {
    let own = authority.trust_bundle();
    let federated = store
        .list_bundles()
        .await?
        .into_iter()
        .filter(|b| &b.trust_domain != own.trust_domain())
        .map(|b| (b.trust_domain.to_string(), b.document))
        .collect();
    Ok(PublishedBundles {
        own: own.to_json(),
        federated,
    })
}

/// The revoked tokens agents must refuse, as the sync stream carries them: those a validator
/// would still accept at `now`, which allows `exp` plus [`lanyard_core::jwt::JWT_LEEWAY`] of
/// clock skew, so a token is listed until then.
pub(crate) async fn revoked_tokens(
    store: &dyn DataStore,
    now: std::time::SystemTime,
) -> Result<Vec<lanyard_proto::node::RevokedToken>, lanyard_store::Error> {
    let still_accepted_after = now
        .checked_sub(lanyard_core::jwt::JWT_LEEWAY)
        .unwrap_or(now);
    Ok(store
        .revoked_tokens(still_accepted_after)
        .await?
        .into_iter()
        .map(|(token_id, expires_at)| lanyard_proto::node::RevokedToken {
            token_id,
            expires_at: unix_seconds(expires_at),
        })
        .collect())
}

/// Creates the data directory 0700, or checks an existing one and narrows it to 0700: see
/// [`lanyard_fs::private_dir`] for what is refused.
fn create_private_dir(path: &std::path::Path) -> Result<(), ServerError> {
    lanyard_fs::private_dir(path)
        .map(drop)
        .map_err(|source| ServerError::UnsafeDataDir {
            path: path.to_owned(),
            source,
        })
}

// === impl ServerState ===

impl ServerState {
    /// Brings the entry index (and so every agent stream) up to date after a write.
    pub(crate) async fn entries_changed(&self) {
        if let Err(e) = self.index.catch_up(&*self.store).await {
            tracing::warn!(error = %e, "cannot read entry changes; the next check retries");
        }
        self.refresh_gauges().await;
    }

    /// Recomputes the bundles agents receive and pushes them if they changed.
    pub(crate) async fn bundles_changed(&self) {
        match published_bundles(&self.authority, &*self.store).await {
            Ok(published) => {
                self.bundles.send_if_modified(|current| {
                    let changed = *current != published;
                    *current = published;
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read bundles to publish"),
        }
    }

    /// Reads the revoked tokens again and pushes them to every agent stream if they changed.
    pub(crate) async fn revocations_changed(&self) {
        match revoked_tokens(&*self.store, self.clock.now()).await {
            Ok(revoked) => {
                self.revocations.send_if_modified(|current| {
                    let changed = **current != revoked;
                    if changed {
                        *current = Arc::new(revoked);
                    }
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read revoked tokens; the next change retries")
            }
        }
    }

    /// Appends a record to the audit log: `actor` did `kind` to `subject`. A failure is logged,
    /// not returned, because the action it records has already happened. (Task grants are
    /// recorded with the task, in its transaction, and fail when the record cannot be written.)
    pub(crate) async fn record_as(
        &self,
        kind: &str,
        actor: &str,
        subject: &str,
        details: serde_json::Value,
    ) {
        self.record_many(kind, actor, vec![(subject.to_owned(), details)])
            .await;
    }

    /// Records the same action on several subjects, each with its details, in one transaction.
    pub(crate) async fn record_many(
        &self,
        kind: &str,
        actor: &str,
        subjects: Vec<(String, serde_json::Value)>,
    ) {
        let now = self.clock.now();
        let drafts: Result<Vec<_>, _> = subjects
            .into_iter()
            .map(|(subject, details)| audit::draft(kind, actor, &subject, details, now))
            .collect();
        let result = match drafts {
            Ok(records) => self
                .store
                .append_audits(&records)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            tracing::error!(kind, %error, "cannot write audit records");
        }
    }

    /// Loads the grant policies again; records the outcome. `actor` is who asked.
    pub(crate) async fn reload_policies(
        &self,
        actor: &str,
    ) -> Result<policy::LoadedPolicies, policy::PolicyError> {
        match self.policies.reload() {
            Ok(loaded) => {
                tracing::info!(
                    policies = loaded.bundle.len(),
                    files = loaded.files.len(),
                    "grant policies reloaded"
                );
                self.record_as(
                    "policy.reloaded",
                    actor,
                    "policy",
                    serde_json::json!({
                        "files": loaded.files,
                        "policy_ids": loaded.bundle.policy_ids(),
                    }),
                )
                .await;
                Ok(loaded)
            }
            Err(e) => {
                tracing::error!(error = %e, "grant policies refused; the previous set keeps deciding");
                self.record_as(
                    "policy.refused",
                    actor,
                    "policy",
                    serde_json::json!({ "reason": e.to_string() }),
                )
                .await;
                Err(e)
            }
        }
    }

    /// An agent was evicted or banned: ends its streams here at once, and records it so that the
    /// other servers on the same datastore end theirs when they read the event log
    /// ([`node::follow_agent_events`]).
    pub(crate) async fn agent_removed(
        &self,
        actor: &str,
        spiffe_id: lanyard_core::SpiffeId,
        reason: node::AgentRevocation,
    ) {
        self.record_as(
            reason.event_kind(),
            actor,
            spiffe_id.as_ref(),
            serde_json::json!({ "agent": spiffe_id.to_string() }),
        )
        .await;
        let _ = self.agent_revoked.send(AgentRevoked {
            spiffe_id,
            reason,
            keep_serial: None,
        });
    }

    /// Updates the entry, agent and CA gauges from the index, the datastore and the CA.
    pub(crate) async fn refresh_gauges(&self) {
        // From the index, which has just caught up: a COUNT(*) over a million rows after every
        // write would cost more than the write.
        self.metrics
            .entries
            .set(i64::try_from(self.index.len()).unwrap_or(i64::MAX));
        if let Ok(n) = self.store.count_agents().await {
            self.metrics
                .agents
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(expiry) = self.authority.active_x509_expiry() {
            self.metrics.ca_expires_at.set(unix_seconds(expiry));
        }
    }
}

impl http::HealthSource for ServerState {
    async fn ready(&self) -> Result<(), String> {
        self.store
            .ping()
            .await
            .map_err(|e| format!("datastore: {e}"))?;
        self.authority
            .check_can_sign()
            .map_err(|e| format!("CA: {e}"))
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Seconds since the Unix epoch, saturating; times before it are 0.
pub(crate) fn unix_seconds(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`unix_seconds`] for positive values.
pub(crate) fn from_unix_seconds(secs: i64) -> Option<std::time::SystemTime> {
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
}
