//! Runnable examples of using lanyard from a workload. See `src/bin/`:
//!
//! - `mtls-echo-server`: accepts mTLS connections from one allowed SPIFFE ID (or any ID in the
//!   trust domain) and echoes each line back, prefixed with the caller's SPIFFE ID;
//! - `mtls-echo-client`: connects to it, requiring the server's SPIFFE ID, sends a line per
//!   connection, and keeps going across SVID rotations.
//!
//! Both get their identity from the agent's Workload API socket through
//! `lanyard_tls::WorkloadIdentity`, so neither ever reads a key file.
//!
//! - `task-tool`: a tool service that accepts `Authorization: Bearer <task token>` and checks it
//!   with its agent (`ValidateTaskToken`), enforcing the operation each request performs;
//! - `task-orchestrator`: an AI agent that begins a task on behalf of a user, calls the tool,
//!   delegates a narrower sub-task to a second process, and ends the task, after which the tool
//!   refuses both tokens (`docs/agents.md`).

/// What the task-credential examples (`task-tool`, `task-orchestrator`) share: a client of the
/// agent's task service and a minimal HTTP/1.1 call to the tool.
pub mod tasks {
    use std::net::SocketAddr;
    use std::path::Path;

    use anyhow::Context as _;
    use lanyard_workload::SecurityHeader;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    /// `lanyard.task.v1.Tasks` on the agent's socket, with the Workload API's security header.
    pub type TasksClient =
        lanyard_proto::task::tasks_client::TasksClient<InterceptedService<Channel, SecurityHeader>>;

    pub async fn tasks_client(socket: &Path) -> anyhow::Result<TasksClient> {
        let channel = lanyard_workload::connect_channel(socket)
            .await
            .with_context(|| format!("cannot connect to the agent at {}", socket.display()))?;
        Ok(
            lanyard_proto::task::tasks_client::TasksClient::with_interceptor(
                channel,
                SecurityHeader,
            ),
        )
    }

    /// `METHOD /tickets` with `Authorization: Bearer <token>`: the status code and the body.
    pub async fn call_tool(
        tool: SocketAddr,
        method: &str,
        token: &str,
    ) -> anyhow::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(tool)
            .await
            .with_context(|| format!("cannot reach the tool at {tool}"))?;
        let request = format!(
            "{method} /tickets HTTP/1.1\r\nHost: {tool}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("not an HTTP response")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.trim().to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}
