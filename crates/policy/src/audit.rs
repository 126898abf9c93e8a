//! The verifiable audit log's pure logic: the canonical encoding of an [`AuditRecord`], RFC 6962
//! Merkle hashing with inclusion and consistency proofs, C2SP checkpoints signed as notes, and
//! the verification of a whole log against its checkpoints.
//!
//! It owns no storage and no clock: the server hands in records it read from the datastore and
//! the signing key it loaded; `lanyard audit verify|prove` hands in what it fetched. Details of
//! the formats are in `docs/audit.md`.

mod checkpoint;
mod merkle;
mod record;
mod verify;

pub use checkpoint::{
    Checkpoint, CheckpointSigner, CheckpointVerifier, MAX_NOTE_LEN, MAX_SIGNATURES, NoteError,
    NoteSignature, SignedCheckpoint, SignedNote,
};
pub use merkle::{
    Frontier, HASH_LEN, Hash, ProofError, consistency_proof, empty_root, inclusion_proof,
    leaf_hash, node_hash, root_from_inclusion, root_of, verify_consistency, verify_inclusion,
};
pub use record::{
    AuditRecord, MAX_DETAILS_DEPTH, MAX_DETAILS_LEN, MAX_KIND_LEN, MAX_NAME_LEN, RecordError,
};
pub use verify::{
    CheckpointTile, LogError, StoredRecord, VerifiedLog, verify_log, verify_stored_log,
    vouched_leaves,
};
