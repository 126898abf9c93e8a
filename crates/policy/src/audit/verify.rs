//! Verification of a whole audit log against its signed checkpoints: what `lanyard audit verify`
//! runs. It recomputes every leaf hash in order, checks that `seq` counts 0, 1, 2, … without a
//! gap, checks each checkpoint's signature, and compares each checkpoint's root with the root
//! recomputed at its size. The first problem in log order is reported:
//!
//! - a record whose `seq` is not its position: [`LogError::UnexpectedSeq`] names the position
//!   (a deleted, duplicated or reordered row);
//! - a checkpoint whose root differs from the recomputed one: [`LogError::Diverged`] names the
//!   first record after the last checkpoint that still matched. Every record before it is
//!   covered by a matching signed root, so the changed record lies in
//!   `first_suspect_seq..checkpoint_size`; with a checkpoint at every size it is exactly
//!   `first_suspect_seq`;
//! - a checkpoint larger than the log: [`LogError::Truncated`] names the first missing seq.

use super::checkpoint::{CheckpointVerifier, NoteError, SignedCheckpoint};
use super::merkle::{Frontier, Hash};
use super::record::AuditRecord;

/// Why a log failed verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// No checkpoint was given, so nothing vouches for the records.
    #[error("no signed checkpoint to verify the log against")]
    NoCheckpoints,
    /// A checkpoint's signature or origin did not verify.
    #[error("checkpoint {index} (size {size}) is not validly signed: {source}")]
    Checkpoint {
        /// Its index in the slice given.
        index: usize,
        /// The size it claims.
        size: u64,
        /// Why.
        #[source]
        source: NoteError,
    },
    /// The record at `position` carries another seq: a row was deleted, duplicated or moved.
    #[error(
        "record at position {position} has seq {found}: a record is missing, duplicated or out of order from seq {position}"
    )]
    UnexpectedSeq {
        /// The seq expected there (= the first bad seq).
        position: u64,
        /// The seq found.
        found: u64,
    },
    /// The recomputed root at a checkpoint's size is not the signed root.
    #[error(
        "log diverges from the checkpoint at size {checkpoint_size}: a record in seq {first_suspect_seq}..{checkpoint_size} was changed (the checkpoint at size {first_suspect_seq} still matches)"
    )]
    Diverged {
        /// Index of the failing checkpoint in the slice given.
        index: usize,
        /// Its size.
        checkpoint_size: u64,
        /// The first record not covered by an earlier matching checkpoint.
        first_suspect_seq: u64,
    },
    /// The record at `seq` is not the one the signed checkpoints committed to (its leaf hash
    /// differs from the one stored with the checkpoint that signed it): it was edited or moved.
    #[error("record {seq} was changed: it is not the record the signed checkpoints committed to")]
    Changed {
        /// The first record that differs.
        seq: u64,
    },
    /// The row at `seq` is not a valid record at all (its details are not JSON, a field is out of
    /// bounds).
    #[error("record {seq} is not a valid audit record: {reason}")]
    InvalidRecord {
        /// Its seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A checkpoint signs more records than the log has.
    #[error(
        "log has {log_size} records but checkpoint {index} signs {checkpoint_size}: records from seq {log_size} are missing"
    )]
    Truncated {
        /// Index of the checkpoint in the slice given.
        index: usize,
        /// Records found.
        log_size: u64,
        /// Records signed.
        checkpoint_size: u64,
    },
}

/// A log that verified: its size and root, and how much of it the checkpoints cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLog {
    size: u64,
    root: Hash,
    checkpoints: usize,
    signed_size: u64,
}

/// Verifies `records` (in log order) against `checkpoints` (any order) signed by `verifier`.
/// See the module docs for what each error names.
pub fn verify_log(
    records: impl IntoIterator<Item = AuditRecord>,
    checkpoints: &[SignedCheckpoint],
    verifier: &CheckpointVerifier,
) -> Result<VerifiedLog, LogError> {
    if checkpoints.is_empty() {
        return Err(LogError::NoCheckpoints);
    }
    let mut heads: Vec<(u64, Hash, usize)> = Vec::with_capacity(checkpoints.len());
    for (index, signed) in checkpoints.iter().enumerate() {
        let checkpoint = verifier
            .verify(signed)
            .map_err(|source| LogError::Checkpoint {
                index,
                size: signed.checkpoint().size(),
                source,
            })?;
        heads.push((checkpoint.size(), *checkpoint.root(), index));
    }
    heads.sort_by_key(|&(size, _, index)| (size, index));

    let mut frontier = Frontier::new();
    let mut next = 0;
    let mut last_good = 0;
    let mut check_heads = |frontier: &Frontier, next: &mut usize| -> Result<(), LogError> {
        let size = frontier.size();
        let mut root = None;
        while let Some(&(head_size, head_root, index)) = heads.get(*next) {
            if head_size != size {
                break;
            }
            let root = *root.get_or_insert_with(|| frontier.root());
            if head_root != root {
                return Err(LogError::Diverged {
                    index,
                    checkpoint_size: size,
                    first_suspect_seq: last_good,
                });
            }
            last_good = size;
            *next += 1;
        }
        Ok(())
    };

    check_heads(&frontier, &mut next)?;
    for record in records {
        let position = frontier.size();
        if record.seq() != position {
            return Err(LogError::UnexpectedSeq {
                position,
                found: record.seq(),
            });
        }
        frontier.push(record.leaf_hash());
        check_heads(&frontier, &mut next)?;
    }
    if let Some(&(checkpoint_size, _, index)) = heads.get(next) {
        return Err(LogError::Truncated {
            index,
            log_size: frontier.size(),
            checkpoint_size,
        });
    }
    let signed_size = heads.last().map_or(0, |&(size, _, _)| size);
    Ok(VerifiedLog {
        size: frontier.size(),
        root: frontier.root(),
        checkpoints: heads.len(),
        signed_size,
    })
}

