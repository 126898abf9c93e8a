//! Task grants, as the node API serves them: the agent vouches for the workload (through an entry
//! it is authorized for), the server's Cedar policies decide at the moment of the call, and the
//! decision is written to the audit log before anything is handed out: a granted task is stored
//! with its record in one transaction, and a token whose record could not be written is never
//! returned.
//!
//! The token is a JWT-SVID (so every SPIFFE validator accepts it) with one namespaced claim:
//! `"lanyard": {"txn": <task id>, "ops": [...], "purpose": …, "obo": …}`.

use std::time::Duration;

use lanyard_ca::JwtSvidRequest;
use lanyard_core::{RegistrationEntry, SpiffeId};
use lanyard_policy::{Decision, GrantRequest, Outcome};
use lanyard_proto::task as pb;
use lanyard_store::{AttestedAgent, TaskRecord};
use serde_json::json;
use tonic::Status;

use crate::admin::{ca_status, store_status};
use crate::delegation::{Parent, child_ttl};
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
    // A delegated task: the parent must check out, and the child only narrow it.
    let mut on_behalf_of = request.on_behalf_of.clone();
    let mut not_after = None;
    let mut delegated = None;
    if !request.parent_token.is_empty() {
        let narrowed = match Parent::verify(state, &request.parent_token, now).await {
            Ok(parent) => parent
                .narrow(
                    &request.audience,
                    &request.operations,
                    &request.on_behalf_of,
                    state.config.max_delegation_depth,
                )
                .map(|narrowed| (parent, narrowed)),
            Err(reason) => Err(reason),
        };
        let (parent, narrowed) = match narrowed {
            Ok(ok) => ok,
            Err(reason) => {
                return Err(refused(reason.clone(), Status::permission_denied(reason)).await);
            }
        };
        if request.ttl_seconds > 0 && now + Duration::from_secs(requested_ttl) > narrowed.not_after
        {
            let reason =
                "a delegated task may only narrow its parent: it would expire after the parent"
                    .to_owned();
            return Err(refused(reason.clone(), Status::permission_denied(reason)).await);
        }
        on_behalf_of = parent.task.on_behalf_of.clone();
        not_after = Some(narrowed.not_after);
        delegated = Some((parent, narrowed.depth));
    }
    let grant = GrantRequest {
        principal: workload.clone(),
        selectors: entry.selectors().clone(),
        audience: request.audience.clone(),
        operations: request.operations.clone(),
        ttl_seconds: requested_ttl,
        purpose: request.purpose.clone(),
        on_behalf_of: on_behalf_of.clone(),
        delegation_depth: delegated.as_ref().map_or(0, |(_, depth)| *depth),
        root_principal: delegated
            .as_ref()
            .map(|(parent, _)| parent.root_principal())
            .unwrap_or_default(),
        parent_workload: delegated
            .as_ref()
            .map(|(parent, _)| parent.task.spiffe_id.to_string())
            .unwrap_or_default(),
        now,
    };
    let policies = state.policies.current();
    let decision = match policies.bundle.decide(&grant) {
        Ok(decision) => decision,
        Err(e) => {
            let message = format!("invalid task request: {e}");
            return Err(refused(message.clone(), Status::invalid_argument(message)).await);
        }
    };
    if !decision.allowed() {
        let message = refusal_message(&request.audience, &decision);
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
                    "decision": decision_details(&decision),
                    "policy_ids": decision.policy_ids(),
                    "reason": message,
                }),
            )
            .await;
        return Err(Status::permission_denied(message));
    }
    if decision.approval_required() {
        let message = format!(
            "policy {} requires a human's approval for this grant, and approvals are not supported by this server yet",
            decision
                .operations
                .iter()
                .flat_map(|o| o.approval.iter())
                .next()
                .map(|id| format!("{id:?}"))
                .unwrap_or_default()
        );
        return Err(refused(message.clone(), Status::failed_precondition(message)).await);
    }

    let limit = policies.bundle.ttl_limit(&decision).unwrap_or(u64::MAX);
    let mut ttl = Duration::from_secs(requested_ttl.min(limit).min(MAX_TASK_TTL.as_secs()));
    if let Some(not_after) = not_after {
        ttl = child_ttl(ttl, now, not_after);
    }
    let task_id = random_id();
    let token_id = random_id();
    let mut claim = serde_json::Map::new();
    claim.insert("txn".into(), json!(task_id));
    claim.insert("ops".into(), json!(request.operations));
    if !request.purpose.is_empty() {
        claim.insert("purpose".into(), json!(request.purpose));
    }
    if !on_behalf_of.is_empty() {
        claim.insert("obo".into(), json!(on_behalf_of));
    }
    let mut extra_claims = serde_json::Map::new();
    if let Some((parent, depth)) = &delegated {
        claim.insert("parent".into(), json!(parent.task.id));
        claim.insert("depth".into(), json!(depth));
        claim.insert("chain".into(), json!(parent.chain));
        extra_claims.insert("act".into(), parent.child_act());
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
        on_behalf_of: on_behalf_of.clone(),
        policy_ids: decision.policy_ids(),
        token_id: token_id.clone(),
        issued_at: svid.issued_at,
        expires_at: svid.expires_at,
        ended_at: None,
        parent_id: delegated.as_ref().map(|(parent, _)| parent.task.id.clone()),
        depth: delegated.as_ref().map_or(0, |(_, depth)| *depth),
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
            "on_behalf_of": on_behalf_of,
            "parent_id": task.parent_id,
            "depth": task.depth,
            "policy_ids": decision.policy_ids(),
            "jti": token_id,
            "token_sha256": sha256_hex(svid.token.as_bytes()),
            "issued_at": unix_seconds(svid.issued_at),
            "expires_at": unix_seconds(svid.expires_at),
        }),
        now,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    state
        .store
        .create_task(&task, &record)
        .await
        .map_err(store_status)?;
    state.metrics.signed("task");
    Ok(pb::BeginTaskResponse {
        task: Some(task_to_proto(&task)),
        token: svid.token,
    })
}

/// What a refused caller is told: the first operation refused, and the rule that refused it.
fn refusal_message(audience: &str, decision: &Decision) -> String {
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
fn decision_details(decision: &Decision) -> serde_json::Value {
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
fn random_id() -> String {
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
/// list to every agent. Ending an ended task
/// answers with the task as it is and records nothing.
pub(crate) async fn end(
    state: &ServerState,
    actor: &str,
    holders: &[SpiffeId],
    id: &str,
    kind: &str,
    reason: &str,
) -> Result<pb::Task, Status> {
    // The same answer for another workload's task as for an unknown one.
    let task = get(state, holders, id).await?;
    let record = audit::draft(
        kind,
        actor,
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
