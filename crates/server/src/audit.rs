//! The audit log, as the server runs it: records go into the datastore (which gives them their
//! sequence numbers), and this server follows the log in order, keeps the leaf hashes of every
//! record as it first read it, and signs a checkpoint (C2SP signed note over the RFC 6962 root)
//! whenever the log has grown, at most every `checkpoint_interval`.
//!
//! Each checkpoint is stored with the leaf hashes it adds, so a verifier can name the exact record
//! that changed (see `docs/audit.md`). At start the server rebuilds its view from those hashes
//! (checked against its own signatures), not from the rows, so the proofs it gives are of the log
//! it signed. It never signs a fork: if a row differs from what its checkpoints vouch for, a
//! record was changed behind its back, and it stops signing (and says so in its log and in
//! `lanyard audit verify`) rather than vouch for the changed history.

use std::path::Path;
use std::sync::Mutex;

use lanyard_policy::audit::{
    AuditRecord, CheckpointSigner, CheckpointTile, Frontier, HASH_LEN, Hash, RecordError,
    SignedCheckpoint, inclusion_proof, leaf_hash, root_from_inclusion, vouched_leaves,
};
use lanyard_store::{AuditAppend, AuditFilter, AuditRow, DataStore, StoredCheckpoint};
use serde_json::Value;

use crate::ServerError;

/// The checkpoint key's file in the data directory: Ed25519, PKCS#8 DER, 0600.
const KEY_FILE: &str = "audit-checkpoint.key";
/// Records read from the datastore per query while following the log.
const READ_BATCH: u32 = 10_000;

/// Why an inclusion proof cannot be given.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProofError {
    #[error("the audit log has no record {seq}")]
    NoSuchRecord { seq: u64 },
    #[error("record {seq} is not covered by a signed checkpoint yet; retry in a moment")]
    NotYetSigned { seq: u64 },
    #[error(
        "record {seq} in the datastore is not the record the log committed to: it was changed after it was written"
    )]
    Changed { seq: u64 },
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] lanyard_store::Error),
}

/// An inclusion proof of one record in the tree of a signed checkpoint.
#[derive(Debug)]
pub(crate) struct Proof {
    pub(crate) record: AuditRow,
    pub(crate) tree_size: u64,
    pub(crate) path: Vec<Hash>,
    pub(crate) checkpoint: String,
}

/// The server's side of the audit log.
#[derive(Debug)]
pub(crate) struct AuditLog {
    signer: CheckpointSigner,
    tree: Mutex<Tree>,
}

/// The log as this server has read it.
#[derive(Debug, Default)]
struct Tree {
    /// Leaf hashes of records 0..len, as each was first read.
    leaves: Vec<Hash>,
    frontier: Frontier,
    /// The size of the last checkpoint this server signed.
    signed: u64,
    /// Why this server stopped signing, if it did.
    fork: Option<String>,
}

// === impl AuditLog ===

