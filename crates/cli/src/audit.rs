//! `lanyard audit list|verify|prove|export|check-proof`: the server's verifiable audit log.
//!
//! `verify` fetches every record and every checkpoint over the admin socket (or reads an export)
//! and checks them here, with lanyard-policy's Merkle code: the server is not trusted to say that
//! its own log is intact. `check-proof` is fully offline.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use lanyard_policy::audit::{
    AuditRecord, CheckpointTile, CheckpointVerifier, HASH_LEN, Hash, SignedCheckpoint,
    StoredRecord, root_from_inclusion, verify_stored_log,
};
use lanyard_proto::admin::{self as pb, admin_client::AdminClient};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::admin::{AdminOpts, client, rpc_error};
use crate::duration::HumanDuration;
use crate::output::{OutputFormat, print_json, table};
use crate::output::{out, outln};

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// List audit records, oldest first.
    List {
        #[command(flatten)]
        filter: ListArgs,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Recompute the Merkle tree over every record, check the signed checkpoints, and name the
    /// first record that was changed, removed or moved.
    Verify {
        /// Verify an export (`lanyard audit export`) instead of asking the server.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The checkpoint verifier key (default: the server's own; required with --file).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// An inclusion proof of record SEQ in the latest checkpoint, checkable offline with
    /// `lanyard audit check-proof`.
    Prove {
        seq: u64,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Check a proof written by `lanyard audit prove`, offline.
    CheckProof {
        /// The proof (JSON); `-` reads standard input.
        file: PathBuf,
        /// The verifier key to trust (default: the one in the proof, which only shows that the
        /// proof is consistent, not who signed it).
        #[arg(long)]
        key: Option<String>,
    },
    /// Write every record and checkpoint as JSON lines on standard output.
    Export {
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only records of this kind (e.g. task.granted, entry.created).
    #[arg(long)]
    kind: Option<String>,
    /// Only the records of this task.
    #[arg(long)]
    task: Option<String>,
    /// Only records by this actor (a SPIFFE ID, admin:uid=N).
    #[arg(long)]
    actor: Option<String>,
    /// Only records about this subject.
    #[arg(long, conflicts_with = "task")]
    subject: Option<String>,
    /// Only records from this time: Unix seconds, or a duration ago (10m, 2h).
    #[arg(long)]
    since: Option<String>,
    /// Start at this seq.
    #[arg(long, default_value_t = 0)]
    from_seq: u64,
    /// At most this many records (default: all).
    #[arg(long)]
    limit: Option<u64>,
}

/// One record as `list --output json` and `export` print it.
#[derive(Debug, Serialize, Deserialize)]
struct RecordJson {
    seq: u64,
    time_us: i64,
    kind: String,
    actor: String,
    subject: String,
    details: serde_json::Value,
}

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ExportLine {
    Record(RecordJson),
    Checkpoint {
        size: u64,
        signer: String,
        note: String,
        /// Hex, 64 characters per record.
        leaf_hashes: String,
    },
}

/// What `prove` prints and `check-proof` reads.
#[derive(Debug, Serialize, Deserialize)]
struct ProofJson {
    record: RecordJson,
    tree_size: u64,
    /// Hex hashes, leaf to root.
    path: Vec<String>,
    checkpoint: String,
    verifier_key: String,
}

pub(crate) async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List { filter, opts } => list(filter, &opts).await,
        AuditCommand::Verify { file, key, opts } => verify(file, key, &opts).await,
        AuditCommand::Prove { seq, opts } => prove(seq, &opts).await,
        AuditCommand::CheckProof { file, key } => check_proof(&file, key.as_deref()),
        AuditCommand::Export { opts } => export(&opts).await,
    }
}

fn since_micros(since: Option<&str>) -> anyhow::Result<i64> {
    let Some(since) = since else { return Ok(0) };
    let at = if since.bytes().all(|b| b.is_ascii_digit()) {
        UNIX_EPOCH + Duration::from_secs(since.parse().context("--since: out of range")?)
    } else {
        let ago: HumanDuration = since.parse().map_err(|e| {
            anyhow::anyhow!("--since: `{since}`: {e} (give Unix seconds or a duration such as 10m)")
        })?;
        SystemTime::now()
            .checked_sub(ago.get())
            .unwrap_or(UNIX_EPOCH)
    };
    let micros = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    Ok(i64::try_from(micros).unwrap_or(i64::MAX).max(1))
}

/// Pages through the records matching `request` from `request.from_seq`, at most `limit`.
async fn fetch_records(
    admin: &mut AdminClient<Channel>,
    mut request: pb::ListAuditRequest,
    limit: Option<u64>,
) -> anyhow::Result<Vec<pb::AuditRecord>> {
    let mut records = Vec::new();
    loop {
        let page = admin
            .list_audit(request.clone())
            .await
            .map_err(rpc_error)?
            .into_inner();
        records.extend(page.records);
        if let Some(limit) = limit
            && records.len() as u64 >= limit
        {
            records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            return Ok(records);
        }
        if page.next_seq == 0 {
            return Ok(records);
        }
        request.from_seq = page.next_seq;
    }
}

fn record_json(record: &pb::AuditRecord) -> RecordJson {
    RecordJson {
        seq: record.seq,
        time_us: record.time_us,
        kind: record.kind.clone(),
        actor: record.actor.clone(),
        subject: record.subject.clone(),
        // A row edited into something that is not JSON is shown as the text it holds.
        details: serde_json::from_str(&record.details)
            .unwrap_or_else(|_| serde_json::Value::String(record.details.clone())),
    }
}

async fn list(filter: ListArgs, opts: &AdminOpts) -> anyhow::Result<()> {
    let request = pb::ListAuditRequest {
        from_seq: filter.from_seq,
        kind: filter.kind.unwrap_or_default(),
        actor: filter.actor.unwrap_or_default(),
        subject: filter.task.or(filter.subject).unwrap_or_default(),
        since: since_micros(filter.since.as_deref())?,
        limit: 0,
    };
    let records = fetch_records(&mut client(opts).await?, request, filter.limit).await?;
    if opts.output == OutputFormat::Json {
        let records: Vec<RecordJson> = records.iter().map(record_json).collect();
        return print_json(&serde_json::json!({ "records": records }));
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                format_time(r.time_us),
                r.kind.clone(),
                r.actor.clone(),
                r.subject.clone(),
                r.details.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["SEQ", "TIME", "KIND", "ACTOR", "SUBJECT", "DETAILS"],
            &rows
        )
    );
    Ok(())
}

