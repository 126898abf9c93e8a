//! gRPC clients over Unix sockets.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Connects a gRPC channel to the Unix socket at `path`.
///
/// The URI is a placeholder: the connector ignores it, and `localhost` is the authority h2 accepts.
pub(crate) async fn connect(path: &Path) -> anyhow::Result<Channel> {
    let path: PathBuf = path.to_owned();
    let shown = path.display().to_string();
    // Fail early with a message that names the socket, rather than tonic's generic transport error.
    match std::fs::metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("no socket at {shown}: is the server running? (set --admin-socket)")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot use socket {shown}")),
    }
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("cannot connect to {shown}"))
}
