//! Every status the Workload API answers with, in one place. Messages are SPIRE's where SPIRE has
//! one (clients and operators know them), and never carry internal detail: causes are logged.

use lanyard_core::{IdError, JwtSvidError};
use tonic::Status;

use crate::{AttestError, JwtSvidFetchError};

pub(crate) const SECURITY_HEADER_MISSING: &str = "security header missing from request";
pub(crate) const ATTESTATION_FAILED: &str = "workload attestation failed";
pub(crate) const NO_IDENTITY: &str = "no identity issued";

pub(crate) fn security_header_missing() -> Status {
    Status::invalid_argument(SECURITY_HEADER_MISSING)
}

pub(crate) fn attestation_failed(error: &AttestError) -> Status {
    tracing::warn!(error = %error, "workload attestation failed");
    Status::unavailable(ATTESTATION_FAILED)
}

pub(crate) fn no_credentials() -> Status {
    tracing::warn!("the kernel reported no credentials for a Workload API connection");
    Status::unavailable(ATTESTATION_FAILED)
}

pub(crate) fn no_identity() -> Status {
    Status::permission_denied(NO_IDENTITY)
}

pub(crate) fn audience_missing() -> Status {
    Status::invalid_argument("audience must be specified")
}

pub(crate) fn svid_missing() -> Status {
    Status::invalid_argument("svid must be specified")
}

pub(crate) fn invalid_spiffe_id(error: &IdError) -> Status {
    Status::invalid_argument(format!("invalid requested SPIFFE ID: {error}"))
}

pub(crate) fn invalid_jwt_svid(error: &JwtSvidError) -> Status {
    Status::invalid_argument(error.to_string())
}

pub(crate) fn jwt_fetch_failed(error: &JwtSvidFetchError) -> Status {
    tracing::warn!(error = %error, "cannot fetch a JWT-SVID for a workload");
    match error {
        JwtSvidFetchError::Refused { .. } => no_identity(),
        _ => Status::unavailable("JWT-SVIDs cannot be issued now; retry later"),
    }
}

pub(crate) fn token_revoked() -> Status {
    Status::invalid_argument("token has been revoked (its task ended)")
}

pub(crate) fn revocations_pending() -> Status {
    Status::unavailable(
        "the agent has not received the list of revoked tokens from its server yet; retry shortly",
    )
}

pub(crate) fn wit_unimplemented() -> Status {
    Status::unimplemented("WIT-SVIDs are not supported")
}

pub(crate) fn shutting_down() -> Status {
    Status::unavailable("the Workload API is shutting down")
}

pub(crate) fn source_closed() -> Status {
    Status::unavailable("the agent is not serving identities now")
}
