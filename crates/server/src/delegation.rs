//! Delegated tasks: a workload hands part of its task to another by sending the parent task's
//! token with `BeginTask`. The server checks the parent token (its own signature, not expired, the
//! task it names exists, carries this very token and has not ended) and grants the child only if
//! it narrows the parent: the same tool, a subset of the operations, no later expiry, and no more
//! than `max_delegation_depth` hops below the root. The chain travels in the token twice: root
//! first in the `lanyard` claim (`chain`), and as nested RFC 8693 `act` claims with the most
//! recent delegator outermost. A child acts for whom its root acts (the `obo` of the parent).
//!
//! A child that needs a human's approval waits with its parent's checked facts stored
//! ([`Delegation::stored`]); once approved, the parent task is read again and must still be live
//! ([`Delegation::resume`]).

use std::time::{Duration, SystemTime};

use lanyard_core::{BundleSet, verify_jwt_svid};
use lanyard_store::TaskRecord;
use serde_json::{Map, Value, json};

use crate::ServerState;
use crate::identity::Principal;
use crate::tasks::CLAIM;

/// A parent task whose token checked out.
#[derive(Debug)]
pub(crate) struct Parent {
    pub(crate) task: TaskRecord,
    /// Every hop from the root to the parent, root first: `{sub, txn, ops}`.
    pub(crate) chain: Vec<Value>,
    /// The parent's `act` claim, if it was itself delegated.
    act: Option<Value>,
    /// Whom the parent acts for.
    pub(crate) principal: Option<Principal>,
}

/// What a child may have, given its parent.
#[derive(Debug)]
pub(crate) struct Narrowed {
    pub(crate) depth: u32,
    /// The latest the child may expire: the parent's expiry.
    pub(crate) not_after: SystemTime,
}

/// A request's parent task, checked, and what the child may have.
#[derive(Debug)]
pub(crate) struct Delegation {
    pub(crate) parent: Parent,
    pub(crate) depth: u32,
    pub(crate) not_after: SystemTime,
}

impl Delegation {
    /// `None` for a request without a parent token; otherwise the checked parent and the
    /// child's bounds, or the reason the request does not only narrow it.
    pub(crate) async fn for_request(
        state: &ServerState,
        request: &lanyard_proto::task::BeginTaskRequest,
        requested_ttl: u64,
        now: SystemTime,
    ) -> Result<Option<Self>, String> {
        if request.parent_token.is_empty() {
            return Ok(None);
        }
        let parent = Parent::verify(state, &request.parent_token, now).await?;
        let narrowed = parent.narrow(
            &request.audience,
            &request.operations,
            state.config.max_delegation_depth,
        )?;
        // An explicit lifetime past the parent's is a widening; 0 (the longest allowed) is cut.
        if request.ttl_seconds > 0 && now + Duration::from_secs(requested_ttl) > narrowed.not_after
        {
            return Err(
                "a delegated task may only narrow its parent: it would expire after the parent"
                    .to_owned(),
            );
        }
        Ok(Some(Self {
            parent,
            depth: narrowed.depth,
            not_after: narrowed.not_after,
        }))
    }

    /// What a pending approval keeps of the checked parent: its task id, chain, `act` and
    /// principal (the token itself is not stored).
    pub(crate) fn stored(&self) -> Value {
        json!({
            "task_id": self.parent.task.id,
            "chain": self.parent.chain,
            "act": self.parent.act,
            "principal": self.parent.principal,
        })
    }

    /// The delegation of an approved child, from what [`Delegation::stored`] kept: the parent
    /// task must still be live, and the child still only narrow it.
    pub(crate) async fn resume(
        state: &ServerState,
        stored: &Value,
        audience: &str,
        operations: &[String],
        now: SystemTime,
    ) -> Result<Self, String> {
        let task_id = stored
            .get("task_id")
            .and_then(Value::as_str)
            .ok_or("the stored parent of this approval is unreadable")?;
        let parent = Parent {
            task: live_task(state, task_id, "parent", now).await?,
            chain: stored
                .get("chain")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            act: stored.get("act").filter(|a| !a.is_null()).cloned(),
            principal: stored
                .get("principal")
                .filter(|p| !p.is_null())
                .map(|p| serde_json::from_value(p.clone()))
                .transpose()
                .map_err(|e| format!("the stored parent of this approval is unreadable: {e}"))?,
        };
        let narrowed = parent.narrow(audience, operations, state.config.max_delegation_depth)?;
        Ok(Self {
            parent,
            depth: narrowed.depth,
            not_after: narrowed.not_after,
        })
    }
}

