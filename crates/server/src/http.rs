//! Health and metrics over plain HTTP/1 on a loopback address: `/live`, `/ready`, `/metrics`.
//!
//! Kept apart from the gRPC APIs so that a load balancer or Prometheus needs no client certificate
//! and no gRPC.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the HTTP endpoints ask of the server.
pub(crate) trait HealthSource: Send + Sync + 'static {
    /// `Ok` when the server can do its job: the datastore answers and the CA can sign.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// The metrics in Prometheus text format.
    fn metrics_text(&self) -> String;
}

/// Serves `/live`, `/ready` and `/metrics` until `shutdown` turns true.
pub(crate) async fn serve<H: HealthSource>(
    listener: TcpListener,
    source: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "health endpoint: accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(respond(&*source, &request).await) }
            });
            // A client that hangs up mid-request is not the server's problem.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond<H: HealthSource>(
    source: &H,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here\n".to_owned(),
        );
    }
    match request.uri().path() {
        "/live" => text(StatusCode::OK, "ok\n".to_owned()),
        "/ready" => match source.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            let mut response = text(StatusCode::OK, source.metrics_text());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready or /metrics\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