fn format_time(time_us: i64) -> String {
    let secs = time_us.div_euclid(1_000_000);
    let micros = time_us.rem_euclid(1_000_000);
    format!("{secs}.{micros:06}")
}

/// Everything `verify` needs, from the server or an export.
struct Log {
    records: Vec<RecordJson>,
    checkpoints: Vec<(u64, String, String, Vec<u8>)>,
}

async fn fetch_log(
    admin: &mut AdminClient<Channel>,
) -> anyhow::Result<(Log, pb::ListCheckpointsResponse)> {
    // Checkpoints first: every record they sign is then in the log read after them.
    let mut request = pb::ListCheckpointsRequest::default();
    let mut checkpoints = Vec::new();
    let info = loop {
        let page = admin
            .list_checkpoints(request.clone())
            .await
            .map_err(rpc_error)?
            .into_inner();
        let Some(last) = page.checkpoints.last() else {
            break page;
        };
        request.after_size = last.size;
        request.after_signer = last.signer.clone();
        checkpoints.extend(page.checkpoints.iter().map(|c| {
            (
                c.size,
                c.signer.clone(),
                c.note.clone(),
                c.leaf_hashes.clone(),
            )
        }));
    };
    let records = fetch_records(admin, pb::ListAuditRequest::default(), None).await?;
    let log = Log {
        records: records.iter().map(record_json).collect(),
        checkpoints,
    };
    Ok((log, info))
}

fn read_export(path: &std::path::Path) -> anyhow::Result<Log> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut log = Log {
        records: Vec::new(),
        checkpoints: Vec::new(),
    };
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ExportLine>(&line)
            .with_context(|| format!("{}:{}: not an export line", path.display(), n + 1))?
        {
            ExportLine::Record(record) => log.records.push(record),
            ExportLine::Checkpoint {
                size,
                signer,
                note,
                leaf_hashes,
            } => log.checkpoints.push((
                size,
                signer,
                note,
                from_hex(&leaf_hashes)
                    .with_context(|| format!("{}:{}: leaf_hashes", path.display(), n + 1))?,
            )),
        }
    }
    Ok(log)
}

