//! The admin API (`lanyard.admin.v1.Admin`), served on the private admin socket.
//!
//! Requests are parsed in `convert` before anything else happens; errors from the datastore and
//! the CA become gRPC statuses in [`store_status`] and [`ca_status`], which never pass on
//! database internals.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use lanyard_attestation::node::is_agent_id;
use lanyard_attestation::{JoinToken, TokenId};
use lanyard_ca::{CaError, JwtSvidRequest, KeyType, PrivateKey, X509SvidRequest};
use lanyard_core::{Bundle, EntrySpec, RegistrationEntry, SpiffeId, TrustDomain};
use lanyard_proto::admin::{self as pb, admin_server::AdminServer};
use lanyard_store::{
    AgentFilter, BundleWrite, EntryFilter, PageRequest, SelectorFilter, SelectorMatch,
};
use tonic::{Request, Response, Status};

use crate::convert::{
    agent_to_proto, entry_from_proto, entry_to_proto, invalid, new_entry_id, parse_dns_names,
    parse_entry_id, parse_id, parse_issuable_id, parse_selectors, parse_trust_domain, parse_ttl,
    reserved,
};
use crate::{ServerState, unix_seconds};

/// Largest batch of entries created or deleted in one call.
const MAX_BATCH: usize = 10_000;
/// Page size when a list request does not say.
const DEFAULT_PAGE_SIZE: u32 = 1_000;
/// Largest page a list request may ask for.
const MAX_PAGE_SIZE: u32 = 10_000;
/// Most bytes of checkpoints (signed notes and leaf hashes) in one ListCheckpoints page.
const CHECKPOINT_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest admin request, in bytes (a batch of 10,000 entries fits).
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The admin service, ready to add to a tonic server.
pub(crate) fn service(state: Arc<ServerState>) -> AdminServer<AdminService> {
    AdminServer::new(AdminService { state })
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

#[derive(Debug)]
pub(crate) struct AdminService {
    state: Arc<ServerState>,
}

/// Maps a datastore error to a status. Database failures are logged here and reported without
/// detail: their text is for the operator's log, not the caller.
pub(crate) fn store_status(e: lanyard_store::Error) -> Status {
    use lanyard_store::Error as E;
    match e {
        E::NotFound { .. } => Status::not_found(e.to_string()),
        E::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        E::Conflict { .. } => Status::aborted(e.to_string()),
        E::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        E::JoinTokenNotFound | E::JoinTokenUsed | E::JoinTokenExpired => {
            Status::permission_denied(e.to_string())
        }
        E::ChangesUnavailable { .. } => Status::failed_precondition(e.to_string()),
        other => {
            tracing::error!(error = ?other, "datastore failure");
            Status::unavailable("the datastore failed; see the server log")
        }
    }
}

/// Maps a CA error to a status: what the request got wrong is `InvalidArgument`; a CA that cannot
/// sign is `Unavailable`.
pub(crate) fn ca_status(e: CaError) -> Status {
    match e {
        CaError::ForeignTrustDomain { .. }
        | CaError::RootIdNotAllowed(_)
        | CaError::ZeroTtl
        | CaError::EmptyAudience
        | CaError::ReservedClaim(_)
        | CaError::CsrTooLarge { .. }
        | CaError::CsrMalformed(_)
        | CaError::CsrBadSignature
        | CaError::CsrUnsupportedSignatureAlgorithm
        | CaError::PublicKeyTooLarge { .. }
        | CaError::PublicKeyMalformed(_)
        | CaError::UnsupportedKeyType
        | CaError::InvalidPublicKey
        | CaError::TimeOutOfRange => Status::invalid_argument(e.to_string()),
        other => {
            tracing::error!(error = %other, "CA failure");
            Status::unavailable(format!("the CA cannot sign: {other}"))
        }
    }
}

/// Who called the admin API, for the audit log: the uid the kernel reports for the socket's peer.
fn admin_actor<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map_or_else(
            || "admin".to_owned(),
            |cred| format!("admin:uid={}", cred.uid()),
        )
}

fn audit_to_proto(row: &lanyard_store::AuditRow) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: row.seq,
        time_us: row
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        kind: row.kind.clone(),
        actor: row.actor.clone(),
        subject: row.subject.clone(),
        details: row.details.clone(),
    }
}

