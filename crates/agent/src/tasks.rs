//! The agent as the task service's [`TaskSource`]: it picks which of the attested caller's entries
//! a request is for and forwards it to the server, which decides with its policies. The agent
//! decides nothing about grants: it only vouches for who is asking.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lanyard_core::{EntryId, SelectorSet, SpiffeId};
use lanyard_proto::node as pb;
use lanyard_proto::task::{
    AwaitApprovalRequest, BeginTaskRequest, BeginTaskResponse, EndTaskRequest, GetTaskRequest,
    ListTasksRequest, ListTasksResponse, Task,
};
use lanyard_workload::{TaskSource, ToolUse};
use tonic::Status;

use crate::agent::Shared;

/// What the task service on the agent's socket reads.
#[derive(Debug, Clone)]
pub(crate) struct AgentTasks {
    /// Set once the agent has its identity; until then no caller holds an entry.
    shared: Arc<OnceLock<Arc<Shared>>>,
    /// Tool use waiting to be sent to the server.
    tool_uses: Arc<ToolUseQueue>,
}

/// Tool use records on their way to the server: sent in batches by [`send_tool_use`], kept (up to
/// [`MAX_QUEUED_TOOL_USES`]) while the server cannot be reached.
#[derive(Debug, Default)]
pub(crate) struct ToolUseQueue {
    queued: std::sync::Mutex<std::collections::VecDeque<pb::ToolUse>>,
    /// Records dropped because the queue was full (the oldest go first).
    dropped: std::sync::atomic::AtomicU64,
    wakeup: tokio::sync::Notify,
}

/// Most tool-use records kept while the server is away.
const MAX_QUEUED_TOOL_USES: usize = 100_000;
/// Most records in one `RecordToolUse` call.
const TOOL_USES_PER_CALL: usize = 1000;
/// How long records may wait to be batched.
const TOOL_USE_FLUSH: Duration = Duration::from_millis(200);

impl ToolUseQueue {
    fn push(&self, tool_use: pb::ToolUse) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        if queued.len() >= MAX_QUEUED_TOOL_USES {
            queued.pop_front();
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        queued.push_back(tool_use);
        if queued.len() >= TOOL_USES_PER_CALL {
            self.wakeup.notify_one();
        }
    }

    fn take(&self) -> Vec<pb::ToolUse> {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        let n = queued.len().min(TOOL_USES_PER_CALL);
        queued.drain(..n).collect()
    }

    /// Puts a batch that could not be sent back at the front, in order.
    fn put_back(&self, batch: Vec<pb::ToolUse>) {
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        for tool_use in batch.into_iter().rev() {
            queued.push_front(tool_use);
        }
        while queued.len() > MAX_QUEUED_TOOL_USES {
            queued.pop_front();
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Sends queued tool use to the server until `stop`, in batches, retrying while it is away.
pub(crate) async fn send_tool_use(
    shared: Arc<Shared>,
    queue: Arc<ToolUseQueue>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), crate::AgentError> {
    let mut backoff = crate::timing::Backoff::new(TOOL_USE_FLUSH, Duration::from_secs(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(TOOL_USE_FLUSH) => {}
            () = queue.wakeup.notified() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        loop {
            let batch = queue.take();
            if batch.is_empty() {
                break;
            }
            let dropped = queue.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "tool-use records were dropped while the server was away"
                );
            }
            match shared
                .client()
                .record_tool_use(pb::RecordToolUseRequest {
                    uses: batch.clone(),
                })
                .await
            {
                Ok(_) => backoff.reset(),
                Err(status) => {
                    tracing::warn!(status = %crate::attest::status_detail(&status), "cannot send tool-use records; keeping them");
                    queue.put_back(batch);
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                    }
                    break;
                }
            }
        }
    }
}

impl AgentTasks {
    pub(crate) fn new(shared: Arc<OnceLock<Arc<Shared>>>, tool_uses: Arc<ToolUseQueue>) -> Self {
        Self { shared, tool_uses }
    }

    fn shared(&self) -> Result<Arc<Shared>, Status> {
        self.shared
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("the agent is not attested yet; retry later"))
    }

    /// Every entry the caller may be served, or `PermissionDenied` if none.
    fn caller_entries(
        shared: &Shared,
        caller: &SelectorSet,
    ) -> Result<Vec<(SpiffeId, EntryId)>, Status> {
        let entries = shared.cache().entries_for_caller(caller, shared.now());
        if entries.is_empty() {
            return Err(Status::permission_denied("no identity issued"));
        }
        Ok(entries)
    }
}

/// The entry a task is asked through: one with the SPIFFE ID the caller named, or the caller's
/// only SPIFFE ID.
fn choose_entry(entries: &[(SpiffeId, EntryId)], requested: &str) -> Result<EntryId, Status> {
    if !requested.is_empty() {
        let requested = SpiffeId::parse(requested)
            .map_err(|e| Status::invalid_argument(format!("invalid requested SPIFFE ID: {e}")))?;
        return entries
            .iter()
            .find(|(id, _)| *id == requested)
            .map(|(_, entry)| entry.clone())
            .ok_or_else(|| Status::permission_denied("the caller does not hold that SPIFFE ID"));
    }
    let first = &entries[0];
    if entries.iter().any(|(id, _)| *id != first.0) {
        return Err(Status::invalid_argument(
            "the caller holds several SPIFFE IDs; name one with spiffe_id",
        ));
    }
    Ok(first.1.clone())
}

