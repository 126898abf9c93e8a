//! The task service's view of the agent: [`TaskSource`]. The server side of `lanyard.task.v1.Tasks`
//! (header check, caller attestation) lives in `server::tasks`; what a task is and who may have
//! one is decided upstream, by the lanyard server's policies.

use std::future::Future;

use lanyard_core::SelectorSet;
use lanyard_proto::task::{
    BeginTaskRequest, BeginTaskResponse, EndTaskRequest, GetTaskRequest, ListTasksRequest,
    ListTasksResponse, Task,
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
}

fn unimplemented() -> Status {
    Status::unimplemented("this agent does not serve task credentials")
}
