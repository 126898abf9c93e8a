//! The node API (`lanyard.node.v1.Node`): node attestation, agent SVID renewal, the pushed entry
//! stream, and SVID minting for the entries an agent is authorized for.
//!
//! An agent may serve an entry when the entry's parent is the agent's own ID, or the ID of a
//! node-alias entry (an entry whose parent is `spiffe://<td>/lanyard/server`) whose selectors the
//! agent has. Every call but `AttestAgent` requires the agent's SVID as the TLS client
//! certificate, and the agent must be attested (not evicted) and not banned.

use std::collections::{BTreeSet, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use lanyard_attestation::{
    AttestedNode, JoinToken, JoinTokenAttestationData, JoinTokenError, JoinTokenVerifier,
    X509PopAttestationData, X509PopPending, X509PopResponse,
};
use lanyard_ca::{JwtSvidRequest, VerifiedCsr, X509SvidRequest};
use lanyard_core::{EntryId, RegistrationEntry, SpiffeId};
use lanyard_proto::node::{self as pb, node_server::NodeServer};
use lanyard_store::{AgentInfo, AgentRenewal, AttestedAgent, DataStore};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::admin::{ca_status, store_status};
use crate::convert::{invalid, parse_entry_id};
use crate::index::{AliasGrants, Delivery, IndexUpdate, IndexedEntry, Subscription};
use crate::limits::{Admit, MAX_LOGGED_TEXT, MAX_X509POP_CHAIN, clip, count_der_elements};
use crate::node_listener::{PeerInfo, serial_of};
use crate::{ServerState, unix_seconds};

/// Most entries per message of an entry update.
const SYNC_CHUNK: usize = 1000;
/// Entries are added to a message while it stays under this size (a message holds at least one
/// entry). An open stream keeps an encode buffer as large as its largest message (see
/// `lanyard_proto::codec`), so small messages keep 10,000 open streams' buffers at 4 KiB each.
const SYNC_CHUNK_BYTES: usize = 3 * 1024;
/// The bundles ride in the last chunk of a stream's first update if the message stays under this
/// (the 4 KiB encode buffer less tonic's 5-byte frame header and room for the other fields);
/// otherwise they follow in a message of their own.
const SYNC_MESSAGE_BYTES: usize = 4 * 1024 - 64;
/// Most CSRs in one BatchNewX509Svid call.
const MAX_SVID_BATCH: usize = 1000;
/// Largest node API message.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

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

/// Something happened to an agent that must end its open streams.
#[derive(Debug, Clone)]
pub(crate) struct AgentRevoked {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) reason: AgentRevocation,
    /// Streams opened with the SVID of this serial stay open: the agent's current one.
    pub(crate) keep_serial: Option<String>,
}

/// Why an agent's streams end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentRevocation {
    Evicted,
    Banned,
    /// The node attested again: every SVID from before is dead.
    Reattested,
    /// The agent presented its renewed SVID: streams on the old one end, and the agent
    /// reconnects with the new one (not a rejection: it need not attest again).
    Renewed,
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

/// An indexed entry as the node API sends it.
pub(crate) fn indexed_to_node_proto(entry: &IndexedEntry) -> pb::Entry {
    use crate::convert::seconds;
    pb::Entry {
        id: entry.id().to_string(),
        spiffe_id: entry.spiffe_id().to_owned(),
        parent_id: entry.parent_id().to_owned(),
        selectors: entry.selectors().map(str::to_owned).collect(),
        x509_svid_ttl_seconds: seconds(entry.x509_svid_ttl()),
        jwt_svid_ttl_seconds: seconds(entry.jwt_svid_ttl()),
        dns_names: entry.dns_names().iter().map(ToString::to_string).collect(),
        federates_with: entry
            .federates_with()
            .iter()
            .map(ToString::to_string)
            .collect(),
        admin: entry.admin(),
        downstream: entry.downstream(),
        hint: entry.hint().to_owned(),
        expires_at: entry.expires_at().map_or(0, unix_seconds),
        revision: entry.revision(),
    }
}

/// Splits entries into messages of at most [`SYNC_CHUNK`] entries and, past the first entry of
/// each, [`SYNC_CHUNK_BYTES`]; always at least one (possibly empty) message.
fn chunk_entries(entries: Vec<pb::Entry>) -> Vec<Vec<pb::Entry>> {
    use prost::Message as _;
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for entry in entries {
        // The entry's bytes within the message: its own, a tag and a length prefix.
        let size = entry.encoded_len() + 4;
        let current = chunks
            .last_mut()
            .filter(|c| c.is_empty() || (c.len() < SYNC_CHUNK && bytes + size <= SYNC_CHUNK_BYTES));
        match current {
            Some(chunk) => chunk.push(entry),
            None => {
                bytes = 0;
                chunks.push(vec![entry]);
            }
        }
        bytes += size;
    }
    chunks
}

