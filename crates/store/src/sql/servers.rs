//! The servers sharing the datastore, one row each, rewritten at every heartbeat.

use super::SqlStore;
use crate::codec::{time_to_us, us_to_time};
use crate::db::{Row, Stmt};
use crate::{Error, Result, ServerInfo, ServerRecord};

const KIND: &str = "server";

/// The columns [`decode_row`] reads, in order.
const COLUMNS: &str = "server_id, node_address, health_address, version, started_at_us, \
                       last_seen_us, ca_expires_at_us, signs_until_us";

/// Longest accepted text field: these are addresses, versions and ids, not documents.
const MAX_FIELD: usize = 256;

pub(super) async fn heartbeat(store: &SqlStore, server: &ServerInfo) -> Result<ServerRecord> {
    let fields = [
        ("server_id", server.server_id.as_str()),
        ("node_address", server.node_address.as_str()),
        (
            "health_address",
            server.health_address.as_deref().unwrap_or(""),
        ),
        ("version", server.version.as_str()),
    ];
    for (field, value) in fields {
        if value.len() > MAX_FIELD {
            return Err(Error::InvalidArgument {
                field,
                reason: format!("longer than {MAX_FIELD} bytes"),
            });
        }
    }
    if server.server_id.is_empty() {
        return Err(Error::InvalidArgument {
            field: "server_id",
            reason: "must not be empty".to_owned(),
        });
    }
    let ca_expires_at = server
        .ca_expires_at
        .map(|t| time_to_us("ca_expires_at", t))
        .transpose()?;
    // One statement: the row is created or replaced whole, except that `signs_until` only grows.
    let stmt = Stmt::new(format!(
        "INSERT INTO servers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (server_id) DO UPDATE SET node_address = excluded.node_address, \
         health_address = excluded.health_address, version = excluded.version, \
         started_at_us = excluded.started_at_us, last_seen_us = excluded.last_seen_us, \
         ca_expires_at_us = excluded.ca_expires_at_us, \
         signs_until_us = CASE WHEN servers.signs_until_us > excluded.signs_until_us \
         THEN servers.signs_until_us ELSE excluded.signs_until_us END \
         RETURNING {COLUMNS}"
    ))
    .bind(server.server_id.as_str())
    .bind(server.node_address.as_str())
    .bind(server.health_address.clone().unwrap_or_default())
    .bind(server.version.as_str())
    .bind(time_to_us("started_at", server.started_at)?)
    .bind(time_to_us("now", store.now())?)
    .bind(ca_expires_at)
    .bind(time_to_us("signs_until", server.signs_until)?);
    let row = store.pool.fetch_optional(stmt).await?;
    match row {
        Some(row) => decode_row(&row),
        None => Err(Error::InvalidData {
            kind: KIND,
            key: server.server_id.clone(),
            reason: "the heartbeat returned no row".to_owned(),
        }),
    }
}

pub(super) async fn list(store: &SqlStore) -> Result<Vec<ServerRecord>> {
    let stmt = Stmt::new(format!("SELECT {COLUMNS} FROM servers ORDER BY server_id"));
    store
        .pool
        .fetch_all(stmt)
        .await?
        .iter()
        .map(decode_row)
        .collect()
}

fn decode_row(row: &Row) -> Result<ServerRecord> {
    let server_id: String = row.get(0)?;
    let bad = |field: &str| Error::InvalidData {
        kind: KIND,
        key: server_id.clone(),
        reason: format!("{field}: out of range"),
    };
    let time = |index: usize, field: &str| -> Result<std::time::SystemTime> {
        let us: i64 = row.get(index)?;
        us_to_time(us).ok_or_else(|| bad(field))
    };
    let health_address: String = row.get(2)?;
    let ca_expires_at: Option<i64> = row.get(6)?;
    Ok(ServerRecord {
        info: ServerInfo {
            node_address: row.get(1)?,
            health_address: (!health_address.is_empty()).then_some(health_address),
            version: row.get(3)?,
            started_at: time(4, "started_at_us")?,
            ca_expires_at: ca_expires_at
                .map(|us| us_to_time(us).ok_or_else(|| bad("ca_expires_at_us")))
                .transpose()?,
            signs_until: time(7, "signs_until_us")?,
            server_id: server_id.clone(),
        },
        last_seen: time(5, "last_seen_us")?,
    })
}
