//! The agent's one error type. Messages say what went wrong and what to do; none carries a key,
//! a token or a certificate.

use std::path::PathBuf;
use std::time::SystemTime;

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid trust bundle: {0}")]
    TrustBundle(String),
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: lanyard_fs::Error,
    },
    #[error("cannot read or write {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is unreadable ({reason}); remove it and attest again with a new join token")]
    CorruptState { path: PathBuf, reason: String },
    #[error(
        "the agent has no SVID in its data directory and no node attestor is configured: \
         pass a join token (or configure x509pop)"
    )]
    NoAttestor,
    #[error(
        "the persisted agent SVID expired at {} (Unix time) and no node attestor is configured: \
         pass a new join token to attest again",
        unix_seconds(*.expired_at)
    )]
    SvidExpired { expired_at: SystemTime },
    #[error(
        "the join token was already used by this agent; generate a new one \
         (`lanyard token generate`) to attest again"
    )]
    JoinTokenUsed,
    #[error("the server refused node attestation ({code:?}): {message}")]
    AttestationRefused { code: tonic::Code, message: String },
    #[error(
        "the server no longer accepts this agent ({reason}); it was evicted or banned: \
         attest again with a new join token"
    )]
    Rejected { reason: String },
    #[error("cannot read the x509pop credentials: {0}")]
    X509PopCredentials(String),
    #[error("node attestation failed: {0}")]
    Attestation(String),
    #[error("the server sent an invalid response: {0}")]
    InvalidResponse(String),
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("cannot make a key or CSR: {0}")]
    Key(String),
    #[error("TLS: {0}")]
    Tls(#[from] lanyard_tls::TlsError),
    #[error("Workload API: {0}")]
    Workload(#[from] lanyard_workload::Error),
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
