//! The audit log and its signed checkpoints.
//!
//! Seqs come from the `audit_seq` counter, bumped inside the appending transaction: the counter's
//! row lock makes appends commit in seq order, so a reader that asks for "records from N" and
//! then "from one past the last seq it got" never skips a record that committed late (which a
//! sequence or AUTOINCREMENT would allow on PostgreSQL). The counter is also the log's size: a
//! row deleted behind the store's back leaves a gap for the verifier to find, not a shorter log.

use super::{SqlStore, counter_value, missing_counter};
use crate::codec::{time_to_us, u64_to_i64, us_to_time};
use crate::db::{Row, Stmt, Tx};
use crate::{AuditAppend, AuditFilter, AuditRow, Error, Result, StoredCheckpoint};

pub(super) const COUNTER: &str = "audit_seq";
const KIND: &str = "audit record";
const CHECKPOINT_KIND: &str = "audit checkpoint";

/// The columns [`decode_row`] reads, in order.
const COLUMNS: &str = "seq, time_us, kind, actor, subject, details";
const CHECKPOINT_COLUMNS: &str = "signer, size, note, leaf_hashes, created_at_us";

/// Longest kind, actor or subject the store takes: they are indexed, and PostgreSQL refuses
/// B-tree keys above ~2.7 kB. (The server's own bounds are tighter.)
const MAX_KEY_LEN: usize = 2048;
const HASH_LEN: usize = 32;

/// Appends `records` in one transaction, in order.
pub(super) async fn append(store: &SqlStore, records: &[AuditAppend]) -> Result<Vec<AuditRow>> {
    for record in records {
        validate(record)?;
    }
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let now = time_to_us("now", store.now())?;
    let mut tx = store.pool.begin_write().await?;
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        rows.push(append_in(&mut tx, record, now).await?);
    }
    tx.commit().await?;
    Ok(rows)
}

/// Refuses a record the log cannot hold.
pub(super) fn validate(record: &AuditAppend) -> Result<()> {
    if record.kind.is_empty() {
        return Err(Error::InvalidArgument {
            field: "kind",
            reason: "an audit record kind must not be empty".to_owned(),
        });
    }
    for (field, value) in [
        ("kind", &record.kind),
        ("actor", &record.actor),
        ("subject", &record.subject),
    ] {
        if value.len() > MAX_KEY_LEN {
            return Err(Error::InvalidArgument {
                field,
                reason: format!(
                    "{} bytes is above the {MAX_KEY_LEN} the store holds",
                    value.len()
                ),
            });
        }
    }
    Ok(())
}

