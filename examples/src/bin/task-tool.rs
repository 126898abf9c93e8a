//! `task-tool`: a tool service that AI agents call with task tokens. It serves plain HTTP on
//! loopback; each request must carry `Authorization: Bearer <task token>`, which it checks with
//! its own agent (`ValidateTaskToken`: signature, its audience, expiry, revocation, and that the
//! operation the request performs was granted). `GET /tickets` is `read`, `POST /tickets` is
//! `write`, `DELETE /tickets` is `delete`. Every check is recorded by lanyard as tool use.
//!
//! ```sh
//! task-tool --listen 127.0.0.1:8600 --audience tickets --socket .lanyard/agent.sock
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lanyard_examples::tasks::{TasksClient, tasks_client};
use lanyard_proto::task::ValidateTaskTokenRequest;

#[derive(Debug, Parser)]
struct Args {
    /// Where to serve HTTP (loopback; port 0 picks one and prints it).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// This tool's audience: task tokens for other tools are refused.
    #[arg(long, default_value = "tickets")]
    audience: String,
    /// The agent's Workload API socket.
    #[arg(long)]
    socket: PathBuf,
}

/// The operation an HTTP request performs.
fn operation(method: &Method) -> Option<&'static str> {
    match *method {
        Method::GET => Some("read"),
        Method::POST => Some("write"),
        Method::DELETE => Some("delete"),
        _ => None,
    }
}

async fn handle(
    request: Request<Incoming>,
    mut agent: TasksClient,
    audience: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
        *response.status_mut() = status;
        Ok(response)
    };
    if request.uri().path() != "/tickets" {
        return reply(StatusCode::NOT_FOUND, "no such resource".to_owned());
    }
    let Some(operation) = operation(request.method()) else {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, POST or DELETE".to_owned(),
        );
    };
    let token = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return reply(
            StatusCode::UNAUTHORIZED,
            "a task token is required".to_owned(),
        );
    };
    let checked = agent
        .validate_task_token(ValidateTaskTokenRequest {
            token: token.to_owned(),
            audience,
            operation: operation.to_owned(),
        })
        .await;
    match checked {
        Ok(valid) => {
            let valid = valid.into_inner();
            reply(
                StatusCode::OK,
                format!(
                    "ok: {operation} for {} (task {}, on behalf of {:?})",
                    valid.spiffe_id, valid.task_id, valid.on_behalf_of
                ),
            )
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => reply(
            StatusCode::FORBIDDEN,
            format!("refused: {}", status.message()),
        ),
        Err(status) => reply(
            StatusCode::UNAUTHORIZED,
            format!("invalid token: {}", status.message()),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent = tasks_client(&args.socket).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The test (and a user) reads the address from this line.
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let agent = agent.clone();
        let audience = args.audience.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(request, agent.clone(), audience.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
