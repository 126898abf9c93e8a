//! `lanyard.task.v1.Tasks` on the Workload API socket: the same security header and the same
//! caller attestation as the Workload API, then the [`TaskSource`] decides.

use std::sync::Arc;

use lanyard_core::SelectorSet;
use lanyard_core::SharedClock;
use lanyard_proto::task::tasks_server::Tasks;
use lanyard_proto::task::{
    AwaitApprovalRequest, BeginTaskRequest, BeginTaskResponse, EndTaskRequest, GetTaskRequest,
    ListTasksRequest, ListTasksResponse, Task, ValidateTaskTokenRequest, ValidateTaskTokenResponse,
    WatchRevocationsRequest, WatchRevocationsResponse,
};
use serde_json::Value;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::service::validate_token;
use super::stream::{self, UpdateStream};
use super::{CallerInfo, responses, status};
use crate::{CallerAttestor, IdentitySource, TaskSource, ToolUse};

pub(crate) struct TaskService<T, A, S> {
    pub(crate) tasks: Arc<T>,
    pub(crate) attestor: Arc<A>,
    /// The snapshot task tokens are validated against (bundles, revoked tokens, the caller's
    /// identities).
    pub(crate) source: Arc<S>,
    pub(crate) clock: SharedClock,
    /// Turns true when shutdown starts: open streams end so that graceful shutdown can finish.
    pub(crate) stop: watch::Receiver<bool>,
}

impl<T: TaskSource, A: CallerAttestor, S: IdentitySource> TaskService<T, A, S> {
    /// The caller's selectors; a caller the attestors know nothing about has no task to ask for.
    async fn attest<M>(&self, request: &Request<M>) -> Result<SelectorSet, Status> {
        let credentials = request
            .extensions()
            .get::<CallerInfo>()
            .and_then(|info| info.0.clone())
            .ok_or_else(status::no_credentials)?;
        self.attestor
            .attest(&credentials)
            .await
            .map_err(|e| status::attestation_failed(&e))
    }
}

/// Checks a task token for a tool: a valid JWT-SVID for `audience`, not revoked, from a task
/// (`lanyard` claim) granted `operation`. The error is for the caller and the audit record.
fn check_task_token(
    verified: &lanyard_core::VerifiedJwtSvid,
    operation: &str,
) -> Result<ValidateTaskTokenResponse, Status> {
    let claims = verified.claims();
    let task = claims
        .get("lanyard")
        .ok_or_else(|| Status::permission_denied("the token is not a task token"))?;
    let operations: Vec<String> = task
        .get("ops")
        .and_then(Value::as_array)
        .map(|ops| {
            ops.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if !operations.iter().any(|op| op == operation) {
        return Err(Status::permission_denied(format!(
            "operation {operation:?} was not granted to this task"
        )));
    }
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
    // `obo`: `{"sub", "iss"?, "verified"}`.
    let obo = task.get("obo");
    Ok(ValidateTaskTokenResponse {
        task_id: text(task.get("txn")),
        spiffe_id: verified.spiffe_id().to_string(),
        operations,
        on_behalf_of: text(obo.and_then(|o| o.get("sub"))),
        on_behalf_of_verified: obo
            .and_then(|o| o.get("verified"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        on_behalf_of_issuer: text(obo.and_then(|o| o.get("iss"))),
        depth: task
            .get("depth")
            .and_then(Value::as_u64)
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or(0),
        expires_at: responses::unix_seconds(verified.expiry()),
    })
}

/// The task and token ids a token names, read without trusting it (for the record of a refusal).
fn named_ids(token: &str) -> (String, String) {
    let claims = token.split('.').nth(1).and_then(|payload| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice::<Value>(&bytes).ok()
    });
    let Some(claims) = claims else {
        return (String::new(), String::new());
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(|s| s.chars().take(128).collect())
            .unwrap_or_default()
    };
    (
        text(claims.get("lanyard").and_then(|c| c.get("txn"))),
        text(claims.get("jti")),
    )
}

#[tonic::async_trait]
impl<T: TaskSource, A: CallerAttestor, S: IdentitySource> Tasks for TaskService<T, A, S> {
    type WatchRevocationsStream = UpdateStream<WatchRevocationsResponse>;

    async fn begin_task(
        &self,
        request: Request<BeginTaskRequest>,
    ) -> Result<Response<BeginTaskResponse>, Status> {
        let caller = self.attest(&request).await?;
        self.tasks
            .begin_task(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> Result<Response<Task>, Status> {
        let caller = self.attest(&request).await?;
        self.tasks
            .get_task(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let caller = self.attest(&request).await?;
        self.tasks
            .list_tasks(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn end_task(&self, request: Request<EndTaskRequest>) -> Result<Response<Task>, Status> {
        let caller = self.attest(&request).await?;
        self.tasks
            .end_task(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn validate_task_token(
        &self,
        request: Request<ValidateTaskTokenRequest>,
    ) -> Result<Response<ValidateTaskTokenResponse>, Status> {
        let body = request.get_ref();
        if body.audience.is_empty() {
            return Err(status::audience_missing());
        }
        if body.token.is_empty() {
            return Err(Status::invalid_argument("token must be specified"));
        }
        if body.operation.is_empty() {
            return Err(Status::invalid_argument("operation must be specified"));
        }
        let caller = self.attest(&request).await?;
        // The tool must be someone: its use of the token is recorded under its identity.
        let snapshot = self.source.subscribe().borrow().clone();
        if snapshot.matching(&caller).next().is_none() {
            return Err(status::no_identity());
        }
        let now = self.clock.now();
        let outcome = validate_token(&snapshot, &caller, &body.token, &body.audience, now)
            .and_then(|verified| check_task_token(&verified, &body.operation));
        let (task_id, token_id) = named_ids(&body.token);
        self.tasks.record_tool_use(
            &caller,
            ToolUse {
                task_id,
                token_id,
                audience: body.audience.chars().take(2048).collect(),
                operation: body.operation.chars().take(128).collect(),
                allowed: outcome.is_ok(),
                reason: outcome
                    .as_ref()
                    .err()
                    .map(|s| s.message().to_owned())
                    .unwrap_or_default(),
                at: now,
            },
        );
        outcome.map(Response::new)
    }

    async fn await_approval(
        &self,
        request: Request<AwaitApprovalRequest>,
    ) -> Result<Response<BeginTaskResponse>, Status> {
        let caller = self.attest(&request).await?;
        self.tasks
            .await_approval(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let caller = self.attest(&request).await?;
        stream::open(
            &*self.source,
            self.stop.clone(),
            caller,
            responses::revocations,
        )
    }
}
