//! The crate's error type.

use std::io;
use std::path::PathBuf;

use lanyard_core::SpiffeId;

/// What went wrong serving or calling the Workload API. Each variant names one cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket, or its directory, was refused or could not be made.
    #[error("cannot bind the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: lanyard_fs::Error,
    },
    #[error("cannot listen on the Workload API socket {path}: {source}")]
    Listen {
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
