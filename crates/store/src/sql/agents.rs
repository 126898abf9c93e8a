//! Attested agents.

use std::time::SystemTime;

use lanyard_core::{SelectorSet, SpiffeId};

use super::{SqlStore, finish_page, page_limit};
use crate::codec::{time_to_us, us_to_time};
use crate::db::{Row, Stmt};
use crate::{
    AgentFilter, AgentInfo, AgentRenewal, AttestedAgent, Error, Page, PageRequest, Result,
};

const KIND: &str = "agent";

/// The columns [`decode_row`] reads, in order.
const COLUMNS: &str = "spiffe_id, attestation_type, serial, expires_at_us, banned, selectors, \
    created_at_us, updated_at_us, new_serial";

pub(super) async fn create(store: &SqlStore, agent: &AgentInfo) -> Result<AttestedAgent> {
    let now = time_to_us("now", store.now())?;
    let stmt = Stmt::new(format!(
        "INSERT INTO agents (spiffe_id, attestation_type, serial, expires_at_us, banned, \
         selectors, created_at_us, updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (spiffe_id) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(agent.spiffe_id.as_str())
    .bind(agent.attestation_type.as_str())
    .bind(agent.serial.as_str())
    .bind(time_to_us("expires_at", agent.expires_at)?)
    .bind(false)
    .bind(selectors_json(&agent.selectors)?)
    .bind(now);
    match store.pool.fetch_optional(stmt).await? {
        Some(row) => decode_row(&row),
        None => Err(Error::AlreadyExists {
            kind: KIND,
            key: agent.spiffe_id.to_string(),
        }),
    }
}

pub(super) async fn update(store: &SqlStore, agent: &AgentInfo) -> Result<AttestedAgent> {
    let now = time_to_us("now", store.now())?;
    let stmt = Stmt::new(format!(
        "UPDATE agents SET attestation_type = $2, serial = $3, expires_at_us = $4, \
         selectors = $5, updated_at_us = $6, new_serial = NULL WHERE spiffe_id = $1 \
         RETURNING {COLUMNS}"
    ))
    .bind(agent.spiffe_id.as_str())
    .bind(agent.attestation_type.as_str())
    .bind(agent.serial.as_str())
    .bind(time_to_us("expires_at", agent.expires_at)?)
    .bind(selectors_json(&agent.selectors)?)
    .bind(now);
    match store.pool.fetch_optional(stmt).await? {
        Some(row) => decode_row(&row),
        None => Err(not_found(&agent.spiffe_id)),
    }
}

pub(super) async fn renew(store: &SqlStore, renewal: &AgentRenewal) -> Result<AttestedAgent> {
    let now = time_to_us("now", store.now())?;
    // Only from the serial the caller presented: a renewal racing a re-attestation or another
    // renewal must not resurrect a retired SVID.
    let stmt = Stmt::new(format!(
        "UPDATE agents SET new_serial = $3, expires_at_us = $4, updated_at_us = $5 \
         WHERE spiffe_id = $1 AND serial = $2 AND banned = $6 RETURNING {COLUMNS}"
    ))
    .bind(renewal.spiffe_id.as_str())
    .bind(renewal.presented_serial.as_str())
    .bind(renewal.new_serial.as_str())
    .bind(time_to_us("expires_at", renewal.expires_at)?)
    .bind(now)
    .bind(false);
    match store.pool.fetch_optional(stmt).await? {
        Some(row) => decode_row(&row),
        None => Err(Error::Conflict {
            kind: KIND,
            key: renewal.spiffe_id.to_string(),
            detail: "the presented SVID is not the agent's current one, or the agent is banned \
                     or gone"
                .to_owned(),
        }),
    }
}

pub(super) async fn promote(store: &SqlStore, id: &SpiffeId, serial: &str) -> Result<bool> {
    let now = time_to_us("now", store.now())?;
    let promoted = store
        .pool
        .execute(
            Stmt::new(
                "UPDATE agents SET serial = new_serial, new_serial = NULL, updated_at_us = $3 \
                 WHERE spiffe_id = $1 AND new_serial = $2",
            )
            .bind(id.as_str())
            .bind(serial)
            .bind(now),
        )
        .await?;
    Ok(promoted > 0)
}

pub(super) async fn ban(store: &SqlStore, id: &SpiffeId) -> Result<AttestedAgent> {
    let now = time_to_us("now", store.now())?;
    let stmt = Stmt::new(format!(
        "UPDATE agents SET banned = $2, updated_at_us = $3 WHERE spiffe_id = $1 \
         RETURNING {COLUMNS}"
    ))
    .bind(id.as_str())
    .bind(true)
    .bind(now);
    match store.pool.fetch_optional(stmt).await? {
        Some(row) => decode_row(&row),
        None => Err(not_found(id)),
    }
}

pub(super) async fn delete(store: &SqlStore, id: &SpiffeId) -> Result<()> {
    let removed = store
        .pool
        .execute(Stmt::new("DELETE FROM agents WHERE spiffe_id = $1").bind(id.as_str()))
        .await?;
    if removed == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

pub(super) async fn get(store: &SqlStore, id: &SpiffeId) -> Result<Option<AttestedAgent>> {
    let stmt =
        Stmt::new(format!("SELECT {COLUMNS} FROM agents WHERE spiffe_id = $1")).bind(id.as_str());
    store
        .pool
        .fetch_optional(stmt)
        .await?
        .map(|row| decode_row(&row))
        .transpose()
}

pub(super) async fn count(store: &SqlStore) -> Result<u64> {
    super::count_rows(store, "agents").await
}

pub(super) async fn list(
    store: &SqlStore,
    filter: &AgentFilter,
    page: &PageRequest,
) -> Result<Page<AttestedAgent>> {
    let after = super::page_after(page, |token| SpiffeId::parse(token).ok())?;

    let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM agents WHERE 1 = 1"));
    if let Some(banned) = filter.banned {
        stmt.push(" AND banned = ").push_bind(banned);
    }
    if let Some(kind) = &filter.attestation_type {
        stmt.push(" AND attestation_type = ")
            .push_bind(kind.as_str());
    }
    if let Some(before) = filter.expires_before {
        stmt.push(" AND expires_at_us < ")
            .push_bind(time_to_us("expires_before", before)?);
    }
    if let Some(after) = &after {
        stmt.push(" AND spiffe_id > ").push_bind(after.as_str());
    }
    stmt.push(" ORDER BY spiffe_id");
    if let Some(limit) = page_limit(page) {
        stmt.push(" LIMIT ").push_bind(limit);
    }
    let rows = store.pool.fetch_all(stmt).await?;
    let items = rows.iter().map(decode_row).collect::<Result<Vec<_>>>()?;
    Ok(finish_page(items, page, |a| {
        a.spiffe_id.as_str().to_owned()
    }))
}

fn selectors_json(selectors: &SelectorSet) -> Result<String> {
    serde_json::to_string(selectors).map_err(|e| Error::InvalidArgument {
        field: "selectors",
        reason: e.to_string(),
    })
}

fn not_found(id: &SpiffeId) -> Error {
    Error::NotFound {
        kind: KIND,
        key: id.to_string(),
    }
}

fn decode_row(row: &Row) -> Result<AttestedAgent> {
    let id: String = row.get(0)?;
    let bad = |reason: String| Error::InvalidData {
        kind: KIND,
        key: id.clone(),
        reason,
    };
    let time = |field: &str, us: i64| -> Result<SystemTime> {
        us_to_time(us).ok_or_else(|| bad(format!("{field}: out of range")))
    };
    let selectors: String = row.get(5)?;
    Ok(AttestedAgent {
        spiffe_id: SpiffeId::parse(&id).map_err(|e| bad(format!("spiffe_id: {e}")))?,
        attestation_type: row.get(1)?,
        serial: row.get(2)?,
        expires_at: time("expires_at", row.get(3)?)?,
        banned: row.get(4)?,
        selectors: serde_json::from_str(&selectors).map_err(|e| bad(format!("selectors: {e}")))?,
        created_at: time("created_at", row.get(6)?)?,
        updated_at: time("updated_at", row.get(7)?)?,
        new_serial: row.get(8)?,
    })
}
