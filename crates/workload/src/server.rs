//! Serving the Workload API on a Unix socket: binding the socket, accepting connections (peer
//! credentials read at accept, the authority adapter in front), and running tonic until shutdown.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lanyard_core::{SharedClock, SystemClock};
use lanyard_proto::task::tasks_server::TasksServer;
use lanyard_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;

use crate::authority::AuthorityAdapter;
use crate::{CallerAttestor, Error, IdentitySource, NoTasks, PeerCredentials, TaskSource};

mod responses;
mod service;
mod status;
mod stream;
mod tasks;

/// Largest task-service request: a purpose and a handful of operation names, far below this.
const MAX_TASK_REQUEST_SIZE: usize = 64 * 1024;

/// Largest request or response message by default. X509-SVID responses with many identities and
/// federated bundles stay far below it; requests are tiny.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Concurrent HTTP/2 streams per connection by default (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// How often an idle connection is pinged, so that dead peers release their resources.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutdown waits for connections to finish before closing them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message decoded from a client, in bytes.
    pub max_decoding_message_size: usize,
    /// Largest message sent, in bytes.
    pub max_encoding_message_size: usize,
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
}

/// A Workload API server, configured; [`serve`] with defaults is the short form. With
/// [`with_tasks`](Self::with_tasks) the same socket also serves `lanyard.task.v1.Tasks`.
#[derive(Debug)]
pub struct WorkloadServer<S, A, T = NoTasks> {
    source: Arc<S>,
    attestor: Arc<A>,
    tasks: Option<Arc<T>>,
    clock: SharedClock,
    limits: Limits,
    shutdown_grace: Duration,
}

/// What the handlers learn about a connection: the caller's credentials, read at accept.
#[derive(Debug, Clone)]
pub(crate) struct CallerInfo(pub(crate) Option<PeerCredentials>);

/// An accepted connection: the authority adapter over the socket, plus the caller's credentials.
struct Connection {
    io: AuthorityAdapter<UnixStream>,
    credentials: Option<PeerCredentials>,
    /// Completes when the shutdown grace has run out: every read and write then fails, so that
    /// peers that never finish (idle sockets, clients that stop reading) cannot hold shutdown.
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Serves the Workload API on `listener` until `shutdown` completes, with default limits and the
/// system clock. Open streams end with `Unavailable` when shutdown starts, so this returns once
/// in-flight calls finish.
pub async fn serve<S, A>(
    listener: UnixListener,
    source: S,
    attestor: A,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    S: IdentitySource,
    A: CallerAttestor,
{
    WorkloadServer::new(source, attestor)
        .serve(listener, shutdown)
        .await
}

/// Binds the Workload API socket at `path` with mode 0777, in a directory that only this user or
/// root controls (made 0755 if missing; see [`lanyard_fs::bind`] for what is refused). A stale
/// socket left by a crashed agent is replaced, a live one or any other file refused. Must be
/// called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let listener =
        lanyard_fs::bind(path, lanyard_fs::Access::Everyone).map_err(|source| Error::Socket {
            path: path.to_owned(),
            source,
        })?;
    listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
        .map_err(|source| Error::Listen {
            path: path.to_owned(),
            source,
        })
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_decoding_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_encoding_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }
}

// === impl WorkloadServer ===

impl<S: IdentitySource, A: CallerAttestor> WorkloadServer<S, A> {
    pub fn new(source: S, attestor: A) -> Self {
        Self {
            source: Arc::new(source),
            attestor: Arc::new(attestor),
            tasks: None,
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl<S: IdentitySource, A: CallerAttestor, T: TaskSource> WorkloadServer<S, A, T> {
    /// Also serves the task service from `tasks`, under the same header rule and with callers
    /// attested by the same attestor.
    pub fn with_tasks<U: TaskSource>(self, tasks: U) -> WorkloadServer<S, A, U> {
        WorkloadServer {
            source: self.source,
            attestor: self.attestor,
            tasks: Some(Arc::new(tasks)),
            clock: self.clock,
            limits: self.limits,
            shutdown_grace: self.shutdown_grace,
        }
    }

    /// How long shutdown lets connections finish on their own before closing them.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The clock `ValidateJWTSVID` judges `exp` and `nbf` by.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves until `shutdown` completes; see [`serve`].
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (kill_tx, kill_rx) = watch::channel(false);
        let mut stopping = stop_rx.clone();
        let tasks = self.tasks.map(|tasks| {
            let service = tasks::TaskService {
                tasks,
                attestor: self.attestor.clone(),
                source: self.source.clone(),
                clock: self.clock.clone(),
                stop: stop_rx.clone(),
            };
            let service = TasksServer::new(service)
                .max_decoding_message_size(MAX_TASK_REQUEST_SIZE)
                .max_encoding_message_size(self.limits.max_encoding_message_size);
            InterceptedService::new(service, service::check_security_header)
        });
        let service = service::WorkloadService {
            source: self.source,
            attestor: self.attestor,
            clock: self.clock,
            stop: stop_rx,
        };
        let api = SpiffeWorkloadApiServer::new(service)
            .max_decoding_message_size(self.limits.max_decoding_message_size)
            .max_encoding_message_size(self.limits.max_encoding_message_size);
        let api = InterceptedService::new(api, service::check_security_header);
        let incoming = UnixListenerStream::new(listener)
            .map(move |accepted| accepted.map(|stream| Connection::new(stream, kill_rx.clone())));
        let signal = async move {
            shutdown.await;
            tracing::debug!("Workload API shutting down; ending open streams");
            let _ = stop_tx.send(true);
        };
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(self.limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .add_service(api)
            .add_optional_service(tasks)
            .serve_with_incoming_shutdown(incoming, signal);
        let grace = self.shutdown_grace;
        let kill = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
            tracing::debug!("Workload API shutdown grace over; closing remaining connections");
            let _ = kill_tx.send(true);
            std::future::pending::<()>().await;
        };
        tokio::select! {
            result = server => result.map_err(Error::Serve),
            () = kill => Ok(()),
        }
    }
}

/// A pidfd for `pid`, taken at accept so that a later reuse of the pid is detectable.
fn open_pidfd(pid: i32) -> Option<std::os::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::debug!(error = %e, "cannot open a pidfd for a Workload API caller");
            None
        }
    }
}

// === impl Connection ===

impl Connection {
    fn new(stream: UnixStream, mut kill: watch::Receiver<bool>) -> Self {
        // Read now, at accept: this is the process that connected, whatever happens later.
        let credentials = match stream.peer_cred() {
            Ok(cred) => Some(PeerCredentials {
                pid: cred.pid(),
                uid: cred.uid(),
                gid: cred.gid(),
                pidfd: cred.pid().and_then(open_pidfd).map(std::sync::Arc::new),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the peer credentials of a Workload API connection");
                None
            }
        };
        Self {
            io: AuthorityAdapter::new(stream),
            credentials,
            killed: Box::pin(async move {
                let _ = kill.wait_for(|killed| *killed).await;
            }),
        }
    }

    /// Fails once the shutdown grace is over.
    fn check_killed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the Workload API shut down",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = CallerInfo;

    fn connect_info(&self) -> CallerInfo {
        CallerInfo(self.credentials.clone())
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