async fn verify(
    file: Option<PathBuf>,
    key: Option<String>,
    opts: &AdminOpts,
) -> anyhow::Result<()> {
    let (log, key, stopped) = match file {
        Some(file) => {
            let Some(key) = key else {
                bail!(
                    "--key is required with --file: the verifier key of the server that signed the checkpoints"
                );
            };
            (read_export(&file)?, key, String::new())
        }
        None => {
            let (log, info) = fetch_log(&mut client(opts).await?).await?;
            (log, key.unwrap_or(info.verifier_key), info.signing_stopped)
        }
    };
    let verifier: CheckpointVerifier = key
        .parse()
        .map_err(|e| anyhow::anyhow!("verifier key: {e}"))?;
    let mut tiles = Vec::new();
    let mut other_signers = 0;
    for (size, signer, note, leaf_hashes) in &log.checkpoints {
        if signer != verifier.name() {
            other_signers += 1;
            continue;
        }
        let checkpoint: SignedCheckpoint = note
            .parse()
            .map_err(|e| anyhow::anyhow!("checkpoint of size {size}: {e}"))?;
        tiles.push(CheckpointTile {
            checkpoint,
            leaf_hashes: hashes(leaf_hashes)
                .with_context(|| format!("checkpoint of size {size}"))?,
        });
    }
    let rows: Vec<StoredRecord> = log.records.iter().map(stored_record).collect();
    let records = rows.len();
    let result = verify_stored_log(rows, &tiles, &verifier);
    let summary = match &result {
        Ok(verified) => serde_json::json!({
            "ok": true,
            "records": verified.size(),
            "checkpoints": verified.checkpoints(),
            "signed_size": verified.signed_size(),
            "unsigned_records": verified.size() - verified.signed_size(),
            "other_signers_checkpoints": other_signers,
            "signing_stopped": stopped,
        }),
        Err(e) => serde_json::json!({
            "ok": false,
            "records": records,
            "error": e.to_string(),
            "first_bad_seq": first_bad_seq(e),
            "signing_stopped": stopped,
        }),
    };
    if opts.output == OutputFormat::Json {
        print_json(&summary)?;
    } else if let Ok(verified) = &result {
        outln!(
            "ok: {} records; {} checkpoints by {} verified; records up to {} are signed",
            verified.size(),
            verified.checkpoints(),
            verifier.name(),
            verified.signed_size()
        );
    }
    if !stopped.is_empty() {
        eprintln!("warning: the server stopped signing checkpoints: {stopped}");
    }
    match result {
        Ok(_) => Ok(()),
        Err(e) => bail!("audit log verification failed: {e}"),
    }
}

/// The seq a verification error names as the first bad record, if it names one.
fn first_bad_seq(error: &lanyard_policy::audit::LogError) -> Option<u64> {
    use lanyard_policy::audit::LogError as E;
    match error {
        E::UnexpectedSeq { position, .. } => Some(*position),
        E::Changed { seq } | E::InvalidRecord { seq, .. } => Some(*seq),
        E::Diverged {
            first_suspect_seq, ..
        } => Some(*first_suspect_seq),
        E::Truncated { log_size, .. } => Some(*log_size),
        _ => None,
    }
}

fn stored_record(record: &RecordJson) -> StoredRecord {
    let time = u64::try_from(record.time_us)
        .ok()
        .and_then(|us| UNIX_EPOCH.checked_add(Duration::from_micros(us)));
    let built = match time {
        Some(time) => AuditRecord::new(
            record.seq,
            time,
            record.kind.clone(),
            record.actor.clone(),
            record.subject.clone(),
            record.details.clone(),
        )
        .map_err(|e| e.to_string()),
        None => Err("time is out of range".to_owned()),
    };
    match built {
        // Details that were not JSON came back as a string; a record's details are an object.
        Ok(_) if !record.details.is_object() => StoredRecord::Invalid {
            seq: record.seq,
            reason: "details are not a JSON object".to_owned(),
        },
        Ok(record) => StoredRecord::Record(record),
        Err(reason) => StoredRecord::Invalid {
            seq: record.seq,
            reason,
        },
    }
}