/// The bytes `chunk`'s entries take in a message.
fn chunk_bytes(chunk: &[pb::Entry]) -> usize {
    use prost::Message as _;
    chunk.iter().map(|e| e.encoded_len() + 4).sum()
}

/// About the bytes the bundles take in a message: their JSON, and a little per federated one.
fn bundles_bytes(bundles: &PublishedBundles) -> usize {
    bundles.own.len()
        + bundles
            .federated
            .iter()
            .map(|(domain, json)| domain.len() + json.len() + 16)
            .sum::<usize>()
}

/// Whether an agent whose authorized parents are `parents` serves entries under `parent`.
fn serves(parents: &BTreeSet<SpiffeId>, parent: &str) -> bool {
    parents.iter().any(|p| p.as_str() == parent)
}

// === impl AgentRevocation ===

impl AgentRevocation {
    /// The event-log kind that records it, which other servers sharing the datastore read back
    /// ([`follow_agent_events`]). Renewals are not recorded.
    pub(crate) fn event_kind(self) -> &'static str {
        match self {
            Self::Evicted => "agent.evicted",
            Self::Banned => "agent.banned",
            Self::Reattested => "agent.attested",
            Self::Renewed => "agent.renewed",
        }
    }

    fn from_event_kind(kind: &str) -> Option<Self> {
        [Self::Evicted, Self::Banned, Self::Reattested]
            .into_iter()
            .find(|r| r.event_kind() == kind)
    }
}

// === impl AgentRevoked ===

impl AgentRevoked {
    /// Whether this ends a stream opened by `agent` (as the caller check saw it).
    fn ends(&self, agent: &AttestedAgent) -> bool {
        self.spiffe_id == agent.spiffe_id && self.keep_serial.as_ref() != Some(&agent.serial)
    }

    /// What the stream's agent is told.
    fn status(&self) -> Status {
        let id = &self.spiffe_id;
        match self.reason {
            AgentRevocation::Evicted => {
                Status::permission_denied(format!("agent {id} was evicted; attest again"))
            }
            AgentRevocation::Banned => Status::permission_denied(format!("agent {id} was banned")),
            AgentRevocation::Reattested => Status::permission_denied(format!(
                "agent {id} attested again; this stream's SVID is no longer valid"
            )),
            AgentRevocation::Renewed => Status::unavailable(format!(
                "agent {id} uses a renewed SVID now; reconnect with it"
            )),
        }
    }
}

// === impl NodeService ===

