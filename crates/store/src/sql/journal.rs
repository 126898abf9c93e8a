//! CA journals: one opaque blob per server, written with optimistic concurrency.

use super::SqlStore;
use crate::codec::{time_to_us, u64_to_i64, us_to_time};
use crate::db::{Row, Stmt};
use crate::{CaJournal, Error, Result};

const KIND: &str = "CA journal";

pub(super) async fn get(store: &SqlStore, server_id: &str) -> Result<Option<CaJournal>> {
    let stmt = Stmt::new(
        "SELECT server_id, data, version, updated_at_us FROM ca_journals WHERE server_id = $1",
    )
    .bind(server_id);
    store
        .pool
        .fetch_optional(stmt)
        .await?
        .map(|row| decode_row(&row))
        .transpose()
}

pub(super) async fn list(store: &SqlStore) -> Result<Vec<CaJournal>> {
    let stmt = Stmt::new(
        "SELECT server_id, data, version, updated_at_us FROM ca_journals ORDER BY server_id",
    );
    store
        .pool
        .fetch_all(stmt)
        .await?
        .iter()
        .map(decode_row)
        .collect()
}

pub(super) async fn put(
    store: &SqlStore,
    server_id: &str,
    data: &[u8],
    expected_version: Option<u64>,
) -> Result<u64> {
    if server_id.is_empty() {
        return Err(Error::InvalidArgument {
            field: "server_id",
            reason: "must not be empty".to_owned(),
        });
    }
    let now = time_to_us("now", store.now())?;
    // Each branch is one statement that checks the version and writes, so two writers that read
    // the same version cannot both succeed.
    let stmt = match expected_version {
        None => Stmt::new(
            "INSERT INTO ca_journals (server_id, data, version, updated_at_us) \
             VALUES ($1, $2, 1, $3) ON CONFLICT (server_id) DO NOTHING RETURNING version",
        )
        .bind(server_id)
        .bind(data.to_vec())
        .bind(now),
        Some(expected) => Stmt::new(
            "UPDATE ca_journals SET data = $2, version = version + 1, updated_at_us = $3 \
             WHERE server_id = $1 AND version = $4 RETURNING version",
        )
        .bind(server_id)
        .bind(data.to_vec())
        .bind(now)
        .bind(u64_to_i64("expected_version", expected)?),
    };
    if let Some(row) = store.pool.fetch_optional(stmt).await? {
        let version: i64 = row.get(0)?;
        return u64::try_from(version).map_err(|_| invalid(server_id, "negative version"));
    }
    let stored = get(store, server_id)
        .await?
        .map_or_else(|| "none".to_owned(), |j| format!("version {}", j.version));
    let expected = expected_version.map_or_else(|| "none".to_owned(), |v| format!("version {v}"));
    Err(Error::Conflict {
        kind: KIND,
        key: server_id.to_owned(),
        detail: format!("expected {expected}, found {stored}; read the journal again"),
    })
}

fn invalid(server_id: &str, reason: &str) -> Error {
    Error::InvalidData {
        kind: KIND,
        key: server_id.to_owned(),
        reason: reason.to_owned(),
    }
}

fn decode_row(row: &Row) -> Result<CaJournal> {
    let server_id: String = row.get(0)?;
    let version: i64 = row.get(2)?;
    let updated_at: i64 = row.get(3)?;
    Ok(CaJournal {
        data: row.get(1)?,
        version: u64::try_from(version).map_err(|_| invalid(&server_id, "negative version"))?,
        updated_at: us_to_time(updated_at)
            .ok_or_else(|| invalid(&server_id, "updated_at: out of range"))?,
        server_id,
    })
}