/// Appends a validated record inside `tx` at time `now` (µs). Locks the counter row until `tx`
/// ends, so concurrent appends commit one after the other, in seq order.
pub(super) async fn append_in(tx: &mut Tx, record: &AuditAppend, now: i64) -> Result<AuditRow> {
    let row = tx
        .fetch_optional(
            Stmt::new("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
                .bind(COUNTER),
        )
        .await?
        .ok_or_else(|| missing_counter(COUNTER))?;
    let size = counter_value(COUNTER, row.get(0)?)?;
    // The counter was bumped from a value of at least 0, unless someone set it below.
    let seq = size.checked_sub(1).ok_or_else(|| Error::InvalidData {
        kind: "counter",
        key: COUNTER.to_owned(),
        reason: "negative value".to_owned(),
    })?;
    tx.execute(
        Stmt::new(
            "INSERT INTO audit_log (seq, time_us, kind, actor, subject, details) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(u64_to_i64("seq", seq)?)
        .bind(now)
        .bind(record.kind.as_str())
        .bind(record.actor.as_str())
        .bind(record.subject.as_str())
        .bind(record.details.as_str()),
    )
    .await?;
    Ok(AuditRow {
        seq,
        time: us_to_time(now).ok_or_else(|| Error::InvalidArgument {
            field: "now",
            reason: "time is out of the range the store holds".to_owned(),
        })?,
        kind: record.kind.clone(),
        actor: record.actor.clone(),
        subject: record.subject.clone(),
        details: record.details.clone(),
    })
}

pub(super) async fn list(
    store: &SqlStore,
    filter: &AuditFilter,
    limit: u32,
) -> Result<Vec<AuditRow>> {
    let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1"));
    // No condition from 0: a row planted with a negative seq is then read, and refused.
    if filter.from_seq > 0 {
        stmt.push(" AND seq >= ")
            .push_bind(u64_to_i64("from_seq", filter.from_seq)?);
    }
    if let Some(kind) = &filter.kind {
        stmt.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(actor) = &filter.actor {
        stmt.push(" AND actor = ").push_bind(actor.as_str());
    }
    if let Some(subject) = &filter.subject {
        stmt.push(" AND subject = ").push_bind(subject.as_str());
    }
    if let Some(since) = filter.since {
        stmt.push(" AND time_us >= ")
            .push_bind(time_to_us("since", since)?);
    }
    stmt.push(" ORDER BY seq");
    if limit > 0 {
        stmt.push(" LIMIT ").push_bind(i64::from(limit));
    }
    store
        .pool
        .fetch_all(stmt)
        .await?
        .iter()
        .map(decode_row)
        .collect()
}

/// Returned verbatim but for the seq and time, which must be values an [`AuditRow`] can hold.
fn decode_row(row: &Row) -> Result<AuditRow> {
    let seq: i64 = row.get(0)?;
    let bad = |reason: &str| Error::InvalidData {
        kind: KIND,
        key: seq.to_string(),
        reason: reason.to_owned(),
    };
    let time: i64 = row.get(1)?;
    Ok(AuditRow {
        seq: u64::try_from(seq).map_err(|_| bad("negative seq"))?,
        time: us_to_time(time).ok_or_else(|| bad("time: out of range"))?,
        kind: row.get(2)?,
        actor: row.get(3)?,
        subject: row.get(4)?,
        details: row.get(5)?,
    })
}

// --- checkpoints ---

pub(super) async fn append_checkpoint(
    store: &SqlStore,
    checkpoint: &StoredCheckpoint,
) -> Result<()> {
    let invalid = |field: &'static str, reason: &str| Error::InvalidArgument {
        field,
        reason: reason.to_owned(),
    };
    if checkpoint.signer.is_empty() {
        return Err(invalid("signer", "must not be empty"));
    }
    if !checkpoint.leaf_hashes.len().is_multiple_of(HASH_LEN) {
        return Err(invalid(
            "leaf_hashes",
            "the length must be a multiple of 32 (one SHA-256 per record)",
        ));
    }
    if u64::try_from(checkpoint.leaf_hashes.len() / HASH_LEN).unwrap_or(u64::MAX) > checkpoint.size
    {
        return Err(invalid(
            "leaf_hashes",
            "more leaf hashes than the checkpoint has records",
        ));
    }
    // The created_at of the input is ignored: the store's clock says when it was stored.
    let stmt = Stmt::new(
        "INSERT INTO audit_checkpoints (signer, size, note, leaf_hashes, created_at_us) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (signer, size) DO NOTHING",
    )
    .bind(checkpoint.signer.as_str())
    .bind(u64_to_i64("size", checkpoint.size)?)
    .bind(checkpoint.note.as_str())
    .bind(checkpoint.leaf_hashes.clone())
    .bind(time_to_us("now", store.now())?);
    store.pool.execute(stmt).await?;
    Ok(())
}

pub(super) async fn list_checkpoints(
    store: &SqlStore,
    signer: Option<&str>,
    after: Option<(u64, &str)>,
    limit: u32,
) -> Result<Vec<StoredCheckpoint>> {
    let mut stmt = Stmt::new(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE 1 = 1"
    ));
    if let Some(signer) = signer {
        stmt.push(" AND signer = ").push_bind(signer);
    }
    if let Some((size, last_signer)) = after {
        let size = u64_to_i64("after", size)?;
        stmt.push(" AND (size > ")
            .push_bind(size)
            .push(" OR (size = ")
            .push_bind(size)
            .push(" AND signer > ")
            .push_bind(last_signer)
            .push("))");
    }
    stmt.push(" ORDER BY size, signer");
    if limit > 0 {
        stmt.push(" LIMIT ").push_bind(i64::from(limit));
    }
    store
        .pool
        .fetch_all(stmt)
        .await?
        .iter()
        .map(decode_checkpoint)
        .collect()
}

pub(super) async fn latest_checkpoint(
    store: &SqlStore,
    signer: &str,
) -> Result<Option<StoredCheckpoint>> {
    let stmt = Stmt::new(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE signer = $1 \
         ORDER BY size DESC LIMIT 1"
    ))
    .bind(signer);
    store
        .pool
        .fetch_optional(stmt)
        .await?
        .map(|row| decode_checkpoint(&row))
        .transpose()
}

fn decode_checkpoint(row: &Row) -> Result<StoredCheckpoint> {
    let signer: String = row.get(0)?;
    let size: i64 = row.get(1)?;
    let bad = |reason: &str| Error::InvalidData {
        kind: CHECKPOINT_KIND,
        key: format!("{signer}@{size}"),
        reason: reason.to_owned(),
    };
    let leaf_hashes: Vec<u8> = row.get(3)?;
    if !leaf_hashes.len().is_multiple_of(HASH_LEN) {
        return Err(bad("leaf_hashes: length is not a multiple of 32"));
    }
    let created_at: i64 = row.get(4)?;
    Ok(StoredCheckpoint {
        size: u64::try_from(size).map_err(|_| bad("negative size"))?,
        note: row.get(2)?,
        leaf_hashes,
        created_at: us_to_time(created_at).ok_or_else(|| bad("created_at: out of range"))?,
        signer,
    })
}