fn entry_details(entry: &RegistrationEntry) -> serde_json::Value {
    serde_json::json!({
        "spiffe_id": entry.spiffe_id().to_string(),
        "parent_id": entry.parent_id().to_string(),
        "selectors": entry.selectors().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "revision": entry.revision(),
    })
}

pub(crate) fn page_request(size: u32, token: String) -> PageRequest {
    PageRequest {
        token: (!token.is_empty()).then_some(token),
        size: match size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        },
    }
}

fn ok_status() -> Option<pb::Status> {
    Some(pb::Status {
        code: 0,
        message: String::new(),
    })
}

fn status_message(status: &Status) -> Option<pb::Status> {
    Some(pb::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
    })
}

fn bundle_to_proto(bundle: &Bundle) -> pb::Bundle {
    pb::Bundle {
        trust_domain: bundle.trust_domain().to_string(),
        spiffe_json: bundle.to_json(),
        sequence: bundle.sequence(),
        x509_authorities: bundle
            .x509_authorities()
            .iter()
            .map(|a| a.der().to_vec())
            .collect(),
    }
}

// === impl AdminService ===

impl AdminService {
    /// Runs one RPC and records its outcome and duration.
    async fn observe<T>(
        &self,
        method: &str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let result = call.await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.state
            .metrics
            .observe_rpc(method, code, start.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    fn trust_domain(&self) -> &TrustDomain {
        &self.state.config.trust_domain
    }

    /// Refuses a federated-bundle operation that names this server's own trust domain.
    fn foreign_trust_domain(&self, value: &str) -> Result<TrustDomain, Status> {
        let td = parse_trust_domain("trust_domain", value)?;
        if &td == self.trust_domain() {
            return Err(invalid(
                "trust_domain",
                "is this server's own trust domain; its bundle is managed by the CA",
            ));
        }
        Ok(td)
    }

    async fn batch_create(
        &self,
        actor: &str,
        request: pb::BatchCreateEntriesRequest,
    ) -> Result<pb::BatchCreateEntriesResponse, Status> {
        if request.entries.len() > MAX_BATCH {
            return Err(invalid(
                "entries",
                format!(
                    "at most {MAX_BATCH} per call, got {}",
                    request.entries.len()
                ),
            ));
        }
        // Parse everything first; only the valid entries go to the store, in one transaction.
        let mut results: Vec<pb::EntryResult> = Vec::with_capacity(request.entries.len());
        let mut valid = Vec::new();
        let mut valid_positions = Vec::new();
        for (i, entry) in request.entries.iter().enumerate() {
            let id = if entry.id.is_empty() {
                new_entry_id()
            } else {
                parse_entry_id(&entry.id)
            };
            let parsed = id.and_then(|id| {
                entry_from_proto(entry, id, self.trust_domain(), &self.state.config.ca)
            });
            match parsed {
                Ok(entry) => {
                    valid.push(entry);
                    valid_positions.push(i);
                    results.push(pb::EntryResult::default());
                }
                Err(status) => results.push(pb::EntryResult {
                    status: status_message(&status),
                    entry: None,
                }),
            }
        }
        if !valid.is_empty() {
            let stored = self
                .state
                .store
                .create_entries(valid)
                .await
                .map_err(store_status)?;
            let mut records = Vec::new();
            for (position, result) in valid_positions.into_iter().zip(stored) {
                results[position] = match result {
                    Ok(entry) => {
                        records.push((entry.id().to_string(), entry_details(&entry)));
                        pb::EntryResult {
                            status: ok_status(),
                            entry: Some(entry_to_proto(&entry)),
                        }
                    }
                    Err(e) => pb::EntryResult {
                        status: status_message(&store_status(e)),
                        entry: None,
                    },
                };
            }
            self.state.entries_changed().await;
            self.state
                .record_many("entry.created", actor, records)
                .await;
        }
        Ok(pb::BatchCreateEntriesResponse { results })
    }

    async fn list(
        &self,
        request: pb::ListEntriesRequest,
    ) -> Result<pb::ListEntriesResponse, Status> {
        let optional_id = |field: &str, value: &str| {
            if value.is_empty() {
                Ok(None)
            } else {
                parse_id(field, value).map(Some)
            }
        };
        let selectors = if request.by_selectors.is_empty() {
            None
        } else {
            let mode = match pb::SelectorMatch::try_from(request.selector_match) {
                Ok(pb::SelectorMatch::Exact) => SelectorMatch::Exact,
                Ok(pb::SelectorMatch::Subset) => SelectorMatch::Subset,
                Ok(pb::SelectorMatch::Superset) => SelectorMatch::Superset,
                Ok(pb::SelectorMatch::Any) => SelectorMatch::Any,
                Err(_) => return Err(invalid("selector_match", "unknown match mode")),
            };
            Some(SelectorFilter {
                selectors: parse_selectors("by_selectors", &request.by_selectors)?,
                mode,
            })
        };
        let filter = EntryFilter {
            spiffe_id: optional_id("by_spiffe_id", &request.by_spiffe_id)?,
            parent_id: optional_id("by_parent_id", &request.by_parent_id)?,
            selectors,
        };
        let page = self
            .state
            .store
            .list_entries(
                &filter,
                &page_request(request.page_size, request.page_token),
            )
            .await
            .map_err(store_status)?;
        Ok(pb::ListEntriesResponse {
            entries: page.items.iter().map(entry_to_proto).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        })
    }

    async fn update(
        &self,
        actor: &str,
        request: pb::UpdateEntryRequest,
    ) -> Result<pb::Entry, Status> {
        let entry = request
            .entry
            .ok_or_else(|| invalid("entry", "is required"))?;
        let id = parse_entry_id(&entry.id)?;
        let entry = entry_from_proto(&entry, id, self.trust_domain(), &self.state.config.ca)?;
        let stored = self
            .state
            .store
            .update_entry(entry)
            .await
            .map_err(store_status)?;
        self.state.entries_changed().await;
        self.state
            .record_as(
                "entry.updated",
                actor,
                &stored.id().to_string(),
                entry_details(&stored),
            )
            .await;
        Ok(entry_to_proto(&stored))
    }

    async fn batch_delete(
        &self,
        actor: &str,
        request: pb::BatchDeleteEntriesRequest,
    ) -> Result<pb::BatchDeleteEntriesResponse, Status> {
        if request.ids.len() > MAX_BATCH {
            return Err(invalid(
                "ids",
                format!("at most {MAX_BATCH} per call, got {}", request.ids.len()),
            ));
        }
        let mut results = vec![None; request.ids.len()];
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        for (i, id) in request.ids.iter().enumerate() {
            match parse_entry_id(id) {
                Ok(id) => {
                    ids.push(id);
                    positions.push(i);
                }
                Err(status) => results[i] = status_message(&status),
            }
        }
        if !ids.is_empty() {
            let deleted = self
                .state
                .store
                .delete_entries(&ids)
                .await
                .map_err(store_status)?;
            let mut records = Vec::new();
            for ((position, result), id) in positions.into_iter().zip(deleted).zip(&ids) {
                results[position] = match result {
                    Ok(()) => {
                        records.push((id.to_string(), serde_json::json!({})));
                        ok_status()
                    }
                    Err(e) => status_message(&store_status(e)),
                };
            }
            self.state.entries_changed().await;
            self.state
                .record_many("entry.deleted", actor, records)
                .await;
        }
        Ok(pb::BatchDeleteEntriesResponse {
            results: results.into_iter().map(Option::unwrap_or_default).collect(),
        })
    }

    /// A single-use join token. `spiffe_id`, if given, is either the agent's own ID (under
    /// `/lanyard/agent/`) or, for any other ID of this trust domain outside `/lanyard`, a node
    /// alias made now for the one agent that will use the token (see [`Self::token_alias`]).
    async fn generate_token(
        &self,
        actor: &str,
        request: pb::GenerateJoinTokenRequest,
    ) -> Result<pb::JoinToken, Status> {
        let ttl = parse_ttl("ttl", request.ttl_seconds, self.state.config.join_token_ttl)?;
        if ttl > lanyard_core::entry::MAX_SVID_TTL {
            return Err(invalid("ttl", "a join token may live at most a year"));
        }
        let (agent_id, alias_id) = if request.spiffe_id.is_empty() {
            (None, None)
        } else {
            let id = parse_id("spiffe_id", &request.spiffe_id)?;
            if !id.is_member_of(self.trust_domain()) {
                return Err(invalid(
                    "spiffe_id",
                    format!("`{id}` is not in trust domain `{}`", self.trust_domain()),
                ));
            }
            if is_agent_id(&id) {
                (Some(id), None)
            } else if id.is_reserved_for_lanyard() {
                return Err(reserved("spiffe_id", &id));
            } else {
                (None, Some(id))
            }
        };
        let token = JoinToken::generate().map_err(|e| Status::internal(e.to_string()))?;
        let token_id = token.id();
        // The alias is checked before anything is written; it is written after the token, so
        // that no alias exists without its token. Should that second write fail, the token is
        // harmless: its secret was never shown, and it expires.
        let alias = alias_id
            .map(|id| self.token_alias(id, &token_id))
            .transpose()?;
        let expires_at = self.state.clock.now() + ttl;
        self.state
            .store
            .create_join_token(token.expose_secret(), agent_id.as_ref(), expires_at)
            .await
            .map_err(store_status)?;
        let alias_entry_id = match alias {
            Some(entry) => {
                let created = self
                    .state
                    .store
                    .create_entry(entry)
                    .await
                    .map_err(store_status)?;
                self.state.entries_changed().await;
                created.id().to_string()
            }
            None => String::new(),
        };
        self.state
            .record_as(
                "join_token.created",
                actor,
                &token_id.to_string(),
                serde_json::json!({
                    "spiffe_id": request.spiffe_id,
                    "expires_at": unix_seconds(expires_at),
                    "alias_entry_id": alias_entry_id,
                }),
            )
            .await;
        Ok(pb::JoinToken {
            token: token.expose_secret().to_owned(),
            expires_at: unix_seconds(expires_at),
            // Parsed above, so as valid as the agent ID or alias made from it.
            spiffe_id: request.spiffe_id,
            alias_entry_id,
            token_id: token_id.to_string(),
        })
    }

    /// The node alias that gives `id` to the agent that uses the token `token_id`: parent
    /// `spiffe://<td>/lanyard/server`, selector `join_token:<token-id>`, which only the join
    /// token attestor gives, and only to that agent. Entries parented to `id` are then served by
    /// that agent, as SPIRE does for `token generate -spiffeID`. If the token expires unused the
    /// alias matches no agent, ever (the selector names a token nobody can use any more); it
    /// stays, harmless, until deleted.
    fn token_alias(&self, id: SpiffeId, token_id: &TokenId) -> Result<RegistrationEntry, Status> {
        let selector = token_id
            .selector()
            .map_err(|e| Status::internal(e.to_string()))?;
        let ca = &self.state.config.ca;
        let spec = EntrySpec {
            id: new_entry_id()?,
            spiffe_id: id,
            parent_id: self.state.node_alias_parent.clone(),
            selectors: [selector].into_iter().collect(),
            x509_svid_ttl: ca.default_x509_svid_ttl,
            jwt_svid_ttl: ca.default_jwt_svid_ttl,
            dns_names: Vec::new(),
            federates_with: Vec::new(),
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            revision: 0,
        };
        RegistrationEntry::new_in(spec, self.trust_domain())
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    async fn mint_x509(
        &self,
        actor: &str,
        request: pb::MintX509SvidRequest,
    ) -> Result<pb::MintX509SvidResponse, Status> {
        let spiffe_id = parse_issuable_id("spiffe_id", &request.spiffe_id)?;
        let ttl = parse_ttl(
            "ttl",
            request.ttl_seconds,
            self.state.config.ca.default_x509_svid_ttl,
        )?;
        let dns_names = parse_dns_names("dns_names", &request.dns_names)?;
        // The key is made here for this one call and handed over; the server keeps no copy.
        let (key, pkcs8) = PrivateKey::generate(KeyType::EcP256).map_err(ca_status)?;
        let svid_request = X509SvidRequest {
            spiffe_id,
            dns_names,
            ttl: Some(ttl),
        };
        let svid = self
            .state
            .authority
            .ca
            .mint_x509_svid(key.public_key_der(), &svid_request)
            .map_err(ca_status)?;
        self.state.metrics.signed("x509");
        self.state
            .record_as(
                "svid.x509.issued",
                actor,
                svid.spiffe_id.as_ref(),
                serde_json::json!({
                    "serial": crate::node_listener::serial_of(svid.leaf_der()),
                    "expires_at": unix_seconds(svid.not_after),
                }),
            )
            .await;
        let bundle = self.state.authority.trust_bundle();
        Ok(pb::MintX509SvidResponse {
            chain: svid.cert_chain,
            private_key: pkcs8.as_bytes().to_vec(),
            bundle: bundle
                .x509_authorities()
                .iter()
                .map(|a| a.der().to_vec())
                .collect(),
            expires_at: unix_seconds(svid.not_after),
        })
    }

    async fn mint_jwt(
        &self,
        actor: &str,
        request: pb::MintJwtSvidRequest,
    ) -> Result<pb::MintJwtSvidResponse, Status> {
        let spiffe_id = parse_issuable_id("spiffe_id", &request.spiffe_id)?;
        if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
            return Err(invalid(
                "audience",
                "at least one non-empty audience is required",
            ));
        }
        let ttl = parse_ttl(
            "ttl",
            request.ttl_seconds,
            self.state.config.ca.default_jwt_svid_ttl,
        )?;
        let mut svid_request = JwtSvidRequest::new(spiffe_id, request.audience).with_ttl(ttl);
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
                actor,
                svid.spiffe_id.as_ref(),
                serde_json::json!({
                    "audience": svid.audience,
                    "expires_at": unix_seconds(svid.expires_at),
                    "token_sha256": crate::tasks::sha256_hex(svid.token.as_bytes()),
                }),
            )
            .await;
        Ok(pb::MintJwtSvidResponse {
            token: svid.token,
            expires_at: unix_seconds(svid.expires_at),
        })
    }

    async fn health_check(&self) -> Result<pb::HealthResponse, Status> {
        let store_ok = self.state.store.ping().await.is_ok();
        let entries = self.state.store.count_entries().await.unwrap_or(0);
        let agents = self.state.store.count_agents().await.unwrap_or(0);
        Ok(pb::HealthResponse {
            store_ok,
            ca_ok: self.state.authority.check_can_sign().is_ok(),
            trust_domain: self.trust_domain().to_string(),
            entries,
            agents,
            ca_expires_at: self
                .state
                .authority
                .active_x509_expiry()
                .map_or(0, unix_seconds),
        })
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn batch_create_entries(
        &self,
        request: Request<pb::BatchCreateEntriesRequest>,
    ) -> Result<Response<pb::BatchCreateEntriesResponse>, Status> {
        let actor = admin_actor(&request);
        self.observe(
            "BatchCreateEntries",
            self.batch_create(&actor, request.into_inner()),
        )
        .await
    }

    async fn get_entry(
        &self,
        request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        self.observe("GetEntry", async {
            let id = parse_entry_id(&request.get_ref().id)?;
            match self
                .state
                .store
                .get_entry(&id)
                .await
                .map_err(store_status)?
            {
                Some(entry) => Ok(entry_to_proto(&entry)),
                None => Err(Status::not_found(format!("entry `{id}` not found"))),
            }
        })
        .await
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        self.observe("ListEntries", self.list(request.into_inner()))
            .await
    }

    async fn update_entry(
        &self,
        request: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let actor = admin_actor(&request);
        self.observe("UpdateEntry", self.update(&actor, request.into_inner()))
            .await
    }

    async fn batch_delete_entries(
        &self,
        request: Request<pb::BatchDeleteEntriesRequest>,
    ) -> Result<Response<pb::BatchDeleteEntriesResponse>, Status> {
        let actor = admin_actor(&request);
        self.observe(
            "BatchDeleteEntries",
            self.batch_delete(&actor, request.into_inner()),
        )
        .await
    }

    async fn generate_join_token(
        &self,
        request: Request<pb::GenerateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let actor = admin_actor(&request);
        self.observe(
            "GenerateJoinToken",
            self.generate_token(&actor, request.into_inner()),
        )
        .await
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.observe("ListAgents", async {
            let request = request.into_inner();
            let page = self
                .state
                .store
                .list_agents(
                    &AgentFilter::default(),
                    &page_request(request.page_size, request.page_token),
                )
                .await
                .map_err(store_status)?;
            Ok(pb::ListAgentsResponse {
                agents: page.items.iter().map(agent_to_proto).collect(),
                next_page_token: page.next_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.observe("GetAgent", async {
            let id = parse_id("spiffe_id", &request.get_ref().spiffe_id)?;
            match self
                .state
                .store
                .get_agent(&id)
                .await
                .map_err(store_status)?
            {
                Some(agent) => Ok(agent_to_proto(&agent)),
                None => Err(Status::not_found(format!("agent `{id}` not found"))),
            }
        })
        .await
    }

    async fn evict_agent(
        &self,
        request: Request<pb::EvictAgentRequest>,
    ) -> Result<Response<pb::EvictAgentResponse>, Status> {
        let actor = admin_actor(&request);
        self.observe("EvictAgent", async {
            let id = parse_id("spiffe_id", &request.get_ref().spiffe_id)?;
            self.state
                .store
                .delete_agent(&id)
                .await
                .map_err(store_status)?;
            self.state
                .agent_removed(&actor, id, crate::node::AgentRevocation::Evicted)
                .await;
            self.state.refresh_gauges().await;
            Ok(pb::EvictAgentResponse {})
        })
        .await
    }

    async fn ban_agent(
        &self,
        request: Request<pb::BanAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let actor = admin_actor(&request);
        self.observe("BanAgent", async {
            let id = parse_id("spiffe_id", &request.get_ref().spiffe_id)?;
            let agent = self
                .state
                .store
                .ban_agent(&id)
                .await
                .map_err(store_status)?;
            self.state
                .agent_removed(&actor, id, crate::node::AgentRevocation::Banned)
                .await;
            Ok(agent_to_proto(&agent))
        })
        .await
    }

    async fn get_bundle(
        &self,
        _request: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        self.observe("GetBundle", async {
            Ok(bundle_to_proto(&self.state.authority.trust_bundle()))
        })
        .await
    }

    async fn set_federated_bundle(
        &self,
        request: Request<pb::SetFederatedBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        let actor = admin_actor(&request);
        self.observe("SetFederatedBundle", async {
            let request = request.into_inner();
            let td = self.foreign_trust_domain(&request.trust_domain)?;
            let bundle = Bundle::parse_json(td.clone(), request.spiffe_json.as_bytes())
                .map_err(|e| invalid("spiffe_json", e))?;
            self.state
                .store
                .set_bundle(
                    &td,
                    &bundle.to_json(),
                    bundle.sequence(),
                    BundleWrite::Unconditional,
                )
                .await
                .map_err(store_status)?;
            self.state.bundles_changed().await;
            self.state
                .record_as(
                    "bundle.set",
                    &actor,
                    &td.to_string(),
                    serde_json::json!({ "sequence": bundle.sequence() }),
                )
                .await;
            Ok(bundle_to_proto(&bundle))
        })
        .await
    }

    async fn list_federated_bundles(
        &self,
        _request: Request<pb::ListFederatedBundlesRequest>,
    ) -> Result<Response<pb::ListFederatedBundlesResponse>, Status> {
        self.observe("ListFederatedBundles", async {
            let records = self
                .state
                .store
                .list_bundles()
                .await
                .map_err(store_status)?;
            let bundles = records
                .into_iter()
                .filter(|r| &r.trust_domain != self.trust_domain())
                .map(|r| {
                    Bundle::parse_json(r.trust_domain.clone(), r.document.as_bytes())
                        .map(|b| bundle_to_proto(&b))
                        .map_err(|e| {
                            Status::internal(format!(
                                "stored bundle of {} is invalid: {e}",
                                r.trust_domain
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            Ok(pb::ListFederatedBundlesResponse { bundles })
        })
        .await
    }

    async fn delete_federated_bundle(
        &self,
        request: Request<pb::DeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::DeleteFederatedBundleResponse>, Status> {
        let actor = admin_actor(&request);
        self.observe("DeleteFederatedBundle", async {
            let td = self.foreign_trust_domain(&request.get_ref().trust_domain)?;
            self.state
                .store
                .delete_bundle(&td)
                .await
                .map_err(store_status)?;
            self.state.bundles_changed().await;
            self.state
                .record_as(
                    "bundle.deleted",
                    &actor,
                    &td.to_string(),
                    serde_json::json!({}),
                )
                .await;
            Ok(pb::DeleteFederatedBundleResponse {})
        })
        .await
    }

    async fn mint_x509_svid(
        &self,
        request: Request<pb::MintX509SvidRequest>,
    ) -> Result<Response<pb::MintX509SvidResponse>, Status> {
        let actor = admin_actor(&request);
        self.observe("MintX509Svid", self.mint_x509(&actor, request.into_inner()))
            .await
    }

    async fn mint_jwt_svid(
        &self,
        request: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        let actor = admin_actor(&request);
        self.observe("MintJwtSvid", self.mint_jwt(&actor, request.into_inner()))
            .await
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<lanyard_proto::task::ListTasksResponse>, Status> {
        self.observe("ListTasks", async {
            let request = request.into_inner();
            let spiffe_ids = match request.spiffe_id.as_str() {
                "" => Vec::new(),
                id => vec![parse_id("spiffe_id", id)?],
            };
            let filter = lanyard_store::TaskFilter {
                spiffe_ids,
                audience: (!request.audience.is_empty()).then_some(request.audience),
            };
            crate::tasks::list(&self.state, filter, request.page_size, request.page_token).await
        })
        .await
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::Task>, Status> {
        self.observe("GetTask", async {
            crate::tasks::get(&self.state, &[], &request.get_ref().task_id).await
        })
        .await
    }

    async fn revoke_task(
        &self,
        request: Request<pb::RevokeTaskRequest>,
    ) -> Result<Response<lanyard_proto::task::Task>, Status> {
        let actor = admin_actor(&request);
        self.observe("RevokeTask", async {
            let request = request.into_inner();
            crate::tasks::end(
                &self.state,
                Some(&actor),
                &[],
                &request.task_id,
                "task.revoked",
                &request.reason,
            )
            .await
        })
        .await
    }

    async fn list_approvals(
        &self,
        _request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        self.observe("ListApprovals", async {
            let pending = self
                .state
                .store
                .pending_approvals()
                .await
                .map_err(store_status)?;
            Ok(pb::ListApprovalsResponse {
                approvals: pending
                    .iter()
                    .map(crate::tasks::approval_to_proto)
                    .collect(),
            })
        })
        .await
    }

    async fn approve_task(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        let actor = admin_actor(&request);
        self.observe("ApproveTask", async {
            let request = request.into_inner();
            crate::tasks::decide(
                &self.state,
                &actor,
                &request.approval_id,
                true,
                &request.reason,
            )
            .await
        })
        .await
    }

    async fn deny_task(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::Approval>, Status> {
        let actor = admin_actor(&request);
        self.observe("DenyTask", async {
            let request = request.into_inner();
            crate::tasks::decide(
                &self.state,
                &actor,
                &request.approval_id,
                false,
                &request.reason,
            )
            .await
        })
        .await
    }

    async fn reload_policy(
        &self,
        request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let actor = admin_actor(&request);
        self.observe("ReloadPolicy", async {
            let loaded = self.state.reload_policies(&actor).await.map_err(|e| {
                Status::invalid_argument(format!("{e}; the previous policies keep deciding"))
            })?;
            Ok(pb::ReloadPolicyResponse {
                files: loaded.files,
                policy_ids: loaded.bundle.policy_ids(),
            })
        })
        .await
    }

    async fn test_policy(
        &self,
        request: Request<pb::TestPolicyRequest>,
    ) -> Result<Response<pb::TestPolicyResponse>, Status> {
        self.observe("TestPolicy", async {
            let request = request.into_inner();
            let grant = crate::convert::grant_request(&request, self.state.clock.now())?;
            let policies = self.state.policies.current();
            let decision = policies
                .bundle
                .decide(&grant)
                .map_err(|e| invalid("request", e))?;
            Ok(pb::TestPolicyResponse {
                allowed: decision.allowed(),
                approval_required: decision.approval_required(),
                summary: decision.to_string(),
                operations: decision
                    .operations
                    .iter()
                    .map(|o| pb::OperationDecision {
                        operation: o.operation.clone(),
                        outcome: o.outcome.to_string(),
                        policy_ids: o.determining.clone(),
                        errors: o
                            .errors
                            .iter()
                            .map(|e| format!("{}: {}", e.policy_id, e.message))
                            .collect(),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.observe("ListAudit", async {
            let request = request.into_inner();
            let optional = |s: String| (!s.is_empty()).then_some(s);
            let since = match request.since {
                0 => None,
                us => Some(
                    u64::try_from(us)
                        .ok()
                        .and_then(|us| {
                            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_micros(us))
                        })
                        .ok_or_else(|| {
                            invalid("since", "must be a positive Unix time in microseconds")
                        })?,
                ),
            };
            let filter = lanyard_store::AuditFilter {
                from_seq: request.from_seq,
                kind: optional(request.kind),
                actor: optional(request.actor),
                subject: optional(request.subject),
                since,
            };
            let limit = match request.limit {
                0 => DEFAULT_PAGE_SIZE,
                n => n.min(MAX_PAGE_SIZE),
            };
            let records = self
                .state
                .store
                .list_audit(&filter, limit)
                .await
                .map_err(store_status)?;
            let size = self.state.store.audit_size().await.map_err(store_status)?;
            let next_seq = match records.last() {
                Some(last) if records.len() == limit as usize => last.seq + 1,
                _ => 0,
            };
            Ok(pb::ListAuditResponse {
                records: records.iter().map(audit_to_proto).collect(),
                next_seq,
                size,
            })
        })
        .await
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        self.observe("ListCheckpoints", async {
            let request = request.into_inner();
            let after = (request.after_size > 0 || !request.after_signer.is_empty())
                .then_some((request.after_size, request.after_signer.as_str()));
            let limit = match request.limit {
                0 => DEFAULT_PAGE_SIZE,
                n => n.min(MAX_PAGE_SIZE),
            };
            let stored = self
                .state
                .store
                .list_checkpoints(None, after, limit)
                .await
                .map_err(store_status)?;
            // The leaf hashes make a checkpoint as large as the records it added: a page stops
            // at CHECKPOINT_PAGE_BYTES (but holds at least one), and the caller asks for more.
            let mut checkpoints = Vec::new();
            let mut bytes = 0;
            for c in stored {
                bytes += c.note.len() + c.leaf_hashes.len();
                if bytes > CHECKPOINT_PAGE_BYTES && !checkpoints.is_empty() {
                    break;
                }
                checkpoints.push(pb::Checkpoint {
                    size: c.size,
                    signer: c.signer,
                    note: c.note,
                    leaf_hashes: c.leaf_hashes,
                });
            }
            Ok(pb::ListCheckpointsResponse {
                checkpoints,
                verifier_key: self.state.audit.verifier_key(),
                origin: self.state.audit.origin().to_owned(),
                signing_stopped: self.state.audit.fork().unwrap_or_default(),
            })
        })
        .await
    }

    async fn prove_audit(
        &self,
        request: Request<pb::ProveAuditRequest>,
    ) -> Result<Response<pb::AuditProof>, Status> {
        self.observe("ProveAudit", async {
            use crate::audit::ProofError as E;
            let seq = request.get_ref().seq;
            let proof = self
                .state
                .audit
                .prove(&*self.state.store, seq)
                .await
                .map_err(|e| match e {
                    E::NoSuchRecord { .. } => Status::not_found(e.to_string()),
                    E::NotYetSigned { .. } => Status::unavailable(e.to_string()),
                    E::Changed { .. } => Status::data_loss(e.to_string()),
                    E::Store(e) => store_status(e),
                    E::Internal(message) => Status::internal(message),
                })?;
            Ok(pb::AuditProof {
                record: Some(audit_to_proto(&proof.record)),
                tree_size: proof.tree_size,
                path: proof.path.iter().map(|h| h.to_vec()).collect(),
                checkpoint: proof.checkpoint,
                verifier_key: self.state.audit.verifier_key(),
            })
        })
        .await
    }

    async fn get_o_auth_metadata(
        &self,
        _request: Request<pb::GetOAuthMetadataRequest>,
    ) -> Result<Response<pb::GetOAuthMetadataResponse>, Status> {
        let oauth = self.state.oauth.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "the OAuth authorization server is off: configure [oauth] in the server's TOML",
            )
        })?;
        Ok(Response::new(pb::GetOAuthMetadataResponse {
            issuer: oauth.issuer.clone(),
            metadata_json: oauth.metadata().to_string(),
        }))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.observe("Health", self.health_check()).await
    }

    async fn list_servers(
        &self,
        _request: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        self.observe("ListServers", async {
            let records = self
                .state
                .store
                .list_servers()
                .await
                .map_err(store_status)?;
            let now = self.state.clock.now();
            let interval = self.state.config.heartbeat_interval;
            let servers = records
                .into_iter()
                .map(|record| {
                    let live = crate::heartbeat::is_live(&record, now, interval);
                    let info = record.info;
                    pb::ServerStatus {
                        answering: info.server_id == self.state.authority.server_id(),
                        retired: info.signs_until < now,
                        live,
                        node_address: info.node_address,
                        health_address: info.health_address.unwrap_or_default(),
                        version: info.version,
                        started_at: unix_seconds(info.started_at),
                        last_seen: unix_seconds(record.last_seen),
                        ca_expires_at: info.ca_expires_at.map_or(0, unix_seconds),
                        signs_until: unix_seconds(info.signs_until),
                        server_id: info.server_id,
                    }
                })
                .collect();
            Ok(pb::ListServersResponse { servers })
        })
        .await
    }
}
