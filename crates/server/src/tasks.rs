//! Task grants, as the node API serves them: the agent vouches for the workload (through an entry
//! it is authorized for), the server's Cedar policies decide at the moment of the call, and the
//! decision is written to the audit log before anything is handed out: a granted task is stored
//! with its record in one transaction, and a token whose record could not be written is never
//! returned.
//!
//! The token is a JWT-SVID (so every SPIFFE validator accepts it) with one namespaced claim:
//! `"lanyard": {"txn": <task id>, "ops": [...], "purpose": …, "obo": …}`.

use std::time::{Duration, SystemTime};

use lanyard_ca::JwtSvidRequest;
use lanyard_core::{RegistrationEntry, SpiffeId};
use lanyard_policy::{Decision, GrantRequest, Outcome};
use lanyard_proto::task as pb;
use lanyard_store::{Approval, ApprovalState, AttestedAgent, TaskRecord};
use serde_json::json;
use tonic::Status;

use crate::admin::{ca_status, store_status};
use crate::delegation::{Delegation, child_ttl};
use crate::identity::{IdentityProviders, Principal};
use crate::{ServerState, audit, unix_seconds};

/// No task credential lives longer than this, whatever is asked or allowed.
pub(crate) const MAX_TASK_TTL: Duration = Duration::from_secs(15 * 60);
/// A requested TTL above this is a mistake, not a wish to be capped: it is refused.
const MAX_REQUESTED_TTL_SECONDS: i64 = 24 * 3600;
/// The namespaced claim that carries the task.
pub(crate) const CLAIM: &str = "lanyard";

