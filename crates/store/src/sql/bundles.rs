//! Trust bundles, this server's own and federated ones alike, keyed by trust domain.

use lanyard_core::TrustDomain;

use super::SqlStore;
use crate::codec::{time_to_us, u64_to_i64, us_to_time};
use crate::db::{Row, Stmt};
use crate::{BundleRecord, BundleWrite, Error, Result};

const KIND: &str = "bundle";

/// The columns [`decode_row`] reads, in order.
const COLUMNS: &str = "trust_domain, document, sequence, updated_at_us";

pub(super) async fn set(
    store: &SqlStore,
    trust_domain: &TrustDomain,
    document: &str,
    sequence: u64,
    mode: BundleWrite,
) -> Result<BundleRecord> {
    let condition = match mode {
        // The upsert's WHERE leaves a stored bundle with an equal or higher sequence alone (and
        // returns no row); the check and the write are one statement.
        BundleWrite::IfNewer => " WHERE bundles.sequence < excluded.sequence",
        BundleWrite::Unconditional => "",
    };
    let stmt = Stmt::new(format!(
        "INSERT INTO bundles (trust_domain, document, sequence, updated_at_us) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (trust_domain) DO UPDATE SET \
         document = excluded.document, sequence = excluded.sequence, \
         updated_at_us = excluded.updated_at_us{condition} RETURNING {COLUMNS}"
    ))
    .bind(trust_domain.as_str())
    .bind(document)
    .bind(u64_to_i64("sequence", sequence)?)
    .bind(time_to_us("now", store.now())?);
    if let Some(row) = store.pool.fetch_optional(stmt).await? {
        return decode_row(&row);
    }
    let stored = get(store, trust_domain)
        .await?
        .map_or_else(|| "none".to_owned(), |b| b.sequence.to_string());
    Err(Error::Conflict {
        kind: KIND,
        key: trust_domain.to_string(),
        detail: format!("sequence {sequence} is not newer than the stored sequence {stored}"),
    })
}

pub(super) async fn get(
    store: &SqlStore,
    trust_domain: &TrustDomain,
) -> Result<Option<BundleRecord>> {
    let stmt = Stmt::new(format!(
        "SELECT {COLUMNS} FROM bundles WHERE trust_domain = $1"
    ))
    .bind(trust_domain.as_str());
    store
        .pool
        .fetch_optional(stmt)
        .await?
        .map(|row| decode_row(&row))
        .transpose()
}

pub(super) async fn list(store: &SqlStore) -> Result<Vec<BundleRecord>> {
    let stmt = Stmt::new(format!(
        "SELECT {COLUMNS} FROM bundles ORDER BY trust_domain"
    ));
    store
        .pool
        .fetch_all(stmt)
        .await?
        .iter()
        .map(decode_row)
        .collect()
}

pub(super) async fn delete(store: &SqlStore, trust_domain: &TrustDomain) -> Result<()> {
    let removed = store
        .pool
        .execute(
            Stmt::new("DELETE FROM bundles WHERE trust_domain = $1").bind(trust_domain.as_str()),
        )
        .await?;
    if removed == 0 {
        return Err(Error::NotFound {
            kind: KIND,
            key: trust_domain.to_string(),
        });
    }
    Ok(())
}

fn decode_row(row: &Row) -> Result<BundleRecord> {
    let name: String = row.get(0)?;
    let bad = |reason: String| Error::InvalidData {
        kind: KIND,
        key: name.clone(),
        reason,
    };
    let sequence: i64 = row.get(2)?;
    let updated_at: i64 = row.get(3)?;
    Ok(BundleRecord {
        trust_domain: TrustDomain::new(&name).map_err(|e| bad(format!("trust_domain: {e}")))?,
        document: row.get(1)?,
        sequence: u64::try_from(sequence).map_err(|_| bad("negative sequence".to_owned()))?,
        updated_at: us_to_time(updated_at)
            .ok_or_else(|| bad("updated_at: out of range".to_owned()))?,
    })
}
