//! `lanyard.task.v1.Tasks` on the Workload API socket: the same security header and the same
//! caller attestation as the Workload API, then the [`TaskSource`] decides.

use std::sync::Arc;

use lanyard_core::SelectorSet;
use lanyard_proto::task::tasks_server::Tasks;
use lanyard_proto::task::{
    BeginTaskRequest, BeginTaskResponse, EndTaskRequest, GetTaskRequest, ListTasksRequest,
    ListTasksResponse, Task,
};
use tonic::{Request, Response, Status};

use super::{CallerInfo, status};
use crate::{CallerAttestor, TaskSource};

pub(crate) struct TaskService<T, A> {
    pub(crate) tasks: Arc<T>,
    pub(crate) attestor: Arc<A>,
}

impl<T: TaskSource, A: CallerAttestor> TaskService<T, A> {
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

#[tonic::async_trait]
impl<T: TaskSource, A: CallerAttestor> Tasks for TaskService<T, A> {
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
}