impl AuditLog {
    /// Loads (or creates) this server's checkpoint key and rebuilds its view of the log: the leaf
    /// hashes its own checkpoints vouch for (stored with them, checked against its signatures),
    /// then the records appended after them. Every record the checkpoints cover is compared with
    /// the hash they vouch for; one that differs (or is missing) means the datastore was changed
    /// behind the server's back, and it stops signing.
    pub(crate) async fn load(
        data_dir: &Path,
        trust_domain: &lanyard_core::TrustDomain,
        server_id: &str,
        store: &dyn DataStore,
    ) -> Result<Self, ServerError> {
        let pkcs8 = load_or_create_key(&data_dir.join(KEY_FILE))?;
        let name = format!("{trust_domain}/lanyard-audit/{server_id}");
        let signer = CheckpointSigner::from_pkcs8(name, &pkcs8)
            .map_err(|e| ServerError::State(format!("audit checkpoint key: {e}")))?;
        let checkpoints = store.list_checkpoints(Some(signer.name()), None, 0).await?;
        let signed = checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
        let (vouched, mut fork) = vouched_by(&checkpoints, &signer);
        let mut tree = Tree {
            signed,
            ..Tree::default()
        };
        for leaf in &vouched {
            tree.leaves.push(*leaf);
            tree.frontier.push(*leaf);
        }
        if fork.is_none() {
            fork = compare_with_store(&vouched, store).await?;
        }
        if let Some(reason) = &fork {
            tracing::error!(%reason, "the audit log in the datastore does not match the checkpoints this server signed; no further checkpoints will be signed until it is investigated (`lanyard audit verify`)");
        }
        tree.fork = fork;
        let log = Self {
            signer,
            tree: Mutex::new(tree),
        };
        log.catch_up(store).await?;
        Ok(log)
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The verifier key for this server's checkpoints, in the C2SP note verifier format.
    pub(crate) fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// The origin line of this server's checkpoints.
    pub(crate) fn origin(&self) -> &str {
        self.signer.name()
    }

    /// Why this server stopped signing checkpoints, if it did.
    pub(crate) fn fork(&self) -> Option<String> {
        self.tree().fork.clone()
    }

    /// Reads the records appended since the last call (by any server on the datastore).
    pub(crate) async fn catch_up(&self, store: &dyn DataStore) -> Result<(), lanyard_store::Error> {
        loop {
            let from = u64::try_from(self.tree().leaves.len()).unwrap_or(u64::MAX);
            let rows = store
                .list_audit(
                    &AuditFilter {
                        from_seq: from,
                        ..AuditFilter::default()
                    },
                    READ_BATCH,
                )
                .await?;
            let read = rows.len();
            let mut tree = self.tree();
            for row in rows {
                let expected = u64::try_from(tree.leaves.len()).unwrap_or(u64::MAX);
                if row.seq != expected {
                    // A missing seq below the counter was deleted: appends commit in seq order.
                    let reason = format!("audit record {expected} is missing from the datastore");
                    if tree.fork.is_none() {
                        tracing::error!(%reason, "audit log changed behind this server's back; no further checkpoints will be signed");
                        tree.fork = Some(reason);
                    }
                    return Ok(());
                }
                let leaf = row_leaf_hash(&row);
                tree.leaves.push(leaf);
                tree.frontier.push(leaf);
            }
            if read < READ_BATCH as usize {
                return Ok(());
            }
        }
    }

    /// Reads new records and signs a checkpoint over them, if there are any and the log has not
    /// forked. Returns the size signed.
    pub(crate) async fn checkpoint(
        &self,
        store: &dyn DataStore,
    ) -> Result<Option<u64>, lanyard_store::Error> {
        self.catch_up(store).await?;
        let (size, root, leaf_hashes) = {
            let tree = self.tree();
            let size = tree.frontier.size();
            if tree.fork.is_some() || size == tree.signed {
                return Ok(None);
            }
            let start = usize::try_from(tree.signed).unwrap_or(usize::MAX);
            let leaf_hashes: Vec<u8> = tree.leaves[start..].iter().flatten().copied().collect();
            (size, tree.frontier.root(), leaf_hashes)
        };
        let signed =
            self.signer
                .sign(size, root)
                .map_err(|e| lanyard_store::Error::InvalidArgument {
                    field: "checkpoint",
                    reason: e.to_string(),
                })?;
        store
            .append_checkpoint(&StoredCheckpoint {
                size,
                signer: self.signer.name().to_owned(),
                note: signed.to_string(),
                leaf_hashes,
                created_at: std::time::SystemTime::UNIX_EPOCH,
            })
            .await?;
        self.tree().signed = size;
        Ok(Some(size))
    }

    /// An inclusion proof of record `seq` in this server's latest checkpoint.
    pub(crate) async fn prove(&self, store: &dyn DataStore, seq: u64) -> Result<Proof, ProofError> {
        let record = store
            .list_audit(
                &AuditFilter {
                    from_seq: seq,
                    ..AuditFilter::default()
                },
                1,
            )
            .await?
            .into_iter()
            .find(|row| row.seq == seq)
            .ok_or(ProofError::NoSuchRecord { seq })?;
        let checkpoint = store
            .latest_checkpoint(self.signer.name())
            .await?
            .filter(|c| c.size > seq)
            .ok_or(ProofError::NotYetSigned { seq })?;
        let tree = self.tree();
        let size = usize::try_from(checkpoint.size).unwrap_or(usize::MAX);
        let index = usize::try_from(seq).unwrap_or(usize::MAX);
        let leaves = tree
            .leaves
            .get(..size)
            .ok_or_else(|| ProofError::Internal("the checkpoint is ahead of the log".to_owned()))?;
        if leaves[index] != row_leaf_hash(&record) {
            return Err(ProofError::Changed { seq });
        }
        let path = inclusion_proof(seq, checkpoint.size, leaves)
            .map_err(|e| ProofError::Internal(e.to_string()))?;
        // Never hand out a proof that does not check out against the checkpoint it names.
        let signed_root = checkpoint
            .note
            .parse::<SignedCheckpoint>()
            .map(|note| *note.checkpoint().root())
            .map_err(|e| ProofError::Internal(format!("the checkpoint does not parse: {e}")))?;
        if root_from_inclusion(&leaves[index], seq, checkpoint.size, &path).ok()
            != Some(signed_root)
        {
            return Err(ProofError::Internal(
                "this server's view of the log does not reproduce its own checkpoint; see its log and `lanyard audit verify`".to_owned(),
            ));
        }
        Ok(Proof {
            record,
            tree_size: checkpoint.size,
            path,
            checkpoint: checkpoint.note,
        })
    }
}

/// Builds the record to append: checks the bounds and puts `details` in canonical form.
pub(crate) fn draft(
    kind: &str,
    actor: &str,
    subject: &str,
    details: Value,
    now: std::time::SystemTime,
) -> Result<AuditAppend, RecordError> {
    let record = AuditRecord::new(0, now, kind, actor, subject, details)?;
    Ok(AuditAppend {
        kind: record.kind().to_owned(),
        actor: record.actor().to_owned(),
        subject: record.subject().to_owned(),
        details: record.details_canonical().to_owned(),
    })
}

/// The record a stored row holds, if it is one (a row edited into invalid JSON or out of bounds
/// is not).
pub(crate) fn row_record(row: &AuditRow) -> Result<AuditRecord, String> {
    let details: Value =
        serde_json::from_str(&row.details).map_err(|e| format!("details are not JSON: {e}"))?;
    AuditRecord::new(
        row.seq,
        row.time,
        row.kind.clone(),
        row.actor.clone(),
        row.subject.clone(),
        details,
    )
    .map_err(|e| e.to_string())
}

/// The leaf hash of a stored row. A row that is not a valid record still gets a leaf (a hash of
/// its raw fields under a distinct prefix), so that positions stay aligned and the verifier
/// reports that record, not every one after it.
fn row_leaf_hash(row: &AuditRow) -> Hash {
    match row_record(row) {
        Ok(record) => record.leaf_hash(),
        Err(_) => {
            let mut data = b"lanyard-invalid-audit-row\0".to_vec();
            for field in [&row.kind, &row.actor, &row.subject, &row.details] {
                data.extend_from_slice(field.as_bytes());
                data.push(0);
            }
            leaf_hash(&data)
        }
    }
}

/// The leaf hashes this server's own checkpoints vouch for, and why they fall short of the
/// largest checkpoint if they do (a checkpoint or its stored hashes were changed or removed).
fn vouched_by(
    checkpoints: &[StoredCheckpoint],
    signer: &CheckpointSigner,
) -> (Vec<Hash>, Option<String>) {
    let mut tiles = Vec::with_capacity(checkpoints.len());
    for checkpoint in checkpoints {
        let Ok(note) = checkpoint.note.parse::<SignedCheckpoint>() else {
            return (
                Vec::new(),
                Some(format!(
                    "the checkpoint of size {} does not parse",
                    checkpoint.size
                )),
            );
        };
        let leaf_hashes = checkpoint
            .leaf_hashes
            .chunks_exact(HASH_LEN)
            .filter_map(|chunk| Hash::try_from(chunk).ok())
            .collect();
        tiles.push(CheckpointTile {
            checkpoint: note,
            leaf_hashes,
        });
    }
    let signed = checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
    match vouched_leaves(&tiles, &signer.verifier()) {
        Ok(vouched) if vouched.len() as u64 >= signed => (vouched, None),
        Ok(vouched) => {
            let reason = format!(
                "the leaf hashes stored with this server's checkpoints reproduce its signed roots only up to {} of {signed} records",
                vouched.len()
            );
            (vouched, Some(reason))
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

/// The first record the datastore holds differently from what the checkpoints vouch for.
async fn compare_with_store(
    vouched: &[Hash],
    store: &dyn DataStore,
) -> Result<Option<String>, lanyard_store::Error> {
    let mut next = 0u64;
    let end = vouched.len() as u64;
    while next < end {
        let rows = store
            .list_audit(
                &AuditFilter {
                    from_seq: next,
                    ..AuditFilter::default()
                },
                READ_BATCH,
            )
            .await?;
        if rows.is_empty() {
            return Ok(Some(format!(
                "audit record {next} is missing from the datastore"
            )));
        }
        for row in rows {
            if row.seq >= end {
                return Ok(None);
            }
            if row.seq != next {
                return Ok(Some(format!(
                    "audit record {next} is missing from the datastore"
                )));
            }
            let index = usize::try_from(next).unwrap_or(usize::MAX);
            if vouched.get(index) != Some(&row_leaf_hash(&row)) {
                return Ok(Some(format!(
                    "audit record {next} in the datastore is not the record this server signed"
                )));
            }
            next += 1;
        }
    }
    Ok(None)
}

/// Reads the checkpoint key, or makes one (0600, written in full before it is renamed into place).
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, ServerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let io_error = |source| ServerError::DataDir {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| ServerError::State("cannot generate the audit checkpoint key".to_owned()))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error)?;
    file.write_all(pkcs8.as_ref()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_error)?;
    Ok(pkcs8.as_ref().to_vec())
}