fn entry_ids(entries: &[(SpiffeId, EntryId)]) -> Vec<String> {
    entries.iter().map(|(_, entry)| entry.to_string()).collect()
}

/// The server's answer as the caller sees it: its refusals pass through (they are written for
/// the caller), a broken connection is `Unavailable`.
fn forward(status: Status) -> Status {
    match status.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::PermissionDenied
        | tonic::Code::NotFound
        | tonic::Code::ResourceExhausted
        | tonic::Code::FailedPrecondition
        | tonic::Code::DeadlineExceeded => status,
        _ => {
            tracing::warn!(status = %crate::attest::status_detail(&status), "a task call to the server failed");
            Status::unavailable("the server cannot be reached to decide the task; retry later")
        }
    }
}

impl TaskSource for AgentTasks {
    async fn begin_task(
        &self,
        caller: &SelectorSet,
        request: BeginTaskRequest,
    ) -> Result<BeginTaskResponse, Status> {
        let shared = self.shared()?;
        let entries = Self::caller_entries(&shared, caller)?;
        let entry_id = choose_entry(&entries, &request.spiffe_id)?;
        shared
            .client()
            .begin_task(pb::BeginTaskRequest {
                entry_id: entry_id.to_string(),
                task: Some(request),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(forward)
    }

    async fn get_task(
        &self,
        caller: &SelectorSet,
        request: GetTaskRequest,
    ) -> Result<Task, Status> {
        let shared = self.shared()?;
        let entries = Self::caller_entries(&shared, caller)?;
        shared
            .client()
            .get_task(pb::GetTaskRequest {
                entry_ids: entry_ids(&entries),
                task_id: request.task_id,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(forward)
    }

    async fn list_tasks(
        &self,
        caller: &SelectorSet,
        request: ListTasksRequest,
    ) -> Result<ListTasksResponse, Status> {
        let shared = self.shared()?;
        let entries = Self::caller_entries(&shared, caller)?;
        shared
            .client()
            .list_tasks(pb::ListTasksRequest {
                entry_ids: entry_ids(&entries),
                page_token: request.page_token,
                page_size: request.page_size,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(forward)
    }

    async fn await_approval(
        &self,
        caller: &SelectorSet,
        request: AwaitApprovalRequest,
    ) -> Result<BeginTaskResponse, Status> {
        let shared = self.shared()?;
        let entries = Self::caller_entries(&shared, caller)?;
        shared
            .client()
            .await_approval(pb::AwaitApprovalRequest {
                entry_ids: entry_ids(&entries),
                approval_id: request.approval_id,
                wait_seconds: request.wait_seconds,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(forward)
    }

    fn record_tool_use(&self, caller: &SelectorSet, tool_use: ToolUse) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        // The tool's first entry names it; the server checks this agent may speak for it.
        let Some((_, entry_id)) = shared
            .cache()
            .entries_for_caller(caller, shared.now())
            .into_iter()
            .next()
        else {
            return;
        };
        self.tool_uses.push(pb::ToolUse {
            entry_id: entry_id.to_string(),
            task_id: tool_use.task_id,
            token_id: tool_use.token_id,
            audience: tool_use.audience,
            operation: tool_use.operation,
            allowed: tool_use.allowed,
            reason: tool_use.reason,
            time_us: tool_use
                .at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        });
    }

    async fn end_task(
        &self,
        caller: &SelectorSet,
        request: EndTaskRequest,
    ) -> Result<Task, Status> {
        let shared = self.shared()?;
        let entries = Self::caller_entries(&shared, caller)?;
        shared
            .client()
            .end_task(pb::EndTaskRequest {
                entry_ids: entry_ids(&entries),
                task_id: request.task_id,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(forward)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn entry(id: &str, entry: &str) -> (SpiffeId, EntryId) {
        (SpiffeId::parse(id).unwrap(), entry.parse().unwrap())
    }

    #[test]
    fn the_only_identity_is_chosen_when_none_is_named() {
        let entries = [entry("spiffe://td/a", "e1"), entry("spiffe://td/a", "e2")];
        assert_eq!(choose_entry(&entries, "").unwrap().to_string(), "e1");
    }

    #[test]
    fn several_identities_need_a_name() {
        let entries = [entry("spiffe://td/a", "e1"), entry("spiffe://td/b", "e2")];
        let err = choose_entry(&entries, "").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            choose_entry(&entries, "spiffe://td/b").unwrap().to_string(),
            "e2"
        );
    }

    #[test]
    fn an_identity_the_caller_does_not_hold_is_refused() {
        let entries = [entry("spiffe://td/a", "e1")];
        let err = choose_entry(&entries, "spiffe://td/other").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let err = choose_entry(&entries, "not an id").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
