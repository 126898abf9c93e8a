//! lanyard's rules for task-scoped credentials, as pure logic: which grants Cedar policies allow
//! (and which policies decided), how a delegated task may only narrow its parent, and the audit
//! log's RFC 6962 Merkle hashing, signed checkpoints and proofs.
//!
//! No I/O and no async: time comes from an injected [`Clock`](lanyard_core::Clock), policies and
//! records are handed in by the caller (the server reads the files and the datastore). It never
//! depends on lanyard-store, lanyard-ca or lanyard-proto.

pub mod audit;
mod grant;

pub use grant::{
    BASE_SCHEMA, Decision, EvaluationError, GrantError, GrantRequest, MAX_AUDIENCE_BYTES,
    MAX_OPERATION_BYTES, MAX_OPERATIONS, MAX_POLICIES, MAX_POLICY_FILE_BYTES, MAX_POLICY_ID_BYTES,
    MAX_TEXT_BYTES, OperationDecision, Outcome, PolicyBundle, PolicyLoadError, PolicyProblem,
};