/// Decides a task for the workload that holds `entry`, asked for by `agent`; records the
/// decision; on a grant, mints and stores the task and returns it with its token.
pub(crate) async fn begin(
    state: &ServerState,
    agent: &AttestedAgent,
    entry: &RegistrationEntry,
    request: pb::BeginTaskRequest,
    approved: Option<&Approval>,
) -> Result<pb::BeginTaskResponse, Status> {
    let now = state.clock.now();
    let workload = entry.spiffe_id();
    let audience = clipped(&request.audience);
    let refused = |reason: String, status: Status| {
        let audience = audience.clone();
        async move {
            state
                .record_as(
                    "task.refused",
                    workload.as_ref(),
                    &audience,
                    json!({
                        "agent": agent.spiffe_id.to_string(),
                        "entry_id": entry.id().to_string(),
                        "reason": reason,
                    }),
                )
                .await;
            status
        }
    };
    let requested_ttl = match request.ttl_seconds {
        0 => MAX_TASK_TTL.as_secs(),
        n if !(1..=MAX_REQUESTED_TTL_SECONDS).contains(&n) => {
            let message = format!(
                "ttl_seconds {n} is out of range: give 1 to {MAX_REQUESTED_TTL_SECONDS} (task credentials last at most {} s), or 0 for the longest allowed",
                MAX_TASK_TTL.as_secs()
            );
            return Err(refused(message.clone(), Status::invalid_argument(message)).await);
        }
        n => n.unsigned_abs(),
    };
    let policies = state.policies.current();
    // A delegated task: the parent must check out (or, once approved, still be live), and the
    // child only narrow it. And whom the task acts for.
    let asked = match approved {
        None => asked(state, &request, requested_ttl, &policies.identity, now).await,
        Some(approval) => resumed(state, approval, &request, now).await,
    };
    let (delegated, principal) = match asked {
        Ok(asked) => asked,
        Err(reason) => {
            return Err(refused(reason.clone(), Status::permission_denied(reason)).await);
        }
    };
    let (on_behalf_of, on_behalf_of_verified, on_behalf_of_issuer) =
        Principal::grant_context(principal.as_ref());
    let grant = GrantRequest {
        principal: workload.clone(),
        selectors: entry.selectors().clone(),
        audience: request.audience.clone(),
        operations: request.operations.clone(),
        ttl_seconds: requested_ttl,
        purpose: request.purpose.clone(),
        on_behalf_of,
        on_behalf_of_verified,
        on_behalf_of_issuer,
        delegation_depth: delegated.as_ref().map_or(0, |d| d.depth),
        root_principal: delegated
            .as_ref()
            .map(|d| d.parent.root_principal())
            .unwrap_or_default(),
        parent_workload: delegated
            .as_ref()
            .map(|d| d.parent.task.spiffe_id.to_string())
            .unwrap_or_default(),
        now,
    };
    let decision = match policies.bundle.decide(&grant) {
        Ok(decision) => decision,
        Err(e) => {
            let message = format!("invalid task request: {e}");
            return Err(refused(message.clone(), Status::invalid_argument(message)).await);
        }
    };
    let denial = if !decision.allowed() {
        Some(refusal_message(&request.audience, &decision))
    } else if principal.as_ref().is_some_and(|p| !p.verified())
        && !policies.bundle.accepts_unverified_principal(&decision)
    {
        Some(format!(
            "on_behalf_of {:?} is a name no trusted identity provider vouched for, and the policies that allow this task do not accept one (a permit must say @on_behalf_of(\"unverified\")); send the person's token from the identity provider instead",
            clipped(&grant.on_behalf_of)
        ))
    } else {
        None
    };
    if let Some(message) = denial {
        state
            .record_as(
                "task.denied",
                workload.as_ref(),
                &clipped(&request.audience),
                json!({
                    "agent": agent.spiffe_id.to_string(),
                    "entry_id": entry.id().to_string(),
                    "audience": request.audience,
                    "operations": request.operations,
                    "on_behalf_of": principal.as_ref().map(Principal::claim),
                    "decision": decision_details(&decision),
                    "policy_ids": decision.policy_ids(),
                    "reason": message,
                }),
            )
            .await;
        return Err(Status::permission_denied(message));
    }
    if decision.approval_required() && approved.is_none() {
        let asked = Asked {
            request: &request,
            principal: principal.as_ref(),
            delegated: delegated.as_ref(),
        };
        return ask_approval(state, agent, entry, asked, &decision, now).await;
    }
    let limit = policies.bundle.ttl_limit(&decision).unwrap_or(u64::MAX);
    let mut ttl = Duration::from_secs(requested_ttl.min(limit).min(MAX_TASK_TTL.as_secs()));
    if let Some(delegated) = &delegated {
        ttl = child_ttl(ttl, now, delegated.not_after);
    }
    let task_id = random_id();
    let token_id = random_id();
    let mut claim = serde_json::Map::new();
    claim.insert("txn".into(), json!(task_id));
    claim.insert("ops".into(), json!(request.operations));
    if !request.purpose.is_empty() {
        claim.insert("purpose".into(), json!(request.purpose));
    }
    if let Some(principal) = &principal {
        claim.insert("obo".into(), principal.claim());
    }
    if let Some(approval) = approved {
        claim.insert(
            "approval".into(),
            json!({ "id": approval.id, "by": approval.decided_by }),
        );
    }
    let mut extra_claims = serde_json::Map::new();
    if let Some(delegated) = &delegated {
        claim.insert("parent".into(), json!(delegated.parent.task.id));
        claim.insert("depth".into(), json!(delegated.depth));
        claim.insert("chain".into(), json!(delegated.parent.chain));
        extra_claims.insert("act".into(), delegated.parent.child_act());
    }
    extra_claims.insert(CLAIM.into(), serde_json::Value::Object(claim));
    let svid = state
        .authority
        .ca
        .mint_jwt_svid(&JwtSvidRequest {
            spiffe_id: workload.clone(),
            audience: vec![request.audience.clone()],
            ttl: Some(ttl),
            jti: Some(token_id.clone()),
            extra_claims,
        })
        .map_err(ca_status)?;
    let task = TaskRecord {
        id: task_id.clone(),
        spiffe_id: workload.clone(),
        entry_id: entry.id().clone(),
        agent_id: agent.spiffe_id.clone(),
        audience: request.audience.clone(),
        operations: request.operations.clone(),
        purpose: request.purpose.clone(),
        on_behalf_of: grant.on_behalf_of.clone(),
        policy_ids: decision.policy_ids(),
        token_id: token_id.clone(),
        issued_at: svid.issued_at,
        expires_at: svid.expires_at,
        ended_at: None,
        parent_id: delegated.as_ref().map(|d| d.parent.task.id.clone()),
        depth: delegated.as_ref().map_or(0, |d| d.depth),
    };
    let record = audit::draft(
        "task.granted",
        workload.as_ref(),
        &task_id,
        json!({
            "agent": agent.spiffe_id.to_string(),
            "entry_id": entry.id().to_string(),
            "audience": request.audience,
            "operations": request.operations,
            "purpose": request.purpose,
            "on_behalf_of": principal.as_ref().map(Principal::claim),
            "parent_id": task.parent_id,
            "depth": task.depth,
            "approval_id": approved.map(|a| a.id.clone()),
            "approved_by": approved.map(|a| a.decided_by.clone()),
            "policy_ids": decision.policy_ids(),
            "jti": token_id,
            "token_sha256": sha256_hex(svid.token.as_bytes()),
            "issued_at": unix_seconds(svid.issued_at),
            "expires_at": unix_seconds(svid.expires_at),
        }),
        now,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Some(approval) = approved {
        // Claim the approval first: of two callers collecting one grant, one gets it.
        let collected = audit::draft(
            "task.approval_collected",
            workload.as_ref(),
            &approval.id,
            json!({ "task_id": task_id }),
            now,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        state
            .store
            .decide_approval(
                &approval.id,
                ApprovalState::Approved,
                ApprovalState::Granted,
                "",
                "",
                Some(&task_id),
                &collected,
            )
            .await
            .map_err(|e| match e {
                lanyard_store::Error::Conflict { .. } => {
                    Status::failed_precondition("this approval was collected already")
                }
                other => store_status(other),
            })?;
    }
    state
        .store
        .create_task(&task, &record)
        .await
        .map_err(store_status)?;
    state.metrics.signed("task");
    Ok(pb::BeginTaskResponse {
        task: Some(task_to_proto(&task)),
        token: svid.token,
        approval_id: String::new(),
    })
}

/// Longest one AwaitApproval call waits.
const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting call looks at the approval (several servers may share it).
const APPROVAL_POLL: Duration = Duration::from_millis(100);

/// What a grant waiting for approval was asked for, as checked when it was asked.
struct Asked<'a> {
    request: &'a pb::BeginTaskRequest,
    principal: Option<&'a Principal>,
    delegated: Option<&'a Delegation>,
}

/// The parent (for a delegated task) and the principal of a request asked now.
async fn asked(
    state: &ServerState,
    request: &pb::BeginTaskRequest,
    requested_ttl: u64,
    identity: &IdentityProviders,
    now: SystemTime,
) -> Result<(Option<Delegation>, Option<Principal>), String> {
    let delegated = Delegation::for_request(state, request, requested_ttl, now).await?;
    let named = identity.resolve(&request.on_behalf_of, now)?;
    let Some(delegation) = &delegated else {
        return Ok((None, named));
    };
    // A delegated task acts for whom its parent acts.
    if named.is_some() && named != delegation.parent.principal {
        return Err(
            "a delegated task acts for whom its parent acts: on_behalf_of differs".to_owned(),
        );
    }
    let principal = delegation.parent.principal.clone();
    Ok((delegated, principal))
}

/// The parent and the principal of an approved request, as they were checked when it was
/// asked; the parent task must still be live.
async fn resumed(
    state: &ServerState,
    approval: &Approval,
    request: &pb::BeginTaskRequest,
    now: SystemTime,
) -> Result<(Option<Delegation>, Option<Principal>), String> {
    let stored = stored_request(approval)
        .map_err(|e| format!("the stored request of this approval is unreadable: {e}"))?;
    let delegated = match &stored.parent {
        None => None,
        Some(parent) => Some(
            Delegation::resume(state, parent, &request.audience, &request.operations, now).await?,
        ),
    };
    Ok((delegated, stored.principal))
}

/// Stores a grant the policies allowed on condition of a human's approval, and tells the caller
/// to wait for it.
async fn ask_approval(
    state: &ServerState,
    agent: &AttestedAgent,
    entry: &RegistrationEntry,
    asked: Asked<'_>,
    decision: &Decision,
    now: SystemTime,
) -> Result<pb::BeginTaskResponse, Status> {
    let request = asked.request;
    let policy_ids: Vec<String> = {
        let mut ids: Vec<String> = decision
            .operations
            .iter()
            .flat_map(|o| o.approval.iter().cloned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let approval = Approval {
        id: random_id(),
        spiffe_id: entry.spiffe_id().clone(),
        request: json!({
            "entry_id": entry.id().to_string(),
            "audience": request.audience,
            "operations": request.operations,
            "ttl_seconds": request.ttl_seconds,
            "purpose": request.purpose,
            "principal": asked.principal,
            "parent": asked.delegated.map(Delegation::stored),
        })
        .to_string(),
        policy_ids: policy_ids.clone(),
        state: ApprovalState::Pending,
        decided_by: String::new(),
        reason: String::new(),
        task_id: None,
        created_at: now,
        expires_at: now + state.config.approval_timeout,
        decided_at: None,
    };
    let record = audit::draft(
        "task.pending",
        entry.spiffe_id().as_ref(),
        &approval.id,
        json!({
            "agent": agent.spiffe_id.to_string(),
            "entry_id": entry.id().to_string(),
            "audience": request.audience,
            "operations": request.operations,
            "purpose": request.purpose,
            "on_behalf_of": asked.principal.map(Principal::claim),
            "parent_id": asked.delegated.map(|d| d.parent.task.id.clone()),
            "policy_ids": policy_ids,
        }),
        now,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    state
        .store
        .create_approval(&approval, &record)
        .await
        .map_err(store_status)?;
    Ok(pb::BeginTaskResponse {
        task: None,
        token: String::new(),
        approval_id: approval.id,
    })
}

/// Waits for the decision on approval `id` (asked by one of `holders`), at most `wait`: the
/// grant once approved (collected exactly once), the reason if denied or timed out.
pub(crate) async fn await_approval(
    state: &ServerState,
    agent: &AttestedAgent,
    entry_for: impl Fn(&str) -> Result<RegistrationEntry, Status>,
    holders: &[SpiffeId],
    id: &str,
    wait_seconds: u32,
) -> Result<pb::BeginTaskResponse, Status> {
    let wait = match wait_seconds {
        0 => Duration::from_secs(30),
        n => Duration::from_secs(u64::from(n)).min(MAX_APPROVAL_WAIT),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let approval = state
            .store
            .get_approval(id)
            .await
            .map_err(store_status)?
            .filter(|a| holders.contains(&a.spiffe_id))
            .ok_or_else(|| Status::not_found(format!("no approval {:?}", clipped(id))))?;
        match approval.state {
            ApprovalState::Approved => {
                let stored = stored_request(&approval)
                    .map_err(|e| Status::internal(format!("stored approval request: {e}")))?;
                let entry = entry_for(&stored.entry_id)?;
                // The policies decide again: one changed since may forbid it now.
                return begin(state, agent, &entry, stored.request, Some(&approval)).await;
            }
            ApprovalState::Denied => {
                return Err(Status::permission_denied(format!(
                    "the grant was denied by {}: {}",
                    approval.decided_by, approval.reason
                )));
            }
            ApprovalState::Granted => {
                return Err(Status::failed_precondition(format!(
                    "this approval was collected already (task {})",
                    approval.task_id.unwrap_or_default()
                )));
            }
            ApprovalState::Pending => {}
        }
        if state.clock.now() >= approval.expires_at {
            let record = audit::draft(
                "task.approval_timed_out",
                &format!("server:{}", state.authority.server_id()),
                &approval.id,
                json!({}),
                state.clock.now(),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
            // Whoever gets here first records it; the others see it denied.
            let _ = state
                .store
                .decide_approval(
                    &approval.id,
                    ApprovalState::Pending,
                    ApprovalState::Denied,
                    "server",
                    "no decision before the approval timed out",
                    None,
                    &record,
                )
                .await;
            continue;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(
                "the grant is still waiting for approval; call AwaitApproval again",
            ));
        }
        tokio::time::sleep(APPROVAL_POLL).await;
    }
}

/// The request an approval holds, as `ask_approval` stored it.
struct StoredRequest {
    /// The entry it was asked through.
    entry_id: String,
    /// The task request to decide again once approved (`on_behalf_of`: the principal's name).
    request: pb::BeginTaskRequest,
    principal: Option<Principal>,
    /// The checked parent of a delegated task ([`Delegation::stored`]).
    parent: Option<serde_json::Value>,
}

fn stored_request(approval: &Approval) -> Result<StoredRequest, serde_json::Error> {
    let stored: serde_json::Value = serde_json::from_str(&approval.request)?;
    let text = |k: &str| stored[k].as_str().unwrap_or_default().to_owned();
    let principal: Option<Principal> = serde_json::from_value(stored["principal"].clone())?;
    let request = pb::BeginTaskRequest {
        audience: text("audience"),
        operations: stored["operations"]
            .as_array()
            .map(|ops| {
                ops.iter()
                    .filter_map(|o| o.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        ttl_seconds: stored["ttl_seconds"].as_i64().unwrap_or(0),
        spiffe_id: String::new(),
        purpose: text("purpose"),
        on_behalf_of: principal
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        parent_token: String::new(),
    };
    Ok(StoredRequest {
        entry_id: text("entry_id"),
        request,
        principal,
        parent: Some(stored["parent"].clone()).filter(|p| !p.is_null()),
    })
}

/// The admin view of an approval.
pub(crate) fn approval_to_proto(approval: &Approval) -> lanyard_proto::admin::Approval {
    let request = stored_request(approval)
        .map(|stored| stored.request)
        .unwrap_or_default();
    lanyard_proto::admin::Approval {
        id: approval.id.clone(),
        spiffe_id: approval.spiffe_id.to_string(),
        audience: request.audience,
        operations: request.operations,
        purpose: request.purpose,
        on_behalf_of: request.on_behalf_of,
        policy_ids: approval.policy_ids.clone(),
        state: match approval.state {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Granted => "granted",
        }
        .to_owned(),
        decided_by: approval.decided_by.clone(),
        reason: approval.reason.clone(),
        task_id: approval.task_id.clone().unwrap_or_default(),
        created_at: unix_seconds(approval.created_at),
        expires_at: unix_seconds(approval.expires_at),
    }
}

/// An admin approves or denies a pending grant.
pub(crate) async fn decide(
    state: &ServerState,
    actor: &str,
    id: &str,
    approve: bool,
    reason: &str,
) -> Result<lanyard_proto::admin::Approval, Status> {
    let (to, kind) = if approve {
        (ApprovalState::Approved, "task.approved")
    } else {
        (ApprovalState::Denied, "task.approval_denied")
    };
    let record = audit::draft(
        kind,
        actor,
        &clipped(id),
        json!({ "reason": clipped(reason) }),
        state.clock.now(),
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let approval = state
        .store
        .decide_approval(
            id,
            ApprovalState::Pending,
            to,
            actor,
            &clipped(reason),
            None,
            &record,
        )
        .await
        .map_err(|e| match e {
            lanyard_store::Error::Conflict { detail, .. } => {
                Status::failed_precondition(format!("approval {id:?} is not pending: {detail}"))
            }
            other => store_status(other),
        })?;
    Ok(approval_to_proto(&approval))
}

/// What a refused caller is told: the first operation refused, and the rule that refused it.
pub(crate) fn refusal_message(audience: &str, decision: &Decision) -> String {
    let Some(op) = decision
        .operations
        .iter()
        .find(|o| o.outcome != Outcome::Allowed)
    else {
        return "the task was refused".to_owned();
    };
    let target = format!("operation {:?} on tool {:?}", op.operation, audience);
    match op.outcome {
        Outcome::Forbidden => format!(
            "{target} is forbidden by policy {}",
            quoted(&op.determining)
        ),
        Outcome::EvaluationFailed => format!(
            "{target} is refused: policy {} could not be evaluated for this request",
            quoted(&op.determining)
        ),
        Outcome::NoPolicies => {
            format!("{target} is refused: the server has no grant policy (every grant is refused)")
        }
        _ => format!("{target} is refused: no policy permits it"),
    }
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each operation's outcome and the policies that decided it, for the audit record.
pub(crate) fn decision_details(decision: &Decision) -> serde_json::Value {
    decision
        .operations
        .iter()
        .map(|o| {
            json!({
                "operation": o.operation,
                "outcome": o.outcome.to_string(),
                "policy_ids": o.determining,
            })
        })
        .collect()
}

/// A subject or free text from a caller, cut to what a record may hold.
fn clipped(text: &str) -> String {
    crate::limits::clip(text, crate::limits::MAX_LOGGED_TEXT)
}

/// The task with `id`, if it was granted to one of `holders`. Another workload's task is
/// `NotFound`, as an unknown one is: a caller learns nothing of tasks that are not its own.
pub(crate) async fn get(
    state: &ServerState,
    holders: &[SpiffeId],
    id: &str,
) -> Result<pb::Task, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("task_id is required"));
    }
    match state.store.get_task(id).await.map_err(store_status)? {
        Some(task) if holders.is_empty() || holders.contains(&task.spiffe_id) => {
            Ok(task_to_proto(&task))
        }
        _ => Err(Status::not_found(format!("no task {:?}", clipped(id)))),
    }
}

pub(crate) fn task_to_proto(task: &TaskRecord) -> pb::Task {
    pb::Task {
        id: task.id.clone(),
        spiffe_id: task.spiffe_id.to_string(),
        audience: task.audience.clone(),
        operations: task.operations.clone(),
        purpose: task.purpose.clone(),
        on_behalf_of: task.on_behalf_of.clone(),
        policy_ids: task.policy_ids.clone(),
        issued_at: unix_seconds(task.issued_at),
        expires_at: unix_seconds(task.expires_at),
        ended_at: task.ended_at.map_or(0, unix_seconds),
        token_id: task.token_id.clone(),
        parent_id: task.parent_id.clone().unwrap_or_default(),
        depth: task.depth,
    }
}

/// 128 random bits in hex: task ids and token ids.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG does not fail on Linux; an all-zero id would still be unique per store
    // (the insert refuses a duplicate).
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A page of tasks matching `filter`.
pub(crate) async fn list(
    state: &ServerState,
    filter: lanyard_store::TaskFilter,
    page_size: u32,
    page_token: String,
) -> Result<pb::ListTasksResponse, Status> {
    let page = state
        .store
        .list_tasks(&filter, &crate::admin::page_request(page_size, page_token))
        .await
        .map_err(store_status)?;
    Ok(pb::ListTasksResponse {
        tasks: page.items.iter().map(task_to_proto).collect(),
        next_page_token: page.next_token.unwrap_or_default(),
    })
}

/// Ends the task `id` now, and every task delegated from it, if it was granted to one of
/// `holders` (empty: any, for an administrator), recording `kind` (`task.ended` by its owner,
/// `task.revoked` by an admin) for each in the same transaction, and pushes the new revocation
/// list to every agent. `actor` `None`: the task's own workload ends it. Ending an ended task
/// answers with the task as it is and records nothing.
pub(crate) async fn end(
    state: &ServerState,
    actor: Option<&str>,
    holders: &[SpiffeId],
    id: &str,
    kind: &str,
    reason: &str,
) -> Result<pb::Task, Status> {
    // The same answer for another workload's task as for an unknown one.
    let task = get(state, holders, id).await?;
    let record = audit::draft(
        kind,
        actor.unwrap_or(&task.spiffe_id),
        &task.id,
        json!({
            "spiffe_id": task.spiffe_id,
            "audience": task.audience,
            "jti": task.token_id,
            "expires_at": task.expires_at,
            "reason": clipped(reason),
        }),
        state.clock.now(),
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let (ended, recorded) = state
        .store
        .end_task(&task.id, &record)
        .await
        .map_err(store_status)?;
    if !recorded.is_empty() {
        state.revocations_changed().await;
    }
    Ok(task_to_proto(&ended))
}
