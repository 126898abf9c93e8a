//! The node API (`lanyard.node.v1.Node`): node attestation, agent SVID renewal, the pushed entry
//! stream, and SVID minting for the entries an agent is authorized for.
//!
//! An agent may serve an entry when the entry's parent is the agent's own ID, or the ID of a
//! node-alias entry (an entry whose parent is `spiffe://<td>/lanyard/server`) whose selectors the
//! agent has. Every call but `AttestAgent` requires the agent's SVID as the TLS client
//! certificate, and the agent must be attested (not evicted) and not banned.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use lanyard_attestation::{
    AttestedNode, JoinToken, JoinTokenAttestationData, JoinTokenError, JoinTokenVerifier,
    X509PopAttestationData, X509PopPending, X509PopResponse,
};
use lanyard_ca::{JwtSvidRequest, X509SvidRequest};
use lanyard_core::{EntryId, RegistrationEntry, SpiffeId};
use lanyard_proto::node::{self as pb, node_server::NodeServer};
use lanyard_store::{AgentInfo, AttestedAgent, DataStore};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::admin::{ca_status, store_status};
use crate::convert::{invalid, parse_entry_id};
use crate::index::IndexUpdate;
use crate::node_listener::PeerInfo;
use crate::{ServerState, unix_seconds};

/// Entries per message of a full set.
const SYNC_CHUNK: usize = 1000;
/// Most CSRs in one BatchNewX509Svid call.
const MAX_SVID_BATCH: usize = 1000;
/// Largest node API message.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// The path prefix of agent IDs.
pub(crate) const AGENT_PATH_PREFIX: &str = "/lanyard/agent/";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Bundles as pushed to agents: this trust domain's and the federated ones, as SPIFFE JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PublishedBundles {
    pub(crate) own: String,
    pub(crate) federated: std::collections::BTreeMap<String, String>,
}

/// Join tokens are consumed in the datastore: one atomic statement, so a token works once.
struct StoreTokens<'a>(&'a dyn DataStore);

impl lanyard_attestation::TokenConsumer for StoreTokens<'_> {
    async fn consume(
        &self,
        token: &JoinToken,
    ) -> Result<lanyard_attestation::ConsumedToken, lanyard_attestation::ConsumeError> {
        use lanyard_attestation::ConsumeError;
        match self.0.consume_join_token(token.expose_secret()).await {
            Ok(grant) => Ok(lanyard_attestation::ConsumedToken {
                spiffe_id: grant.spiffe_id,
            }),
            Err(lanyard_store::Error::JoinTokenNotFound) => Err(ConsumeError::Unknown),
            Err(lanyard_store::Error::JoinTokenUsed) => Err(ConsumeError::AlreadyUsed),
            Err(lanyard_store::Error::JoinTokenExpired) => Err(ConsumeError::Expired),
            Err(e) => {
                tracing::error!(error = ?e, "cannot consume a join token");
                Err(ConsumeError::Store {
                    reason: "the datastore failed".to_owned(),
                })
            }
        }
    }
}

/// Something happened to an agent that must end its streams.
#[derive(Debug, Clone)]
pub(crate) struct AgentRevoked {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) reason: &'static str,
}

