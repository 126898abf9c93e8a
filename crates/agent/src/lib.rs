//! The lanyard agent: one per node. It attests the node to the server, keeps the entries this
//! node may serve in sync (pushed by the server), mints a key and X509-SVID per entry and renews
//! them, persists its own SVID so a restart needs no new token, and serves the SPIFFE Workload
//! API on a Unix socket to local workloads, attested by their kernel credentials.
//!
//! Layout:
//! - [`run`] / [`Agent`] (`agent`): start-up, the shared state, shutdown;
//! - `attest`: the `AttestAgent` exchange (join_token, x509pop);
//! - `node`: TCP + TLS (aws-lc-rs, passed explicitly) + tonic channel to the node API, failing
//!   over between the configured servers;
//! - `sync`: the `SyncEntries` stream; `mint`: workload SVIDs; `renew`: the agent SVID;
//! - `cache`: entries, bundles and SVIDs as plain data, and the snapshot the Workload API serves;
//! - `source`: the `IdentitySource` the Workload API reads; `workload_attestor`: callers;
//! - `storage`: the data directory; `keys`: keys and CSRs; `timing`: renewal and backoff.
//!
//! It must not read configuration from files or the environment (the CLI builds [`AgentConfig`]),
//! nor sign anything itself: every certificate comes from the server.

mod agent;
mod attest;
mod cache;
mod config;
mod error;
mod keys;
mod mint;
mod node;
mod renew;
mod source;
mod storage;
mod sync;
mod tasks;
mod timing;
mod workload_attestor;

use std::future::Future;

pub use agent::Agent;
pub use config::{
    AgentConfig, DEFAULT_DATA_DIR, DEFAULT_ROOT_SOCKET_PATH, DEFAULT_SERVER_ADDRESS,
    DEFAULT_SOCKET_PATH, MAX_SERVERS, NodeAttestorConfig, ServerAddress, ServerList,
    TrustBootstrap, Tuning,
};
pub use error::AgentError;
pub use lanyard_attestation::JoinToken;
pub use workload_attestor::HostAttestor;

/// Runs an agent with the system clock and the `unix` + `cgroup` workload attestors until
/// `shutdown` completes or a fatal error; see [`Agent::run`].
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    Agent::new(config).run(shutdown).await
}