impl NodeService {
    /// The attested, unbanned agent on the other end of this call, presenting the SVID its record
    /// names: the current one, or a renewed one it now starts using (which retires the old).
    /// Any other SVID with an agent's ID — from before a renewal, an eviction or a new
    /// attestation, or never issued to an agent — is refused.
    async fn caller(&self, peer: Option<&PeerInfo>) -> Result<AttestedAgent, Status> {
        let (id, serial) = peer
            .and_then(|p| Some((p.spiffe_id.clone()?, p.serial.clone()?)))
            .ok_or_else(|| {
                Status::unauthenticated("this call needs mTLS with an agent SVID; attest first")
            })?;
        if !id.is_member_of(&self.state.config.trust_domain)
            || !lanyard_attestation::node::is_agent_id(&id)
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
            Some(agent) if agent.serial == serial => Ok(agent),
            Some(agent) if agent.new_serial.as_deref() == Some(serial.as_str()) => {
                self.promote(agent, serial).await
            }
            Some(_) => Err(Status::permission_denied(format!(
                "this SVID of agent {id} is not its current one (renewed, or the node attested \
                 again since); use the current SVID or attest again"
            ))),
        }
    }

    /// The agent presents its renewed SVID for the first time: make it current, and end the
    /// streams still open on the old one.
    async fn promote(&self, agent: AttestedAgent, serial: String) -> Result<AttestedAgent, Status> {
        let store = &self.state.store;
        if !store
            .promote_agent_serial(&agent.spiffe_id, &serial)
            .await
            .map_err(store_status)?
        {
            // Another call promoted it first, or the record moved on: decide on what is stored.
            return match store
                .get_agent(&agent.spiffe_id)
                .await
                .map_err(store_status)?
            {
                Some(now) if !now.banned && now.serial == serial => Ok(now),
                _ => Err(Status::permission_denied(format!(
                    "this SVID of agent {} is not its current one; attest again",
                    agent.spiffe_id
                ))),
            };
        }
        let _ = self.state.agent_revoked.send(AgentRevoked {
            spiffe_id: agent.spiffe_id.clone(),
            reason: AgentRevocation::Renewed,
            keep_serial: Some(serial.clone()),
        });
        Ok(AttestedAgent {
            serial,
            new_serial: None,
            ..agent
        })
    }

    /// Records a refused attestation in the event log, at a bounded rate per peer, with every
    /// caller-chosen string clipped; returns the status to answer with (clipped too).
    async fn refuse(&self, attestor: &str, peer: Option<&PeerInfo>, status: Status) -> Status {
        let attestor = clip(attestor, MAX_LOGGED_TEXT);
        let reason = clip(status.message(), MAX_LOGGED_TEXT);
        let addr = peer.and_then(|p| p.addr);
        if let Admit::Record { suppressed } = self.state.refusals.admit(addr.map(|a| a.ip())) {
            let payload = serde_json::json!({
                "attestor": attestor,
                "peer": addr.map(|a| a.to_string()),
                "reason": reason,
                "suppressed_before": suppressed,
            });
            let actor = addr.map_or_else(|| "peer:unknown".to_owned(), |a| format!("peer:{a}"));
            self.state
                .record_as("agent.attestation_refused", &actor, &attestor, payload)
                .await;
            tracing::warn!(
                attestor,
                reason,
                peer = ?addr,
                suppressed_before = suppressed,
                "node attestation refused"
            );
        }
        Status::new(status.code(), reason)
    }

    /// x509pop: verify the chain, send a fresh challenge, and admit the agent once it answers.
    /// The answer comes on the same stream, so the rest runs in a task feeding the response.
    async fn attest_x509pop(
        &self,
        params: pb::AttestationParams,
        csr: VerifiedCsr,
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
                let answer = service
                    .next_step(&mut inbound, "challenge_response")
                    .await?
                    .ok_or_else(|| {
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
                service.admit(node, &csr).await
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

    /// The attestation parameters: the first message, within the step timeout.
    async fn first_params(
        &self,
        inbound: &mut Streaming<pb::AttestAgentRequest>,
    ) -> Result<pb::AttestationParams, Status> {
        let first = self.next_step(inbound, "params").await?.ok_or_else(|| {
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
        Ok(params)
    }

    /// The next message of an attestation, within the step timeout; a call over its byte limit
    /// is refused as such.
    async fn next_step(
        &self,
        inbound: &mut Streaming<pb::AttestAgentRequest>,
        what: &str,
    ) -> Result<Option<pb::AttestAgentRequest>, Status> {
        let limits = &self.state.config.node_api;
        match tokio::time::timeout(limits.attestation_timeout, inbound.message()).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(status)) if is_length_limit(&status) => {
                Err(Status::resource_exhausted(format!(
                    "an attestation may send at most {} bytes in all",
                    limits.max_attestation_bytes
                )))
            }
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no {what} within {:?}",
                limits.attestation_timeout
            ))),
        }
    }

    fn begin_x509pop(&self, params: &pb::AttestationParams) -> Result<X509PopPending, Status> {
        let verifier = self.state.x509pop.as_ref().ok_or_else(|| {
            Status::unimplemented("the x509pop attestor is not enabled on this server")
        })?;
        // Counted from the DER headers before anything is parsed.
        count_der_elements(&params.payload, MAX_X509POP_CHAIN)
            .map_err(|e| invalid("payload", format!("the x509pop certificate chain: {e}")))?;
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
    async fn admit(&self, node: AttestedNode, csr: &VerifiedCsr) -> Result<pb::AgentSvid, Status> {
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
            .mint_x509_svid_for_csr(csr, &request)
            .map_err(ca_status)?;
        let info = AgentInfo {
            spiffe_id: agent_id.clone(),
            attestation_type: attestor.to_owned(),
            serial: serial_of(svid.leaf_der()),
            expires_at: svid.not_after,
            selectors: selectors.clone(),
        };
        let reattested = existing.is_some();
        let stored = match existing {
            Some(_) => self.state.store.update_agent(&info).await,
            None => self.state.store.create_agent(&info).await,
        };
        stored.map_err(store_status)?;
        if reattested {
            let _ = self.state.agent_revoked.send(AgentRevoked {
                spiffe_id: agent_id.clone(),
                reason: AgentRevocation::Reattested,
                keep_serial: Some(info.serial.clone()),
            });
        }
        self.state
            .record_as(
                AgentRevocation::Reattested.event_kind(),
                agent_id.as_ref(),
                agent_id.as_ref(),
                serde_json::json!({
                    "agent": agent_id.to_string(),
                    "attestor": attestor,
                    "serial": info.serial,
                    "selectors": selectors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            )
            .await;
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

    /// Records the X509-SVIDs issued to an agent in one call: one transaction, one record per 100
    /// SVIDs (so that each record stays small).
    async fn record_x509_issued(&self, agent: &AttestedAgent, results: &[pb::X509SvidResult]) {
        let issued: Vec<serde_json::Value> = results
            .iter()
            .filter(|r| r.code == 0)
            .map(|r| {
                serde_json::json!({
                    "entry_id": r.entry_id,
                    "serial": r.cert_chain.first().map(|leaf| serial_of(leaf)),
                    "expires_at": r.expires_at,
                })
            })
            .collect();
        let actor = agent.spiffe_id.to_string();
        let records = issued
            .chunks(SVIDS_PER_RECORD)
            .map(|chunk| (actor.clone(), serde_json::json!({ "svids": chunk })))
            .collect();
        self.state
            .record_many("svid.x509.issued", &actor, records)
            .await;
    }

    /// The entry ids an agent named for one of its callers, each one it is authorized for, and
    /// the SPIFFE IDs they give.
    fn caller_identities(
        &self,
        agent: &AttestedAgent,
        entry_ids: &[String],
    ) -> Result<Vec<SpiffeId>, Status> {
        if entry_ids.is_empty() || entry_ids.len() > MAX_SVID_BATCH {
            return Err(invalid(
                "entry_ids",
                format!("name 1 to {MAX_SVID_BATCH} entries"),
            ));
        }
        let parents = self.authorized_parents(agent);
        entry_ids
            .iter()
            .map(|id| authorized_entry(&self.state, &parents, id).map(|e| e.spiffe_id().clone()))
            .collect()
    }

    fn authorized_parents(&self, agent: &AttestedAgent) -> BTreeSet<SpiffeId> {
        self.state
            .index
            .parents_of(&agent.spiffe_id, &agent.selectors, self.state.clock.now())
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
        let params = match self.first_params(&mut inbound).await {
            Ok(params) => params,
            Err(status) => return Err(self.refuse("", peer.as_ref(), status).await),
        };
        // The CSR is checked before anything is spent on the request: a join token is single-use.
        let csr = match VerifiedCsr::from_der(&params.csr) {
            Ok(csr) => csr,
            Err(e) => {
                let status = invalid("csr", format!("the CSR for the agent SVID: {e}"));
                return Err(self.refuse(&params.attestor, peer.as_ref(), status).await);
            }
        };
        match params.attestor.as_str() {
            "join_token" => {
                let result = match self.attest_join_token(&params).await {
                    Ok(node) => self.admit(node, &csr).await,
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
            "x509pop" => self.attest_x509pop(params, csr, inbound, peer).await,
            other => {
                let status = invalid(
                    "attestor",
                    format!(
                        "`{}` is not known; use join_token or x509pop",
                        clip(other, MAX_LOGGED_TEXT)
                    ),
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
        let renewal = AgentRenewal {
            spiffe_id: agent.spiffe_id.clone(),
            presented_serial: agent.serial.clone(),
            new_serial: serial_of(svid.leaf_der()),
            expires_at: svid.not_after,
        };
        match self.state.store.renew_agent(&renewal).await {
            Ok(_) => {}
            // Re-attested, evicted or banned since the caller check.
            Err(lanyard_store::Error::Conflict { .. } | lanyard_store::Error::NotFound { .. }) => {
                return Err(Status::permission_denied(format!(
                    "agent {} changed while renewing (attested again, evicted or banned)",
                    agent.spiffe_id
                )));
            }
            Err(e) => return Err(store_status(e)),
        }
        self.state
            .record_as(
                AgentRevocation::Renewed.event_kind(),
                agent.spiffe_id.as_ref(),
                agent.spiffe_id.as_ref(),
                serde_json::json!({
                    "serial": renewal.new_serial,
                    "expires_at": unix_seconds(svid.not_after),
                }),
            )
            .await;
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
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|message: StreamMessage| *message),
        )))
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
        self.record_x509_issued(&agent, &results).await;
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
        // A `jti` on every token: an OAuth server refuses an assertion used twice by it.
        let mut svid_request = JwtSvidRequest::new(entry.spiffe_id().clone(), request.audience)
            .with_ttl(entry.jwt_svid_ttl());
        svid_request.jti = Some(crate::tasks::random_id());
        let svid = self
            .state
            .authority
            .ca
            .mint_jwt_svid(&svid_request)
            .map_err(ca_status)?;
        self.state.metrics.signed("jwt");
        self.state
            .record_as(
                "svid.jwt.issued",
                agent.spiffe_id.as_ref(),
                svid.spiffe_id.as_ref(),
                serde_json::json!({
                    "entry_id": entry.id().to_string(),
                    "audience": svid.audience,
                    "expires_at": unix_seconds(svid.expires_at),
                    "token_sha256": crate::tasks::sha256_hex(svid.token.as_bytes()),
                }),
            )
            .await;
        Ok(Response::new(pb::NewJwtSvidResponse {
            token: svid.token,
            issued_at: unix_seconds(svid.issued_at),
            expires_at: unix_seconds(svid.expires_at),
        }))
    }

    async fn begin_task(
        &self,
        request: Request<pb::BeginTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::BeginTaskResponse>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let request = request.into_inner();
        let entry = authorized_entry(
            &self.state,
            &self.authorized_parents(&agent),
            &request.entry_id,
        )?;
        let task = request.task.ok_or_else(|| invalid("task", "is required"))?;
        crate::tasks::begin(&self.state, &agent, &entry, task, None)
            .await
            .map(Response::new)
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::Task>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let request = request.into_inner();
        let holders = self.caller_identities(&agent, &request.entry_ids)?;
        crate::tasks::get(&self.state, &holders, &request.task_id)
            .await
            .map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<lanyard_proto::task::ListTasksResponse>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let request = request.into_inner();
        let holders = self.caller_identities(&agent, &request.entry_ids)?;
        crate::tasks::list(
            &self.state,
            lanyard_store::TaskFilter {
                spiffe_ids: holders,
                audience: None,
            },
            request.page_size,
            request.page_token,
        )
        .await
        .map(Response::new)
    }

    async fn await_approval(
        &self,
        request: Request<pb::AwaitApprovalRequest>,
    ) -> Result<Response<lanyard_proto::task::BeginTaskResponse>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let request = request.into_inner();
        let holders = self.caller_identities(&agent, &request.entry_ids)?;
        let parents = self.authorized_parents(&agent);
        crate::tasks::await_approval(
            &self.state,
            &agent,
            |entry_id| authorized_entry(&self.state, &parents, entry_id),
            &holders,
            &request.approval_id,
            request.wait_seconds,
        )
        .await
        .map(Response::new)
    }

    async fn record_tool_use(
        &self,
        request: Request<pb::RecordToolUseRequest>,
    ) -> Result<Response<pb::RecordToolUseResponse>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let uses = request.into_inner().uses;
        if uses.len() > MAX_SVID_BATCH {
            return Err(invalid(
                "uses",
                format!("at most {MAX_SVID_BATCH} per call, got {}", uses.len()),
            ));
        }
        let parents = self.authorized_parents(&agent);
        let now = self.state.clock.now();
        let mut records = Vec::with_capacity(uses.len());
        for tool_use in uses {
            // A record in the name of a tool this agent does not serve is dropped, not stored.
            let Ok(entry) = authorized_entry(&self.state, &parents, &tool_use.entry_id) else {
                tracing::warn!(agent = %agent.spiffe_id, "tool use for an entry this agent may not serve; dropped");
                continue;
            };
            let subject = if tool_use.task_id.is_empty() {
                "unknown-task".to_owned()
            } else {
                clip(&tool_use.task_id, MAX_LOGGED_TEXT)
            };
            let draft = crate::audit::draft(
                "task.tool_use",
                entry.spiffe_id().as_ref(),
                &subject,
                serde_json::json!({
                    "agent": agent.spiffe_id.to_string(),
                    "jti": clip(&tool_use.token_id, MAX_LOGGED_TEXT),
                    "audience": clip(&tool_use.audience, MAX_LOGGED_TEXT),
                    "operation": clip(&tool_use.operation, MAX_LOGGED_TEXT),
                    "allowed": tool_use.allowed,
                    "reason": clip(&tool_use.reason, MAX_LOGGED_TEXT),
                    "at_us": tool_use.time_us,
                }),
                now,
            );
            match draft {
                Ok(draft) => records.push(draft),
                Err(e) => tracing::warn!(error = %e, "tool use record refused; dropped"),
            }
        }
        self.state
            .store
            .append_audits(&records)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::RecordToolUseResponse {}))
    }

    async fn end_task(
        &self,
        request: Request<pb::EndTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::Task>, Status> {
        let agent = self.caller(peer(&request)).await?;
        let request = request.into_inner();
        let holders = self.caller_identities(&agent, &request.entry_ids)?;
        // The task's own workload acts; the agent that forwarded it is in the task's record.
        crate::tasks::end(
            &self.state,
            None,
            &holders,
            &request.task_id,
            "task.ended",
            "ended by its owner",
        )
        .await
        .map(Response::new)
    }
}

/// Most X509-SVIDs listed in one audit record.
const SVIDS_PER_RECORD: usize = 100;

/// Records of one kind read per query; more are read with further queries.
const AGENT_EVENTS_PER_QUERY: u32 = 1000;

/// The audit kinds of an ended task: its token goes on the list every agent refuses.
const TASK_END_KINDS: [&str; 2] = ["task.ended", "task.revoked"];

/// Ends open streams of agents that were evicted, banned or attested again, and pushes the tokens
/// of ended tasks, whichever server of a shared datastore did it: each such event makes this
/// server hold the agent's streams against its record as stored now. (The server that acted ended
/// its own streams at once.) Reads the records of the kinds the datastore's change feed notices
/// ([`lanyard_store::NOTIFIED_AUDIT_KINDS`]), each kind by its index.
/// `seen` is the next audit seq to read; `None` starts after the latest.
pub(crate) async fn follow_agent_events(
    state: &ServerState,
    seen: &mut Option<u64>,
) -> Result<(), lanyard_store::Error> {
    // Every record below the log's size has committed (seqs are taken in commit order, see
    // docs/store.md), so reading each kind up to it, one kind after another, misses none.
    let until = state.store.audit_size().await?;
    let Some(from) = *seen else {
        *seen = Some(until);
        return Ok(());
    };
    if until <= from {
        return Ok(());
    }
    let mut records = Vec::new();
    for kind in lanyard_store::NOTIFIED_AUDIT_KINDS {
        let mut filter = lanyard_store::AuditFilter {
            from_seq: from,
            kind: Some((*kind).to_owned()),
            ..lanyard_store::AuditFilter::default()
        };
        loop {
            let page = state
                .store
                .list_audit(&filter, AGENT_EVENTS_PER_QUERY)
                .await?;
            let more = page.len() >= AGENT_EVENTS_PER_QUERY as usize;
            let Some(last) = page.last().map(|r| r.seq) else {
                break;
            };
            records.extend(page.into_iter().filter(|r| r.seq < until));
            if !more || last + 1 >= until {
                break;
            }
            filter.from_seq = last + 1;
        }
    }
    records.sort_by_key(|r| r.seq);
    let mut ended_tasks = false;
    for record in records {
        if TASK_END_KINDS.contains(&record.kind.as_str()) {
            // Another server ended a task: push the new list to this server's agents too.
            ended_tasks = true;
            continue;
        }
        let Some(reason) = AgentRevocation::from_event_kind(&record.kind) else {
            continue;
        };
        // The subject of these records is the agent's SPIFFE ID.
        let Ok(spiffe_id) = record.subject.parse::<SpiffeId>() else {
            continue;
        };
        // Decide on the record as it is now, not as the event describes it: the agent may have
        // attested again since, and its new streams must stay.
        let keep_serial = match state.store.get_agent(&spiffe_id).await? {
            Some(agent) if !agent.banned => Some(agent.serial),
            _ => None,
        };
        let _ = state.agent_revoked.send(AgentRevoked {
            spiffe_id,
            reason,
            keep_serial,
        });
    }
    *seen = Some(until);
    if ended_tasks {
        state.revocations_changed().await;
    }
    Ok(())
}

/// Whether a read failed on the attestation byte limit (the body's error, under the status).
fn is_length_limit(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
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

/// What an entry stream's task hands to its response, boxed: the channel keeps a block of 32
/// slots per stream whether or not they are used, 160 bytes each unboxed (5 KiB per open stream,
/// 50 MiB with 10,000 agents), 8 boxed.
type StreamMessage = Box<Result<pb::SyncEntriesResponse, Status>>;

/// One agent's entry stream.
struct EntryStream {
    state: Arc<ServerState>,
    agent: AttestedAgent,
    tx: mpsc::Sender<StreamMessage>,
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
        let (mut updates, grants) = self.state.index.subscribe(
            &self.agent.spiffe_id,
            &self.agent.selectors,
            self.state.clock.now(),
        );
        let mut bundles = self.state.bundles.subscribe();
        let mut revoked = self.state.agent_revoked.subscribe();
        let mut parents = grants.parents.clone();
        let mut alias_expiry = grants.next_expiry;
        let mut revocations = self.state.revocations.subscribe();
        // The index revision the agent's set reflects: queued updates up to it are in it.
        let first = {
            // Dropped once sent: an open stream would otherwise keep its own copy of the
            // bundles (~1 KiB; 10 MiB with 10,000 agents) for as long as it lives.
            let published = bundles.borrow_and_update().clone();
            let revoked_tokens = revocations.borrow_and_update().clone();
            self.initial(since, &grants, &published, &revoked_tokens)
                .await
        };
        drop(grants);
        let mut synced = match first {
            Ok(synced) => synced,
            Err(Ended::Closed) => return,
        };
        loop {
            let outcome = tokio::select! {
                delivery = updates.recv() => match delivery {
                    Some(Delivery::Update(update)) => {
                        self.apply(&updates, &update, &mut parents, &mut alias_expiry, &mut synced).await
                    }
                    Some(Delivery::Resync) => {
                        // Fell behind: start again from a full set.
                        let grants = self.resubscribe(&updates);
                        (parents, alias_expiry) = (grants.parents, grants.next_expiry);
                        self.full(&parents, None).await.map(|r| synced = r)
                    }
                    None => Err(Ended::Closed),
                },
                () = self.until(alias_expiry) => {
                    // A node alias stopped granting: what the agent may serve changed.
                    let grants = self.resubscribe(&updates);
                    alias_expiry = grants.next_expiry;
                    if grants.parents == parents {
                        Ok(())
                    } else {
                        parents = grants.parents;
                        self.full(&parents, None).await.map(|r| synced = r)
                    }
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
                changed = revocations.changed() => match changed {
                    Ok(()) => {
                        let revoked = revocations.borrow_and_update().clone();
                        self.send(pb::SyncEntriesResponse {
                            revocations: true,
                            revoked: revoked.to_vec(),
                            revision: self.sent_revision.load(std::sync::atomic::Ordering::Relaxed),
                            ..Default::default()
                        }).await
                    }
                    Err(_) => Err(Ended::Closed),
                },
                event = revoked.recv() => match event {
                    Ok(event) if event.ends(&self.agent) => {
                        let _ = self.tx.send(Box::new(Err(event.status()))).await;
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

    /// What node aliases grant this stream's agent now; the subscription follows.
    fn resubscribe(&self, updates: &Subscription) -> AliasGrants {
        self.state.index.resubscribe(
            updates,
            &self.agent.spiffe_id,
            &self.agent.selectors,
            self.state.clock.now(),
        )
    }

    /// Waits until `at` on the server's clock; forever for `None`.
    async fn until(&self, at: Option<SystemTime>) {
        match at {
            Some(at) => {
                let wait = at
                    .duration_since(self.state.clock.now())
                    .unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            None => std::future::pending().await,
        }
    }

    async fn send(&self, message: pb::SyncEntriesResponse) -> Result<(), Ended> {
        self.tx
            .send(Box::new(Ok(message)))
            .await
            .map_err(|_| Ended::Closed)
    }

    /// The first answer: what changed since `since` if the store still has it and no node alias
    /// changed, otherwise the full set. Returns the index revision the agent's set reflects.
    async fn initial(
        &self,
        since: u64,
        grants: &AliasGrants,
        bundles: &PublishedBundles,
        revoked: &[pb::RevokedToken],
    ) -> Result<u64, Ended> {
        let parents = &grants.parents;
        // An agent that failed over from another server of the datastore may have seen writes
        // this server has not read yet: read them now, so that it resumes rather than starting
        // over with a full set that lacks them.
        if since > self.state.index.revision()
            && let Err(e) = self.state.index.catch_up(&*self.state.store).await
        {
            tracing::warn!(error = %e, "cannot read entry changes; sending the full set");
        }
        // An alias that expired may have granted entries the agent still holds, with no write to
        // say so: only a full set tells the agent to drop them.
        let resumable = since > 0 && since <= self.state.index.revision() && !grants.expired;
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
                let ids: Vec<EntryId> = changes
                    .changes
                    .iter()
                    .map(|c| c.entry_id().clone())
                    .collect();
                let mut puts = Vec::new();
                let mut removed = Vec::new();
                // Ids the agent may not serve (any more) are removed; it ignores unknown ones.
                let synced = self.state.index.visit(&ids, |id, entry| match entry {
                    Some(entry) if serves(parents, entry.parent_id()) => {
                        puts.push(indexed_to_node_proto(entry));
                    }
                    _ => removed.push(id.clone()),
                });
                let revision = changes.current_revision.max(since);
                self.send_chunked(false, puts, removed, revision, Some((bundles, revoked)))
                    .await?;
                // Exact only for what both reads saw: a batch the index applied after the store
                // was read is not in `changes`, so its update must still be sent.
                return Ok(synced.min(changes.current_revision));
            }
        }
        self.full(parents, Some((bundles, revoked))).await
    }

    /// Sends the whole authorized set, in chunks; returns the index revision it is from.
    async fn full(
        &self,
        parents: &BTreeSet<SpiffeId>,
        first: Option<(&PublishedBundles, &[pb::RevokedToken])>,
    ) -> Result<u64, Ended> {
        let mut entries = Vec::new();
        let revision = self
            .state
            .index
            .entries_under(parents, |e| entries.push(indexed_to_node_proto(e)));
        self.send_chunked(true, entries, Vec::new(), revision, first)
            .await?;
        Ok(revision)
    }

    /// Sends what `update` changed under this agent's parents.
    async fn apply(
        &self,
        updates: &Subscription,
        update: &IndexUpdate,
        parents: &mut BTreeSet<SpiffeId>,
        alias_expiry: &mut Option<SystemTime>,
        synced: &mut u64,
    ) -> Result<(), Ended> {
        if update.revision <= *synced {
            // Already in the set the agent was sent.
            return Ok(());
        }
        if update.aliases_changed {
            let grants = self.resubscribe(updates);
            *alias_expiry = grants.next_expiry;
            if &grants.parents != parents {
                *parents = grants.parents;
                *synced = self.full(parents, None).await?;
                return Ok(());
            }
        }
        let mut puts = Vec::new();
        let mut removed = Vec::new();
        for changes in parents
            .iter()
            .filter_map(|p| update.by_parent.get(p.as_str()))
        {
            puts.extend(changes.puts.iter().map(indexed_to_node_proto));
            removed.extend(changes.removed.iter().cloned());
        }
        if !puts.is_empty() && !removed.is_empty() {
            // Moved between two of this agent's parents, or deleted and created again.
            let kept: HashSet<&str> = puts.iter().map(|e| e.id.as_str()).collect();
            removed.retain(|id| !kept.contains(id.as_str()));
        }
        *synced = update.revision;
        if puts.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.send_chunked(false, puts, removed, update.revision, None)
            .await
    }

    /// Sends an update in chunks. `first`, for the stream's first update, adds the revoked tokens
    /// (to the first chunk: the agent has them before any entry) and the bundles: to the last
    /// chunk if the message stays under [`SYNC_MESSAGE_BYTES`], else in a message of their own
    /// after it (the largest message sets the stream's encode buffer for as long as it is open).
    async fn send_chunked(
        &self,
        full_sync: bool,
        entries: Vec<pb::Entry>,
        removed: Vec<EntryId>,
        revision: u64,
        first: Option<(&PublishedBundles, &[pb::RevokedToken])>,
    ) -> Result<(), Ended> {
        let mut chunks = chunk_entries(entries);
        if let Some((bundles, _)) = first
            && let Some(chunk) = chunks.last()
            && !chunk.is_empty()
            && chunk_bytes(chunk) + bundles_bytes(bundles) > SYNC_MESSAGE_BYTES
        {
            chunks.push(Vec::new());
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut message = pb::SyncEntriesResponse {
                full_sync: full_sync && i == 0,
                entries: chunk,
                more: i != last,
                revision: if i == last { revision } else { 0 },
                ..Default::default()
            };
            if i == 0
                && let Some((_, revoked)) = first
            {
                message.revocations = true;
                message.revoked = revoked.to_vec();
            }
            if i == last {
                message.removed_entry_ids = removed.iter().map(ToString::to_string).collect();
                if let Some((bundles, _)) = first {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit kinds [`follow_agent_events`] acts on are exactly those the datastore's change
    /// feed notices: one it missed would wait for the slow poll, one extra would wake every
    /// server for nothing.
    #[test]
    fn the_change_feed_notices_every_event_acted_on() {
        let acted_on: BTreeSet<&str> = [
            AgentRevocation::Evicted,
            AgentRevocation::Banned,
            AgentRevocation::Reattested,
        ]
        .into_iter()
        .map(AgentRevocation::event_kind)
        .chain(TASK_END_KINDS)
        .collect();
        let noticed: BTreeSet<&str> = lanyard_store::NOTIFIED_AUDIT_KINDS
            .iter()
            .copied()
            .collect();
        assert_eq!(acted_on, noticed);
        for kind in noticed {
            assert!(
                TASK_END_KINDS.contains(&kind) || AgentRevocation::from_event_kind(kind).is_some(),
                "{kind}"
            );
        }
        assert_eq!(AgentRevocation::from_event_kind("agent.renewed"), None);
    }

    fn entry(i: usize, hint_bytes: usize) -> pb::Entry {
        pb::Entry {
            id: format!("{i:032x}"),
            spiffe_id: format!("spiffe://example.org/w/{i}"),
            parent_id: "spiffe://example.org/lanyard/agent/join_token/a".to_owned(),
            selectors: vec![format!("k8s:sa:w-{i}")],
            hint: "h".repeat(hint_bytes),
            ..Default::default()
        }
    }

    #[test]
    fn full_sets_go_in_small_messages_and_keep_every_entry_in_order() {
        use prost::Message as _;
        let entries: Vec<pb::Entry> = (0..1000).map(|i| entry(i, 0)).collect();
        let chunks = chunk_entries(entries.clone());
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            let message = pb::SyncEntriesResponse {
                entries: chunk.clone(),
                ..Default::default()
            };
            assert!(message.encoded_len() <= SYNC_CHUNK_BYTES);
        }
        assert_eq!(chunks.concat(), entries);
        // An entry larger than the budget goes alone; nothing is an empty message but "none".
        let big = chunk_entries(vec![entry(1, 10_000), entry(2, 0), entry(3, 10_000)]);
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(chunk_entries(Vec::new()), vec![Vec::new()]);
    }
}
