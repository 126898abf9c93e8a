//! The SPIFFE Workload API, served on a Unix socket, and a client for it.
//!
//! The agent owns identities; this crate only hands them out. It owns:
//! - [`serve`] / [`WorkloadServer`]: the `SpiffeWorkloadAPI` gRPC service over a
//!   `tokio::net::UnixListener` (bound with [`bind`]): the `workload.spiffe.io` header check on
//!   every RPC, caller attestation from the connection's `SO_PEERCRED` credentials, streams that
//!   send the full state at once and on every change, and graceful shutdown that ends them;
//! - the narrow traits it consumes: [`IdentitySource`] (a `watch` of [`Snapshot`]s plus JWT-SVID
//!   minting) and [`CallerAttestor`] (credentials to selectors), with fakes behind the `testing`
//!   feature;
//! - [`JwtSvidCache`], the (SPIFFE ID, audiences) cache the agent puts behind JWT minting;
//! - a connection adapter (`authority`) that rewrites the socket-path `:authority` gRPC C-core and
//!   grpc-java clients send, which tonic would otherwise refuse;
//! - the task service `lanyard.task.v1.Tasks` beside it on the same socket, when the agent gives
//!   [`WorkloadServer::with_tasks`] a [`TaskSource`] (same header rule, same caller attestation),
//!   whose `WatchRevocations` streams the snapshot's [`Revocations`] like the streams above;
//! - [`WorkloadClient`], used by the CLI, tests and services that validate tokens locally.
//!
//! It must not mint, sign, store or attest anything itself, nor read configuration from files or
//! the environment.

mod attestor;
mod authority;
mod client;
mod error;
mod jwt_cache;
mod server;
mod source;
mod tasks;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use attestor::{AttestError, CallerAttestor, PeerCredentials};
pub use client::{
    JwtSvid, SecurityHeader, Updates, ValidatedJwtSvid, WorkloadClient, X509Context, X509Svid,
    connect_channel,
};
pub use error::Error;
pub use jwt_cache::{DEFAULT_JWT_CACHE_CAPACITY, JwtSvidCache};
pub use server::{
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_SHUTDOWN_GRACE, Limits,
    WorkloadServer, bind, serve,
};
pub use source::{Identity, IdentitySource, JwtSvidFetchError, Revocations, Snapshot, SvidKey};
pub use tasks::{NoTasks, TaskSource, ToolUse};

#[cfg(any(test, feature = "testing"))]
pub use attestor::FakeAttestor;
#[cfg(any(test, feature = "testing"))]
pub use source::{FakeIdentitySource, JwtMinter};