async fn prove(seq: u64, opts: &AdminOpts) -> anyhow::Result<()> {
    let proof = client(opts)
        .await?
        .prove_audit(pb::ProveAuditRequest { seq })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let record = proof
        .record
        .as_ref()
        .context("the server sent a proof without its record")?;
    print_json(&ProofJson {
        record: record_json(record),
        tree_size: proof.tree_size,
        path: proof.path.iter().map(|h| to_hex(h)).collect(),
        checkpoint: proof.checkpoint,
        verifier_key: proof.verifier_key,
    })
}

fn check_proof(file: &std::path::Path, key: Option<&str>) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let proof: ProofJson =
        serde_json::from_str(&text).context("not a proof from `lanyard audit prove`")?;
    let verifier: CheckpointVerifier = key
        .unwrap_or(&proof.verifier_key)
        .parse()
        .map_err(|e| anyhow::anyhow!("verifier key: {e}"))?;
    let signed: SignedCheckpoint = proof
        .checkpoint
        .parse()
        .map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
    let checkpoint = verifier
        .verify(&signed)
        .map_err(|e| anyhow::anyhow!("the checkpoint is not signed by {}: {e}", verifier.name()))?;
    if checkpoint.size() != proof.tree_size {
        bail!(
            "the proof is for a tree of {} records but the checkpoint signs {}",
            proof.tree_size,
            checkpoint.size()
        );
    }
    let record = match stored_record(&proof.record) {
        StoredRecord::Record(record) => record,
        StoredRecord::Invalid { reason, .. } => {
            bail!("the record in the proof is invalid: {reason}")
        }
    };
    let path: Vec<Hash> = proof
        .path
        .iter()
        .map(|h| from_hex(h).and_then(|b| hash(&b)))
        .collect::<anyhow::Result<_>>()
        .context("path")?;
    let root = root_from_inclusion(&record.leaf_hash(), record.seq(), proof.tree_size, &path)
        .map_err(|e| anyhow::anyhow!("the proof does not fit: {e}"))?;
    if root != *checkpoint.root() {
        bail!(
            "record {} is not in the log signed by {} at size {}",
            record.seq(),
            verifier.name(),
            checkpoint.size()
        );
    }
    outln!(
        "ok: record {} is in the log signed by {} at size {}{}",
        record.seq(),
        verifier.name(),
        checkpoint.size(),
        if key.is_none() {
            " (key taken from the proof; pass --key to check who signed it)"
        } else {
            ""
        }
    );
    Ok(())
}

async fn export(opts: &AdminOpts) -> anyhow::Result<()> {
    let (log, _) = fetch_log(&mut client(opts).await?).await?;
    for record in log.records {
        outln!("{}", serde_json::to_string(&ExportLine::Record(record))?);
    }
    for (size, signer, note, leaf_hashes) in log.checkpoints {
        let line = ExportLine::Checkpoint {
            size,
            signer,
            note,
            leaf_hashes: to_hex(&leaf_hashes),
        };
        outln!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}

fn hashes(bytes: &[u8]) -> anyhow::Result<Vec<Hash>> {
    if !bytes.len().is_multiple_of(HASH_LEN) {
        bail!("leaf hashes are not a whole number of {HASH_LEN}-byte hashes");
    }
    bytes.chunks(HASH_LEN).map(hash).collect()
}

fn hash(bytes: &[u8]) -> anyhow::Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a hash is {HASH_LEN} bytes, got {}", bytes.len()))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("not hex");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(Into::into))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 0xab, 0xff])).unwrap(),
            [0, 1, 0xab, 0xff]
        );
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
        assert!(hashes(&[0; 33]).is_err());
        assert_eq!(hashes(&[7; 64]).unwrap().len(), 2);
    }

    #[test]
    fn since_takes_unix_seconds_or_a_duration_ago() {
        assert_eq!(since_micros(None).unwrap(), 0);
        assert_eq!(
            since_micros(Some("1700000000")).unwrap(),
            1_700_000_000_000_000
        );
        let ago = since_micros(Some("10m")).unwrap();
        let now = i64::try_from(crate::unix_seconds(SystemTime::now())).unwrap() * 1_000_000;
        assert!(ago < now && ago > now - 11 * 60 * 1_000_000);
        assert!(since_micros(Some("yesterday")).is_err());
    }
}