/// A signed checkpoint with the leaf hashes of the records it added to its signer's previous
/// checkpoint (records `size - leaf_hashes.len() .. size`), as the server stores it.
#[derive(Debug, Clone)]
pub struct CheckpointTile {
    pub checkpoint: SignedCheckpoint,
    pub leaf_hashes: Vec<Hash>,
}

/// One row of the log as read from storage: a record, or why the row is not one.
#[derive(Debug, Clone)]
pub enum StoredRecord {
    Record(AuditRecord),
    Invalid { seq: u64, reason: String },
}

/// Verifies a stored log like [`verify_log`], and names the exact record that changed: the leaf
/// hashes stored with each checkpoint are first checked against that checkpoint's signed root,
/// then every record is compared with the leaf hash vouched for at its position. An attacker who
/// edits a record cannot make it match (the hashes are bound by the signature); one who also edits
/// the stored hashes makes them fail their signed root, and the error falls back to the range
/// [`verify_log`] reports.
///
/// `rows` are in storage order; `tiles` are one signer's, in any order. The first problem in log
/// order is reported.
pub fn verify_stored_log(
    rows: Vec<StoredRecord>,
    tiles: &[CheckpointTile],
    verifier: &CheckpointVerifier,
) -> Result<VerifiedLog, LogError> {
    let vouched = vouched_leaves(tiles, verifier)?;
    let mut records = Vec::with_capacity(rows.len());
    for (position, row) in (0u64..).zip(rows) {
        let record = match row {
            StoredRecord::Record(record) => record,
            StoredRecord::Invalid { seq, reason } => {
                if seq != position {
                    return Err(LogError::UnexpectedSeq {
                        position,
                        found: seq,
                    });
                }
                return Err(LogError::InvalidRecord { seq, reason });
            }
        };
        if record.seq() != position {
            return Err(LogError::UnexpectedSeq {
                position,
                found: record.seq(),
            });
        }
        let index = usize::try_from(position).unwrap_or(usize::MAX);
        if vouched
            .get(index)
            .is_some_and(|leaf| *leaf != record.leaf_hash())
        {
            return Err(LogError::Changed { seq: position });
        }
        records.push(record);
    }
    let checkpoints: Vec<SignedCheckpoint> = tiles.iter().map(|t| t.checkpoint.clone()).collect();
    verify_log(records, &checkpoints, verifier)
}

/// The leaf hashes the tiles vouch for: contiguous from 0, each tile's hashes reproducing its
/// checkpoint's signed root. Stops at the first tile that does not (its hashes were edited, or
/// a tile is missing); a checkpoint whose signature fails is an error. The server rebuilds its
/// view of the log from these at start, so that what it proves is what it signed.
pub fn vouched_leaves(
    tiles: &[CheckpointTile],
    verifier: &CheckpointVerifier,
) -> Result<Vec<Hash>, LogError> {
    let mut heads = Vec::with_capacity(tiles.len());
    for (index, tile) in tiles.iter().enumerate() {
        let checkpoint =
            verifier
                .verify(&tile.checkpoint)
                .map_err(|source| LogError::Checkpoint {
                    index,
                    size: tile.checkpoint.checkpoint().size(),
                    source,
                })?;
        heads.push((checkpoint.size(), *checkpoint.root(), &tile.leaf_hashes));
    }
    heads.sort_by_key(|&(size, _, _)| size);
    let mut frontier = Frontier::new();
    let mut vouched: Vec<Hash> = Vec::new();
    for (size, root, leaves) in heads {
        let start = u64::try_from(leaves.len())
            .ok()
            .and_then(|n| size.checked_sub(n));
        if start != Some(frontier.size()) {
            break;
        }
        let mut next = frontier.clone();
        for leaf in leaves {
            next.push(*leaf);
        }
        if next.root() != root {
            break;
        }
        frontier = next;
        vouched.extend_from_slice(leaves);
    }
    Ok(vouched)
}

// === impl VerifiedLog ===

impl VerifiedLog {
    /// Records in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The recomputed root over all records.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// Checkpoints checked.
    pub fn checkpoints(&self) -> usize {
        self.checkpoints
    }

    /// Size of the largest checkpoint: records from this seq on are not yet signed.
    pub fn signed_size(&self) -> u64 {
        self.signed_size
    }
}

#[cfg(test)]
mod tests;