/// The task `id`, if it exists, has not ended and has not expired. `role` names it in the
/// reason ("the parent task has ended").
async fn live_task(
    state: &ServerState,
    id: &str,
    role: &str,
    now: SystemTime,
) -> Result<TaskRecord, String> {
    let task = state
        .store
        .get_task(id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read a task");
            format!("the {role} task cannot be read now; retry later")
        })?
        .ok_or_else(|| format!("the {role} task does not exist"))?;
    if task.ended_at.is_some() {
        return Err(format!("the {role} task has ended"));
    }
    // Checked on the record too: JWT validation allows a little clock skew.
    if task.expires_at <= now {
        return Err(format!("the {role} task has expired"));
    }
    Ok(task)
}

/// The live task a task token names, with the token's verified claims, if the token is the
/// task's own: signed by this trust domain, its `jti` and `sub` those of the task (a token of
/// another task naming it is forged). `role` names the token in the reason ("parent",
/// "subject"), which is meant for the caller.
pub(crate) async fn live_task_of(
    state: &ServerState,
    token: &str,
    role: &str,
    now: SystemTime,
) -> Result<(TaskRecord, Map<String, Value>), String> {
    let audience = unverified_audience(token)
        .ok_or_else(|| format!("the {role} token is not a task token"))?;
    let mut bundles = BundleSet::new();
    bundles.insert(state.authority.trust_bundle());
    let verified = verify_jwt_svid(token, &audience, &bundles, now)
        .map_err(|e| format!("the {role} token is not valid: {e}"))?;
    let claims = verified.claims();
    let task_id = claims
        .get(CLAIM)
        .and_then(|c| c.get("txn"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the {role} token is not a task token"))?;
    let task = live_task(state, task_id, role, now).await?;
    if claims.get("jti").and_then(Value::as_str) != Some(task.token_id.as_str())
        || verified.spiffe_id() != &task.spiffe_id
    {
        return Err(format!(
            "the {role} token does not belong to the task it names"
        ));
    }
    Ok((task, claims.clone()))
}

impl Parent {
    /// Checks a parent task token. The error is the reason to give the caller.
    pub(crate) async fn verify(
        state: &ServerState,
        token: &str,
        now: SystemTime,
    ) -> Result<Self, String> {
        let (task, claims) = live_task_of(state, token, "parent", now).await?;
        let principal = claims
            .get(CLAIM)
            .and_then(|c| c.get("obo"))
            .and_then(Principal::from_claim);
        let mut chain: Vec<Value> = claims
            .get(CLAIM)
            .and_then(|c| c.get("chain"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut hop = json!({
            "sub": task.spiffe_id.to_string(),
            "txn": task.id,
            "ops": task.operations,
        });
        // The root hop names the person the chain acts for.
        if let (true, Some(principal)) = (chain.is_empty(), &principal) {
            hop["obo"] = principal.claim();
        }
        chain.push(hop);
        Ok(Self {
            act: claims.get("act").cloned(),
            task,
            chain,
            principal,
        })
    }

    /// Whether a child asking for `audience` and `operations` only narrows this parent.
    pub(crate) fn narrow(
        &self,
        audience: &str,
        operations: &[String],
        max_depth: u32,
    ) -> Result<Narrowed, String> {
        let depth = self.task.depth.saturating_add(1);
        if depth > max_depth {
            return Err(format!(
                "delegation is {depth} hops deep; this server allows at most {max_depth}"
            ));
        }
        if audience != self.task.audience {
            return Err(format!(
                "a delegated task may only narrow its parent: tool {audience:?} is not the parent's ({:?})",
                self.task.audience
            ));
        }
        if let Some(op) = operations
            .iter()
            .find(|op| !self.task.operations.contains(op))
        {
            return Err(format!(
                "a delegated task may only narrow its parent: operation {op:?} is not one of the parent's"
            ));
        }
        Ok(Narrowed {
            depth,
            not_after: self.task.expires_at,
        })
    }

    /// The SPIFFE ID that began the chain.
    pub(crate) fn root_principal(&self) -> String {
        self.chain
            .first()
            .and_then(|hop| hop.get("sub"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// The RFC 8693 `act` claim of a child: the parent outermost, its own delegators inside.
    pub(crate) fn child_act(&self) -> Value {
        let mut act = json!({ "sub": self.task.spiffe_id.to_string() });
        if let Some(inner) = &self.act {
            act["act"] = inner.clone();
        }
        act
    }
}

/// The first `aud` of a JWT, read before the signature is checked, only to ask the verifier for
/// that audience (which then checks everything).
pub(crate) fn unverified_audience(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("aud")? {
        Value::String(aud) => Some(aud.clone()),
        Value::Array(auds) => auds.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// How long a child may last: what it asked (or the cap), no later than its parent.
pub(crate) fn child_ttl(requested: Duration, now: SystemTime, not_after: SystemTime) -> Duration {
    requested.min(not_after.duration_since(now).unwrap_or_default())
}
