#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::signature::Ed25519KeyPair;
use serde_json::json;

use super::*;
use crate::audit::checkpoint::CheckpointSigner;
use crate::audit::merkle::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};

const ORIGIN: &str = "example.org/lanyard-audit";

fn signer() -> CheckpointSigner {
    let key = Ed25519KeyPair::generate().unwrap();
    CheckpointSigner::from_pkcs8(ORIGIN, key.to_pkcs8().unwrap().as_ref()).unwrap()
}

fn record(seq: u64, detail: &str) -> AuditRecord {
    AuditRecord::new(
        seq,
        UNIX_EPOCH + Duration::from_secs(1_765_000_000 + seq),
        "task.granted",
        "spiffe://example.org/agent",
        format!("task-{seq}"),
        json!({"detail": detail, "token_sha256": "e3b0c442"}),
    )
    .unwrap()
}

fn log(n: u64) -> Vec<AuditRecord> {
    (0..n).map(|seq| record(seq, "ok")).collect()
}

/// Checkpoints at the given sizes over `records`, as the server would have signed them.
fn checkpoints(
    signer: &CheckpointSigner,
    records: &[AuditRecord],
    sizes: &[u64],
) -> Vec<SignedCheckpoint> {
    let leaves: Vec<Hash> = records.iter().map(AuditRecord::leaf_hash).collect();
    sizes
        .iter()
        .map(|&n| {
            signer
                .sign(n, crate::audit::root_of(&leaves[..n as usize]))
                .unwrap()
        })
        .collect()
}

fn every_size(n: u64) -> Vec<u64> {
    (0..=n).collect()
}

#[test]
fn untouched_log_verifies() {
    let s = signer();
    let records = log(20);
    let cps = checkpoints(&s, &records, &[20, 5, 0, 12]);
    let verified = verify_log(records.clone(), &cps, &s.verifier()).unwrap();
    assert_eq!(verified.size(), 20);
    assert_eq!(verified.checkpoints(), 4);
    assert_eq!(verified.signed_size(), 20);
    let leaves: Vec<Hash> = records.iter().map(AuditRecord::leaf_hash).collect();
    assert_eq!(verified.root(), &crate::audit::root_of(&leaves));

    // A tail written after the last checkpoint verifies but is reported unsigned.
    let more = log(25);
    let verified = verify_log(more, &cps, &s.verifier()).unwrap();
    assert_eq!((verified.size(), verified.signed_size()), (25, 20));

    // Empty log with the empty checkpoint.
    let empty = checkpoints(&s, &[], &[0]);
    assert_eq!(
        verify_log(Vec::new(), &empty, &s.verifier())
            .unwrap()
            .size(),
        0
    );
}

#[test]
fn no_checkpoints_or_a_bad_one_is_refused() {
    let s = signer();
    let records = log(3);
    assert_eq!(
        verify_log(records.clone(), &[], &s.verifier()),
        Err(LogError::NoCheckpoints)
    );
    let mut cps = checkpoints(&s, &records, &[1, 3]);
    cps.extend(checkpoints(&signer(), &records, &[2]));
    assert_eq!(
        verify_log(records, &cps, &s.verifier()),
        Err(LogError::Checkpoint {
            index: 2,
            size: 2,
            source: NoteError::NoKnownSignature
        })
    );
}

#[test]
fn edited_details_are_named_exactly_with_a_checkpoint_per_record() {
    let s = signer();
    let mut records = log(20);
    let cps = checkpoints(&s, &records, &every_size(20));
    records[11] = record(11, "tampered");
    assert_eq!(
        verify_log(records, &cps, &s.verifier()),
        Err(LogError::Diverged {
            index: 12,
            checkpoint_size: 12,
            first_suspect_seq: 11
        })
    );
}

#[test]
fn edited_details_are_named_by_window_with_sparse_checkpoints() {
    let s = signer();
    let mut records = log(20);
    let cps = checkpoints(&s, &records, &[4, 8, 16, 20]);
    records[11] = record(11, "tampered");
    let err = verify_log(records, &cps, &s.verifier()).unwrap_err();
    assert_eq!(
        err,
        LogError::Diverged {
            index: 2,
            checkpoint_size: 16,
            first_suspect_seq: 8
        }
    );
    assert!(err.to_string().contains("seq 8..16"), "{err}");
}

