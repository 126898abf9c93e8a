//! The task service's view of the agent: [`TaskSource`]. The server side of `lanyard.task.v1.Tasks`
//! (header check, caller attestation) lives in `server::tasks`; what a task is and who may have
//! one is decided upstream, by the lanyard server's policies.

use std::future::Future;
use std::time::SystemTime;

use lanyard_core::SelectorSet;
use lanyard_proto::task::{
    AwaitApprovalRequest, BeginTaskRequest, BeginTaskResponse, EndTaskRequest, GetTaskRequest,
    ListTasksRequest, ListTasksResponse, Task,
};
use tonic::Status;

/// What the task service asks of the agent, for a caller already attested to `caller`'s
/// selectors. Implementations choose which of the caller's identities a request is for, forward
/// it to the server, and answer with the status the caller should see (never internal detail).
pub trait TaskSource: Send + Sync + 'static {
    fn begin_task(
        &self,
        caller: &SelectorSet,
        request: BeginTaskRequest,
    ) -> impl Future<Output = Result<BeginTaskResponse, Status>> + Send;

    fn get_task(
        &self,
        caller: &SelectorSet,
        request: GetTaskRequest,
    ) -> impl Future<Output = Result<Task, Status>> + Send;

    fn list_tasks(
        &self,
        caller: &SelectorSet,
        request: ListTasksRequest,
    ) -> impl Future<Output = Result<ListTasksResponse, Status>> + Send;

    fn end_task(
        &self,
        caller: &SelectorSet,
        request: EndTaskRequest,
    ) -> impl Future<Output = Result<Task, Status>> + Send;

    fn await_approval(
        &self,
        caller: &SelectorSet,
        request: AwaitApprovalRequest,
    ) -> impl Future<Output = Result<BeginTaskResponse, Status>> + Send;

    /// Records that a tool (the attested caller) validated a task token, allowed or not, for the
    /// server's audit log. Must not wait on the network: implementations queue it.
    fn record_tool_use(&self, caller: &SelectorSet, tool_use: ToolUse);
}

/// One `ValidateTaskToken` call, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolUse {
    /// `lanyard.txn` of the token, `""` if it named none (or did not parse).
    pub task_id: String,
    /// `jti` of the token, `""` if none.
    pub token_id: String,
    pub audience: String,
    pub operation: String,
    pub allowed: bool,
    /// Why it was refused; `""` when allowed.
    pub reason: String,
    pub at: SystemTime,
}

/// A Workload API server without the task service: every task call is `Unimplemented`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTasks;

impl TaskSource for NoTasks {
    async fn begin_task(
        &self,
        _caller: &SelectorSet,
        _request: BeginTaskRequest,
    ) -> Result<BeginTaskResponse, Status> {
        Err(unimplemented())
    }

    async fn get_task(
        &self,
        _caller: &SelectorSet,
        _request: GetTaskRequest,
    ) -> Result<Task, Status> {
        Err(unimplemented())
    }

    async fn list_tasks(
        &self,
        _caller: &SelectorSet,
        _request: ListTasksRequest,
    ) -> Result<ListTasksResponse, Status> {
        Err(unimplemented())
    }

    async fn end_task(
        &self,
        _caller: &SelectorSet,
        _request: EndTaskRequest,
    ) -> Result<Task, Status> {
        Err(unimplemented())
    }

    async fn await_approval(
        &self,
        _caller: &SelectorSet,
        _request: AwaitApprovalRequest,
    ) -> Result<BeginTaskResponse, Status> {
        Err(unimplemented())
    }

    fn record_tool_use(&self, _caller: &SelectorSet, _tool_use: ToolUse) {}
}

fn unimplemented() -> Status {
    Status::unimplemented("this agent does not serve task credentials")
}