pub(crate) fn service(
    state: Arc<ServerState>,
    stop: watch::Receiver<bool>,
) -> NodeServer<NodeService> {
    NodeServer::new(NodeService { state, stop })
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

#[derive(Debug)]
pub(crate) struct NodeService {
    state: Arc<ServerState>,
    /// Turns true at shutdown; open sync streams end then, so shutdown is not held up.
    stop: watch::Receiver<bool>,
}

fn peer<T>(request: &Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

fn serial_of(leaf_der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(leaf_der)
        .map(|(_, cert)| cert.tbs_certificate.raw_serial_as_string())
        .unwrap_or_default()
}

pub(crate) fn entry_to_node_proto(entry: &RegistrationEntry) -> pb::Entry {
    let admin = crate::convert::entry_to_proto(entry);
    pb::Entry {
        id: admin.id,
        spiffe_id: admin.spiffe_id,
        parent_id: admin.parent_id,
        selectors: admin.selectors,
        x509_svid_ttl_seconds: admin.x509_svid_ttl_seconds,
        jwt_svid_ttl_seconds: admin.jwt_svid_ttl_seconds,
        dns_names: admin.dns_names,
        federates_with: admin.federates_with,
        admin: admin.admin,
        downstream: admin.downstream,
        hint: admin.hint,
        expires_at: admin.expires_at,
        revision: admin.revision,
    }
}

// === impl NodeService ===

impl NodeService {
    /// The attested, unbanned agent on the other end of this call.
    async fn caller(&self, peer: Option<&PeerInfo>) -> Result<AttestedAgent, Status> {
        let id = peer.and_then(|p| p.spiffe_id.clone()).ok_or_else(|| {
            Status::unauthenticated("this call needs mTLS with an agent SVID; attest first")
        })?;
        if !id.is_member_of(&self.state.config.trust_domain)
            || !id.path().starts_with(AGENT_PATH_PREFIX)
        {
            return Err(Status::permission_denied(format!(
                "{id} is not an agent of this trust domain"
            )));
        }
        let agent = self
            .state
            .store
            .get_agent(&id)
            .await
            .map_err(store_status)?;
        match agent {
            None => Err(Status::permission_denied(format!(
                "agent {id} is not attested (evicted?); attest again"
            ))),
            Some(agent) if agent.banned => {
                Err(Status::permission_denied(format!("agent {id} is banned")))
            }
            Some(agent) => Ok(agent),
        }
    }

    /// Records a refused attestation in the event log (which later feeds the audit log).
    async fn refuse(&self, attestor: &str, peer: Option<&PeerInfo>, status: Status) -> Status {
        let payload = serde_json::json!({
            "attestor": attestor,
            "peer": peer.and_then(|p| p.addr).map(|a| a.to_string()),
            "reason": status.message(),
        });
        if let Err(e) = self
            .state
            .store
            .append_event("agent.attestation_refused", &payload)
            .await
        {
            tracing::error!(error = %e, "cannot record a refused attestation");
        }
        tracing::warn!(
            attestor,
            reason = status.message(),
            "node attestation refused"
        );
        status
    }

    /// x509pop: verify the chain, send a fresh challenge, and admit the agent once it answers.
    /// The answer comes on the same stream, so the rest runs in a task feeding the response.
    async fn attest_x509pop(
        &self,
        params: pb::AttestationParams,
        mut inbound: Streaming<pb::AttestAgentRequest>,
        peer: Option<PeerInfo>,
    ) -> Result<Response<BoxStream<pb::AttestAgentResponse>>, Status> {
        let pending = match self.begin_x509pop(&params) {
            Ok(pending) => pending,
            Err(status) => return Err(self.refuse("x509pop", peer.as_ref(), status).await),
        };
        let (tx, rx) = mpsc::channel(2);
        let challenge = pb::AttestAgentResponse {
            step: Some(pb::attest_agent_response::Step::Challenge(
                pending.challenge().nonce.to_vec(),
            )),
        };
        // The channel is new and has room for two: this neither waits nor fails.
        let _ = tx.try_send(Ok(challenge));
        let service = Self {
            state: self.state.clone(),
            stop: self.stop.clone(),
        };
        tokio::spawn(async move {
            let result = async {
                let answer = inbound.message().await?.ok_or_else(|| {
                    invalid("challenge_response", "the stream ended before the answer")
                })?;
                let Some(pb::attest_agent_request::Step::ChallengeResponse(signature)) =
                    answer.step
                else {
                    return Err(invalid(
                        "challenge_response",
                        "the second message must answer the challenge",
                    ));
                };
                let response = X509PopResponse {
                    nonce: pending.challenge().nonce,
                    signature,
                };
                let node = pending
                    .finish(&response)
                    .map_err(|e| Status::permission_denied(e.to_string()))?;
                service.admit(node, &params.csr).await
            }
            .await;
            let message = match result {
                Ok(svid) => Ok(pb::AttestAgentResponse {
                    step: Some(pb::attest_agent_response::Step::Result(svid)),
                }),
                Err(status) => Err(service.refuse("x509pop", peer.as_ref(), status).await),
            };
            let _ = tx.send(message).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    fn begin_x509pop(&self, params: &pb::AttestationParams) -> Result<X509PopPending, Status> {
        let verifier = self.state.x509pop.as_ref().ok_or_else(|| {
            Status::unimplemented("the x509pop attestor is not enabled on this server")
        })?;
        let chain = lanyard_core::X509Authority::parse_concatenated_der(&params.payload)
            .map_err(|e| invalid("payload", format!("the x509pop certificate chain: {e}")))?
            .into_iter()
            .map(|c| c.der().to_vec())
            .collect();
        verifier
            .begin(&X509PopAttestationData { chain })
            .map_err(|e| Status::permission_denied(e.to_string()))
    }

    /// Mints the agent SVID and records the agent, after an attestor vouched for it.
    async fn admit(&self, node: AttestedNode, csr: &[u8]) -> Result<pb::AgentSvid, Status> {
        let AttestedNode {
            agent_id,
            selectors,
            attestor,
            ..
        } = node;
        let existing = self
            .state
            .store
            .get_agent(&agent_id)
            .await
            .map_err(store_status)?;
        if existing.as_ref().is_some_and(|a| a.banned) {
            return Err(Status::permission_denied(format!(
                "agent {agent_id} is banned"
            )));
        }
        let request =
            X509SvidRequest::new(agent_id.clone()).with_ttl(self.state.config.agent_svid_ttl);
        let svid = self
            .state
            .authority
            .ca
            .mint_x509_svid_from_csr(csr, &request)
            .map_err(ca_status)?;
        let info = AgentInfo {
            spiffe_id: agent_id.clone(),
            attestation_type: attestor.to_owned(),
            serial: serial_of(svid.leaf_der()),
            expires_at: svid.not_after,
            selectors: selectors.clone(),
        };
        let stored = match existing {
            Some(_) => self.state.store.update_agent(&info).await,
            None => self.state.store.create_agent(&info).await,
        };
        stored.map_err(store_status)?;
        let payload = serde_json::json!({ "agent": agent_id.to_string(), "attestor": attestor });
        if let Err(e) = self
            .state
            .store
            .append_event("agent.attested", &payload)
            .await
        {
            tracing::error!(error = %e, "cannot record an attestation");
        }
        self.state.refresh_gauges().await;
        tracing::info!(agent = %agent_id, attestor, "agent attested");
        Ok(pb::AgentSvid {
            spiffe_id: agent_id.to_string(),
            cert_chain: svid.cert_chain,
            expires_at: unix_seconds(svid.not_after),
            bundle_json: self.state.authority.trust_bundle().to_json(),
            selectors: selectors.iter().map(ToString::to_string).collect(),
        })
    }

    async fn attest_join_token(
        &self,
        params: &pb::AttestationParams,
    ) -> Result<AttestedNode, Status> {
        let token = String::from_utf8(params.payload.clone())
            .map_err(|_| invalid("payload", "a join token is text"))?;
        let data = JoinTokenAttestationData { token };
        JoinTokenVerifier::new(self.state.config.trust_domain.clone())
            .verify(&data, &StoreTokens(&*self.state.store))
            .await
            .map_err(|e| match e {
                JoinTokenError::Empty
                | JoinTokenError::TooLong { .. }
                | JoinTokenError::BadChar => invalid("payload", e),
                JoinTokenError::Store { .. } => Status::unavailable(e.to_string()),
                _ => Status::permission_denied(e.to_string()),
            })
    }

    fn authorized_parents(&self, agent: &AttestedAgent) -> BTreeSet<SpiffeId> {
        self.state
            .index
            .parents_of(&agent.spiffe_id, &agent.selectors)
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    type AttestAgentStream = BoxStream<pb::AttestAgentResponse>;
    type SyncEntriesStream = BoxStream<pb::SyncEntriesResponse>;

    async fn attest_agent(
        &self,
        request: Request<Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<Self::AttestAgentStream>, Status> {
        let peer = peer(&request).cloned();
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            invalid(
                "params",
                "the stream ended before the attestation parameters",
            )
        })?;
        let Some(pb::attest_agent_request::Step::Params(params)) = first.step else {
            return Err(invalid(
                "params",
                "the first message must carry the attestation parameters",
            ));
        };
        if params.csr.is_empty() {
            return Err(invalid("csr", "a CSR for the agent SVID is required"));
        }
        match params.attestor.as_str() {
            "join_token" => {
                let result = match self.attest_join_token(&params).await {
                    Ok(node) => self.admit(node, &params.csr).await,
                    Err(status) => Err(status),
                };
                let svid = match result {
                    Ok(svid) => svid,
                    Err(status) => {
                        return Err(self.refuse(&params.attestor, peer.as_ref(), status).await);
                    }
                };
                let response = pb::AttestAgentResponse {
                    step: Some(pb::attest_agent_response::Step::Result(svid)),
                };
                Ok(Response::new(Box::pin(tokio_stream::once(Ok(response)))))
            }
            "x509pop" => self.attest_x509pop(params, inbound, peer).await,
            other => {
                let status = invalid(
                    "attestor",
                    format!("`{other}` is not known; use join_token or x509pop"),
                );
                Err(self.refuse(other, peer.as_ref(), status).await)
            }
        }
    }

    async fn renew_agent(
        &self,
        request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let csr = &request.get_ref().csr;
        let svid_request = X509SvidRequest::new(agent.spiffe_id.clone())
            .with_ttl(self.state.config.agent_svid_ttl);
        let svid = self
            .state
            .authority
            .ca
            .mint_x509_svid_from_csr(csr, &svid_request)
            .map_err(ca_status)?;
        let info = AgentInfo {
            spiffe_id: agent.spiffe_id.clone(),
            attestation_type: agent.attestation_type.clone(),
            serial: serial_of(svid.leaf_der()),
            expires_at: svid.not_after,
            selectors: agent.selectors.clone(),
        };
        self.state
            .store
            .update_agent(&info)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::RenewAgentResponse {
            svid: Some(pb::AgentSvid {
                spiffe_id: agent.spiffe_id.to_string(),
                cert_chain: svid.cert_chain,
                expires_at: unix_seconds(svid.not_after),
                bundle_json: self.state.authority.trust_bundle().to_json(),
                selectors: agent.selectors.iter().map(ToString::to_string).collect(),
            }),
        }))
    }

    async fn sync_entries(
        &self,
        request: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let since = request.get_ref().since_revision;
        let (tx, rx) = mpsc::channel(16);
        let stream = EntryStream {
            state: self.state.clone(),
            agent,
            tx,
            sent_revision: std::sync::atomic::AtomicU64::new(since),
        };
        tokio::spawn(stream.run(since, self.stop.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn batch_new_x509_svid(
        &self,
        request: Request<pb::BatchNewX509SvidRequest>,
    ) -> Result<Response<pb::BatchNewX509SvidResponse>, Status> {
        let agent = self.caller(peer(&request)).await?;
        if request.get_ref().params.len() > MAX_SVID_BATCH {
            return Err(invalid(
                "params",
                format!(
                    "at most {MAX_SVID_BATCH} per call, got {}",
                    request.get_ref().params.len()
                ),
            ));
        }
        let parents = self.authorized_parents(&agent);
        let params = request.into_inner().params;
        // Signing is CPU work (a CSR verification and a signature, ~75 µs each): done off the
        // async workers, so a large batch never delays the pushes and calls of other agents.
        let state = self.state.clone();
        let results = tokio::task::spawn_blocking(move || mint_batch(&state, &parents, &params))
            .await
            .map_err(|e| Status::internal(format!("the signing task failed: {e}")))?;
        Ok(Response::new(pb::BatchNewX509SvidResponse { results }))
    }

    async fn new_jwt_svid(
        &self,
        request: Request<pb::NewJwtSvidRequest>,
    ) -> Result<Response<pb::NewJwtSvidResponse>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let request = request.into_inner();
        if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
            return Err(invalid(
                "audience",
                "at least one non-empty audience is required",
            ));
        }
        let entry = authorized_entry(
            &self.state,
            &self.authorized_parents(&agent),
            &request.entry_id,
        )?;
        let svid_request = JwtSvidRequest::new(entry.spiffe_id().clone(), request.audience)
            .with_ttl(entry.jwt_svid_ttl());
        let svid = self
            .state
            .authority
            .ca
            .mint_jwt_svid(&svid_request)
            .map_err(ca_status)?;
        self.state.metrics.signed("jwt");
        Ok(Response::new(pb::NewJwtSvidResponse {
            token: svid.token,
            issued_at: unix_seconds(svid.issued_at),
            expires_at: unix_seconds(svid.expires_at),
        }))
    }
}

/// The entry `id` if an agent whose authorized parents are `parents` may serve it now.
fn authorized_entry(
    state: &ServerState,
    parents: &BTreeSet<SpiffeId>,
    id: &str,
) -> Result<RegistrationEntry, Status> {
    let id = parse_entry_id(id)?;
    match state.index.get(&id) {
        // Defence in depth: the index leaves out entries with a reserved ID (`…/lanyard/server`,
        // an agent's); should one reach it anyway, it is still never minted.
        Some(entry)
            if parents.contains(entry.parent_id())
                && !entry.is_expired(state.clock.now())
                && !entry.spiffe_id().is_reserved_for_lanyard() =>
        {
            Ok(entry)
        }
        // Unknown and unauthorized look the same, so an agent learns nothing of others' entries.
        _ => Err(Status::permission_denied(format!(
            "entry `{id}` is not one this agent may serve"
        ))),
    }
}

/// Mints one X509-SVID per (entry, CSR), each with its own result. Blocking: run it off the
/// async workers.
fn mint_batch(
    state: &ServerState,
    parents: &BTreeSet<SpiffeId>,
    params: &[pb::X509SvidParams],
) -> Vec<pb::X509SvidResult> {
    params
        .iter()
        .map(|param| {
            let minted = authorized_entry(state, parents, &param.entry_id).and_then(|entry| {
                let svid_request = X509SvidRequest {
                    spiffe_id: entry.spiffe_id().clone(),
                    dns_names: entry.dns_names().to_vec(),
                    ttl: Some(entry.x509_svid_ttl()),
                };
                state
                    .authority
                    .ca
                    .mint_x509_svid_from_csr(&param.csr, &svid_request)
                    .map_err(ca_status)
            });
            match minted {
                Ok(svid) => {
                    state.metrics.signed("x509");
                    pb::X509SvidResult {
                        entry_id: param.entry_id.clone(),
                        code: 0,
                        message: String::new(),
                        expires_at: unix_seconds(svid.not_after),
                        cert_chain: svid.cert_chain,
                    }
                }
                Err(status) => pb::X509SvidResult {
                    entry_id: param.entry_id.clone(),
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                    cert_chain: Vec::new(),
                    expires_at: 0,
                },
            }
        })
        .collect()
}

/// One agent's entry stream.
struct EntryStream {
    state: Arc<ServerState>,
    agent: AttestedAgent,
    tx: mpsc::Sender<Result<pb::SyncEntriesResponse, Status>>,
    /// The revision of the last entry update sent. Bundle-only messages repeat it: the index
    /// may already be further on, with changes this stream has not sent yet, and an agent that
    /// resumed from that later revision would miss them.
    sent_revision: std::sync::atomic::AtomicU64,
}

/// Why a sync stream stopped early.
enum Ended {
    /// The agent hung up, or the server is stopping.
    Closed,
}

impl EntryStream {
    async fn run(self, since: u64, mut stop: watch::Receiver<bool>) {
        // Subscribe before reading, so nothing committed in between is missed.
        let mut updates = self.state.index.subscribe();
        let mut bundles = self.state.bundles.subscribe();
        let mut revoked = self.state.agent_revoked.subscribe();
        let mut parents = self
            .state
            .index
            .parents_of(&self.agent.spiffe_id, &self.agent.selectors);
        let published = bundles.borrow_and_update().clone();
        let mut sent = match self.initial(since, &parents, &published).await {
            Ok(sent) => sent,
            Err(Ended::Closed) => return,
        };
        loop {
            let outcome = tokio::select! {
                update = updates.recv() => match update {
                    Ok(update) => self.apply(&update, &mut parents, &mut sent).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind: start again from a full set.
                        parents = self.state.index.parents_of(&self.agent.spiffe_id, &self.agent.selectors);
                        self.full(&parents, None).await.map(|s| sent = s)
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(Ended::Closed),
                },
                changed = bundles.changed() => match changed {
                    Ok(()) => {
                        let published = bundles.borrow_and_update().clone();
                        self.send(pb::SyncEntriesResponse {
                            bundle_json: published.own.clone(),
                            federated_bundles: published.federated.clone().into_iter().collect(),
                            revision: self.sent_revision.load(std::sync::atomic::Ordering::Relaxed),
                            ..Default::default()
                        }).await
                    }
                    Err(_) => Err(Ended::Closed),
                },
                event = revoked.recv() => match event {
                    Ok(event) if event.spiffe_id == self.agent.spiffe_id => {
                        let status = Status::permission_denied(format!("agent {} was {}", event.spiffe_id, event.reason));
                        let _ = self.tx.send(Err(status)).await;
                        Err(Ended::Closed)
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err(Ended::Closed),
                },
                () = self.tx.closed() => Err(Ended::Closed),
                () = async { let _ = stop.wait_for(|s| *s).await; } => Err(Ended::Closed),
            };
            if outcome.is_err() {
                return;
            }
        }
    }

    async fn send(&self, message: pb::SyncEntriesResponse) -> Result<(), Ended> {
        self.tx.send(Ok(message)).await.map_err(|_| Ended::Closed)
    }

    /// The first answer: what changed since `since` if the store still has it and no node alias
    /// changed, otherwise the full set. Returns the ids the agent now holds.
    async fn initial(
        &self,
        since: u64,
        parents: &BTreeSet<SpiffeId>,
        bundles: &PublishedBundles,
    ) -> Result<HashMap<EntryId, u64>, Ended> {
        let resumable = since > 0 && since <= self.state.index.revision();
        if resumable && let Ok(changes) = self.state.store.entry_changes_since(since, 0).await {
            // A node alias that changed (or a deletion, which might have been one) can change
            // what this agent may serve beyond the listed ids: resync in full then.
            let alias_may_have_changed = changes.changes.iter().any(|c| match c {
                lanyard_store::EntryChange::Put(e) => {
                    e.parent_id() == &self.state.node_alias_parent
                }
                lanyard_store::EntryChange::Delete { .. } => true,
            });
            if !alias_may_have_changed {
                let (entries, _) = self.state.index.entries_under(parents);
                let held = entries
                    .iter()
                    .map(|e| (e.id().clone(), e.revision()))
                    .collect();
                let ids: Vec<EntryId> = changes
                    .changes
                    .iter()
                    .map(|c| c.entry_id().clone())
                    .collect();
                let (puts, removed) = self.classify(&ids, parents);
                let revision = changes.current_revision.max(since);
                self.send_chunked(false, puts, removed, revision, Some(bundles))
                    .await?;
                return Ok(held);
            }
        }
        self.full(parents, Some(bundles)).await
    }

    /// Sends the whole authorized set, in chunks.
    async fn full(
        &self,
        parents: &BTreeSet<SpiffeId>,
        bundles: Option<&PublishedBundles>,
    ) -> Result<HashMap<EntryId, u64>, Ended> {
        let (entries, revision) = self.state.index.entries_under(parents);
        let sent = entries
            .iter()
            .map(|e| (e.id().clone(), e.revision()))
            .collect();
        self.send_chunked(true, entries, Vec::new(), revision, bundles)
            .await?;
        Ok(sent)
    }

    /// Splits the changed ids into entries this agent may serve and ids it must drop.
    fn classify(
        &self,
        ids: &[EntryId],
        parents: &BTreeSet<SpiffeId>,
    ) -> (Vec<RegistrationEntry>, Vec<EntryId>) {
        let mut puts = Vec::new();
        let mut removed = Vec::new();
        for id in ids {
            match self.state.index.get(id) {
                Some(entry) if parents.contains(entry.parent_id()) => puts.push(entry),
                _ => removed.push(id.clone()),
            }
        }
        (puts, removed)
    }

    async fn apply(
        &self,
        update: &IndexUpdate,
        parents: &mut BTreeSet<SpiffeId>,
        sent: &mut HashMap<EntryId, u64>,
    ) -> Result<(), Ended> {
        if update.aliases_changed {
            let now = self
                .state
                .index
                .parents_of(&self.agent.spiffe_id, &self.agent.selectors);
            if &now != parents {
                *parents = now;
                *sent = self.full(parents, None).await?;
                return Ok(());
            }
        }
        // Only the entries under this agent's parents, as the index grouped them.
        let puts: Vec<RegistrationEntry> = parents
            .iter()
            .filter_map(|p| update.puts_by_parent.get(p))
            .flatten()
            .cloned()
            .collect();
        let kept: std::collections::HashSet<&EntryId> =
            puts.iter().map(RegistrationEntry::id).collect();
        // Everything else that changed and that the agent holds was deleted or moved away.
        let removed: Vec<EntryId> = update
            .changed
            .iter()
            .filter(|id| !kept.contains(id) && sent.contains_key(*id))
            .cloned()
            .collect();
        for id in &removed {
            sent.remove(id);
        }
        for entry in &puts {
            sent.insert(entry.id().clone(), entry.revision());
        }
        if puts.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.send_chunked(false, puts, removed, update.revision, None)
            .await
    }

    async fn send_chunked(
        &self,
        full_sync: bool,
        entries: Vec<RegistrationEntry>,
        removed: Vec<EntryId>,
        revision: u64,
        bundles: Option<&PublishedBundles>,
    ) -> Result<(), Ended> {
        let mut chunks: Vec<&[RegistrationEntry]> = entries.chunks(SYNC_CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut message = pb::SyncEntriesResponse {
                full_sync: full_sync && i == 0,
                entries: chunk.iter().map(entry_to_node_proto).collect(),
                more: i != last,
                revision: if i == last { revision } else { 0 },
                ..Default::default()
            };
            if i == last {
                message.removed_entry_ids = removed.iter().map(ToString::to_string).collect();
                if let Some(bundles) = bundles {
                    message.bundle_json = bundles.own.clone();
                    message.federated_bundles = bundles.federated.clone().into_iter().collect();
                }
            }
            self.send(message).await?;
            if i == last {
                self.sent_revision
                    .store(revision, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