#[test]
fn deleted_record_is_named() {
    let s = signer();
    let mut records = log(20);
    let cps = checkpoints(&s, &records, &[10, 20]);
    records.remove(6);
    assert_eq!(
        verify_log(records.clone(), &cps, &s.verifier()),
        Err(LogError::UnexpectedSeq {
            position: 6,
            found: 7
        })
    );
    // Renumbered after the deletion: seq continuity holds, the checkpoint names the window.
    let renumbered: Vec<AuditRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            AuditRecord::new(
                i as u64,
                r.time(),
                r.kind(),
                r.actor(),
                r.subject(),
                r.details().clone(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(
        verify_log(renumbered, &cps, &s.verifier()),
        Err(LogError::Diverged {
            index: 0,
            checkpoint_size: 10,
            first_suspect_seq: 0
        })
    );
}

#[test]
fn swapped_records_are_named() {
    let s = signer();
    let records = log(20);
    let cps = checkpoints(&s, &records, &every_size(20));
    // Rows returned in the wrong order.
    let mut swapped = records.clone();
    swapped.swap(4, 5);
    assert_eq!(
        verify_log(swapped, &cps, &s.verifier()),
        Err(LogError::UnexpectedSeq {
            position: 4,
            found: 5
        })
    );
    // Contents swapped but seq kept: the leaf hash binds content to seq.
    let mut swapped = records.clone();
    let (a, b) = (&records[4], &records[5]);
    swapped[4] = AuditRecord::new(
        4,
        b.time(),
        b.kind(),
        b.actor(),
        b.subject(),
        b.details().clone(),
    )
    .unwrap();
    swapped[5] = AuditRecord::new(
        5,
        a.time(),
        a.kind(),
        a.actor(),
        a.subject(),
        a.details().clone(),
    )
    .unwrap();
    assert_eq!(
        verify_log(swapped, &cps, &s.verifier()),
        Err(LogError::Diverged {
            index: 5,
            checkpoint_size: 5,
            first_suspect_seq: 4
        })
    );
    // A duplicated row.
    let mut duplicated = records.clone();
    duplicated.insert(3, records[2].clone());
    assert_eq!(
        verify_log(duplicated, &cps, &s.verifier()),
        Err(LogError::UnexpectedSeq {
            position: 3,
            found: 2
        })
    );
}

#[test]
fn truncated_log_is_named() {
    let s = signer();
    let records = log(20);
    let cps = checkpoints(&s, &records, &[10, 20]);
    assert_eq!(
        verify_log(records[..17].to_vec(), &cps, &s.verifier()),
        Err(LogError::Truncated {
            index: 1,
            log_size: 17,
            checkpoint_size: 20
        })
    );
}

#[test]
fn proofs_from_before_an_edit_fail_after_it() {
    let s = signer();
    let records = log(20);
    let leaves: Vec<Hash> = records.iter().map(AuditRecord::leaf_hash).collect();
    let old = &checkpoints(&s, &records, &[16])[0];
    let old_cp = s.verifier().verify(old).unwrap().clone();
    let proof = inclusion_proof(3, 16, &leaves).unwrap();
    verify_inclusion(&leaves[3], 3, 16, &proof, old_cp.root()).unwrap();

    // Record 9 is rewritten and the server (or whoever holds the key) signs the new tree.
    let mut edited = records;
    edited[9] = record(9, "tampered");
    let new_leaves: Vec<Hash> = edited.iter().map(AuditRecord::leaf_hash).collect();
    let new = &checkpoints(&s, &edited, &[16, 20]);
    let new16 = s.verifier().verify(&new[0]).unwrap();
    let new20 = s.verifier().verify(&new[1]).unwrap();
    assert!(verify_inclusion(&leaves[3], 3, 16, &proof, new16.root()).is_err());

    // No consistency proof links the old checkpoint to the rewritten log.
    let consistency = consistency_proof(16, 20, &new_leaves).unwrap();
    assert!(verify_consistency(16, 20, old_cp.root(), new20.root(), &consistency).is_err());
    // ... while an honest extension is provably consistent.
    let honest = consistency_proof(16, 20, &leaves).unwrap();
    let honest20 = crate::audit::root_of(&leaves);
    verify_consistency(16, 20, old_cp.root(), &honest20, &honest).unwrap();

    // And verify_log over the edited rows against the old checkpoint names the window.
    let mut all = vec![old.clone()];
    all.extend(new.iter().cloned());
    assert!(matches!(
        verify_log(edited, &all, &s.verifier()),
        Err(LogError::Diverged {
            checkpoint_size: 16,
            first_suspect_seq: 0,
            ..
        })
    ));
}

// === verify_stored_log ===

/// Tiles at the given sizes (ascending), as the server stores them: each checkpoint with the leaf
/// hashes of the records it added to the previous one.
fn tiles(signer: &CheckpointSigner, records: &[AuditRecord], sizes: &[u64]) -> Vec<CheckpointTile> {
    let leaves: Vec<Hash> = records.iter().map(AuditRecord::leaf_hash).collect();
    let mut previous = 0;
    sizes
        .iter()
        .map(|&n| {
            let tile = CheckpointTile {
                checkpoint: signer
                    .sign(n, crate::audit::root_of(&leaves[..n as usize]))
                    .unwrap(),
                leaf_hashes: leaves[previous as usize..n as usize].to_vec(),
            };
            previous = n;
            tile
        })
        .collect()
}

fn rows(records: &[AuditRecord]) -> Vec<StoredRecord> {
    records.iter().cloned().map(StoredRecord::Record).collect()
}

/// `source`'s content under another seq: a row whose content was moved.
fn moved(seq: u64, source: &AuditRecord) -> AuditRecord {
    AuditRecord::new(
        seq,
        source.time(),
        source.kind(),
        source.actor(),
        source.subject(),
        source.details().clone(),
    )
    .unwrap()
}

#[test]
fn stored_log_untouched_verifies() {
    let s = signer();
    let records = log(20);
    let mut ts = tiles(&s, &records, &[0, 3, 7, 12, 20]);
    // Tiles may come in any order.
    ts.reverse();
    let verified = verify_stored_log(rows(&records), &ts, &s.verifier()).unwrap();
    assert_eq!(
        (
            verified.size(),
            verified.signed_size(),
            verified.checkpoints()
        ),
        (20, 20, 5)
    );
    let leaves: Vec<Hash> = records.iter().map(AuditRecord::leaf_hash).collect();
    assert_eq!(verified.root(), &crate::audit::root_of(&leaves));

    assert_eq!(
        verify_stored_log(rows(&records), &[], &s.verifier()).unwrap_err(),
        LogError::NoCheckpoints
    );
}

#[test]
fn stored_log_records_after_the_last_checkpoint_are_unsigned_but_ok() {
    let s = signer();
    let records = log(20);
    let ts = tiles(&s, &records, &[5, 20]);
    let mut more = log(25);
    let verified = verify_stored_log(rows(&more), &ts, &s.verifier()).unwrap();
    assert_eq!((verified.size(), verified.signed_size()), (25, 20));
    // Nothing vouches for the tail: an edit there is not detectable (yet).
    more[22] = record(22, "tampered");
    let verified = verify_stored_log(rows(&more), &ts, &s.verifier()).unwrap();
    assert_eq!((verified.size(), verified.signed_size()), (25, 20));
    // But seq continuity still holds there.
    more.remove(22);
    assert_eq!(
        verify_stored_log(rows(&more), &ts, &s.verifier()).unwrap_err(),
        LogError::UnexpectedSeq {
            position: 22,
            found: 23
        }
    );
    // And a log shorter than its checkpoints is truncated.
    assert_eq!(
        verify_stored_log(rows(&records[..17]), &ts, &s.verifier()).unwrap_err(),
        LogError::Truncated {
            index: 1,
            log_size: 17,
            checkpoint_size: 20
        }
    );
}

#[test]
fn stored_log_names_the_edited_record_exactly() {
    let s = signer();
    let records = log(20);
    let ts = tiles(&s, &records, &[4, 8, 16, 20]);
    for seq in [0, 4, 11, 15, 19] {
        let mut edited = records.clone();
        edited[seq as usize] = record(seq, "tampered");
        let err = verify_stored_log(rows(&edited), &ts, &s.verifier()).unwrap_err();
        assert_eq!(err, LogError::Changed { seq });
        assert!(err.to_string().contains(&format!("record {seq} ")), "{err}");
    }
    // Two edits: the first in log order is named.
    let mut edited = records;
    edited[17] = record(17, "tampered");
    edited[6] = record(6, "tampered");
    assert_eq!(
        verify_stored_log(rows(&edited), &ts, &s.verifier()),
        Err(LogError::Changed { seq: 6 })
    );
}

#[test]
fn stored_log_names_the_edited_record_exactly_with_one_sparse_checkpoint() {
    let s = signer();
    let mut records = log(100);
    let ts = tiles(&s, &records, &[100]);
    records[37] = record(37, "tampered");
    assert_eq!(
        verify_stored_log(rows(&records), &ts, &s.verifier()),
        Err(LogError::Changed { seq: 37 })
    );
    // verify_log alone can only name the window.
    let cps: Vec<SignedCheckpoint> = ts.iter().map(|t| t.checkpoint.clone()).collect();
    assert_eq!(
        verify_log(records, &cps, &s.verifier()),
        Err(LogError::Diverged {
            index: 0,
            checkpoint_size: 100,
            first_suspect_seq: 0
        })
    );
}

#[test]
fn stored_log_names_a_deleted_or_duplicated_record() {
    let s = signer();
    let records = log(20);
    let ts = tiles(&s, &records, &[10, 20]);
    let mut deleted = records.clone();
    deleted.remove(6);
    assert_eq!(
        verify_stored_log(rows(&deleted), &ts, &s.verifier()),
        Err(LogError::UnexpectedSeq {
            position: 6,
            found: 7
        })
    );
    // The last record deleted: the log is shorter than its checkpoint.
    assert!(matches!(
        verify_stored_log(rows(&records[..19]), &ts, &s.verifier()),
        Err(LogError::Truncated { log_size: 19, .. })
    ));
    let mut duplicated = records.clone();
    duplicated.insert(3, records[2].clone());
    assert_eq!(
        verify_stored_log(rows(&duplicated), &ts, &s.verifier()),
        Err(LogError::UnexpectedSeq {
            position: 3,
            found: 2
        })
    );
}

#[test]
fn stored_log_names_the_first_of_two_swapped_records() {
    let s = signer();
    let records = log(20);
    let ts = tiles(&s, &records, &[10, 20]);
    // Rows 4 and 5 swap their seqs: the row read at seq 4 holds record 5's content.
    let mut swapped = records.clone();
    swapped[4] = moved(4, &records[5]);
    swapped[5] = moved(5, &records[4]);
    assert_eq!(
        verify_stored_log(rows(&swapped), &ts, &s.verifier()),
        Err(LogError::Changed { seq: 4 })
    );
    // Rows returned out of seq order.
    let mut reordered = records;
    reordered.swap(4, 5);
    assert_eq!(
        verify_stored_log(rows(&reordered), &ts, &s.verifier()),
        Err(LogError::UnexpectedSeq {
            position: 4,
            found: 5
        })
    );
}

#[test]
fn stored_log_names_an_invalid_row() {
    let s = signer();
    let records = log(20);
    let ts = tiles(&s, &records, &[10, 20]);
    let invalid = |seq| StoredRecord::Invalid {
        seq,
        reason: "details are not JSON".to_owned(),
    };
    let mut stored = rows(&records);
    stored[9] = invalid(9);
    assert_eq!(
        verify_stored_log(stored.clone(), &ts, &s.verifier()),
        Err(LogError::InvalidRecord {
            seq: 9,
            reason: "details are not JSON".to_owned()
        })
    );
    // An invalid row in the unsigned tail is still reported.
    let mut tail = rows(&log(25));
    tail[22] = invalid(22);
    assert!(matches!(
        verify_stored_log(tail, &ts, &s.verifier()),
        Err(LogError::InvalidRecord { seq: 22, .. })
    ));
    // An invalid row out of place is a seq problem first.
    stored[9] = invalid(12);
    assert_eq!(
        verify_stored_log(stored, &ts, &s.verifier()),
        Err(LogError::UnexpectedSeq {
            position: 9,
            found: 12
        })
    );
    // An edit before the invalid row is reported first.
    let mut stored = rows(&records);
    stored[3] = StoredRecord::Record(record(3, "tampered"));
    stored[9] = invalid(9);
    assert_eq!(
        verify_stored_log(stored, &ts, &s.verifier()),
        Err(LogError::Changed { seq: 3 })
    );
}

#[test]
fn stored_log_with_edited_hashes_falls_back_to_the_window() {
    let s = signer();
    let records = log(20);
    let mut ts = tiles(&s, &records, &[4, 8, 16, 20]);
    // Record 11 is edited, and so is the hash stored for it (tile 8..16), to match.
    let mut edited = records.clone();
    edited[11] = record(11, "tampered");
    ts[2].leaf_hashes[11 - 8] = edited[11].leaf_hash();
    assert_eq!(
        verify_stored_log(rows(&edited), &ts, &s.verifier()),
        Err(LogError::Diverged {
            index: 2,
            checkpoint_size: 16,
            first_suspect_seq: 8
        })
    );
    // The forged tile vouches for nothing, nor do the ones after it: an edit to 18 is named by
    // window too, not as a (false or true) Changed.
    let mut edited = records.clone();
    edited[18] = record(18, "tampered");
    assert_eq!(
        verify_stored_log(rows(&edited), &ts, &s.verifier()),
        Err(LogError::Diverged {
            index: 3,
            checkpoint_size: 20,
            first_suspect_seq: 16
        })
    );
    // Tiles before the forged one still vouch.
    let mut edited = records.clone();
    edited[5] = record(5, "tampered");
    assert_eq!(
        verify_stored_log(rows(&edited), &ts, &s.verifier()),
        Err(LogError::Changed { seq: 5 })
    );
    // The records themselves intact: the signed roots are the truth, and the log verifies.
    let verified = verify_stored_log(rows(&records), &ts, &s.verifier()).unwrap();
    assert_eq!(verified.signed_size(), 20);
    // Stored hashes of the wrong length are ignored the same way.
    let mut ts = tiles(&s, &records, &[4, 8, 16, 20]);
    ts[2].leaf_hashes.pop();
    let mut edited = records;
    edited[11] = record(11, "tampered");
    assert!(matches!(
        verify_stored_log(rows(&edited), &ts, &s.verifier()),
        Err(LogError::Diverged {
            checkpoint_size: 16,
            first_suspect_seq: 8,
            ..
        })
    ));
}

#[test]
fn stored_log_tiles_stop_vouching_at_a_gap() {
    let s = signer();
    let records = log(20);
    let mut ts = tiles(&s, &records, &[4, 8, 16, 20]);
    // The checkpoint row at size 8 is missing: the tile at 16 holds hashes for 8..16 only.
    ts.remove(1);
    let edit = |seq: u64| {
        let mut edited = records.clone();
        edited[seq as usize] = record(seq, "tampered");
        verify_stored_log(rows(&edited), &ts, &s.verifier())
    };
    assert_eq!(edit(2), Err(LogError::Changed { seq: 2 }));
    assert_eq!(
        edit(11),
        Err(LogError::Diverged {
            index: 1,
            checkpoint_size: 16,
            first_suspect_seq: 4
        })
    );
    assert_eq!(
        edit(18),
        Err(LogError::Diverged {
            index: 2,
            checkpoint_size: 20,
            first_suspect_seq: 16
        })
    );
    // Untouched, the log still verifies against the checkpoints left.
    let verified = verify_stored_log(rows(&records), &ts, &s.verifier()).unwrap();
    assert_eq!((verified.checkpoints(), verified.signed_size()), (3, 20));
}

#[test]
fn stored_log_refuses_a_checkpoint_signed_by_another_key() {
    let s = signer();
    let records = log(20);
    let mut ts = tiles(&s, &records, &[4, 8, 16, 20]);
    ts[2] = tiles(&signer(), &records, &[8, 16]).pop().unwrap();
    assert_eq!(
        verify_stored_log(rows(&records), &ts, &s.verifier()),
        Err(LogError::Checkpoint {
            index: 2,
            size: 16,
            source: NoteError::NoKnownSignature
        })
    );
}
