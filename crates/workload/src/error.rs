//! The crate's error type.

use std::io;
use std::path::PathBuf;

use lanyard_core::SpiffeId;

/// What went wrong serving or calling the Workload API. Each variant names one cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot create the socket directory {path}")]
    CreateSocketDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("another process is serving {path}; stop it or choose another --socket")]
    SocketInUse { path: PathBuf },
    #[error("cannot remove the stale socket {path}")]
    RemoveStaleSocket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the Workload API socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the permissions of {path}")]
    SetPermissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the Workload API server failed")]
    Serve(#[source] tonic::transport::Error),
    #[error("identity {spiffe_id} is invalid: {reason}")]
    InvalidIdentity {
        spiffe_id: SpiffeId,
        reason: &'static str,
    },
    #[error("cannot connect to the Workload API at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the Workload API refused the call: {}: {}", .0.code(), .0.message())]
    Status(Box<tonic::Status>),
    #[error("the Workload API stream ended")]
    StreamEnded,
    #[error("the Workload API sent an invalid response: {reason}")]
    InvalidResponse { reason: String },
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Status(Box::new(status))
    }
}

impl Error {
    /// The gRPC status, when the server refused the call.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Self::Status(status) => Some(status),
            _ => None,
        }
    }
}
