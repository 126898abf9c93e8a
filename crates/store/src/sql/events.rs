//! The append-only event log.
//!
//! Ids come from the `event_id` counter, bumped inside the appending transaction: the counter's
//! row lock makes appends commit in id order, so a reader that asks for "events after N" and
//! then "after the last id it got" never skips an event that committed late (which ids from a
//! sequence or AUTOINCREMENT would allow on PostgreSQL).

use std::time::SystemTime;

use super::{SqlStore, counter_value, missing_counter};
use crate::codec::{time_to_us, u64_to_i64, us_to_time};
use crate::db::{Row, Stmt};
use crate::{Error, Event, Result};

const COUNTER: &str = "event_id";

pub(super) async fn append(
    store: &SqlStore,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<u64> {
    if kind.is_empty() {
        return Err(Error::InvalidArgument {
            field: "kind",
            reason: "an event kind must not be empty".to_owned(),
        });
    }
    let payload = serde_json::to_string(payload).map_err(|e| Error::InvalidArgument {
        field: "payload",
        reason: e.to_string(),
    })?;
    let now = time_to_us("now", store.now())?;

    let mut tx = store.pool.begin_write().await?;
    let row = tx
        .fetch_optional(
            Stmt::new("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
                .bind(COUNTER),
        )
        .await?
        .ok_or_else(|| missing_counter(COUNTER))?;
    let id = counter_value(COUNTER, row.get(0)?)?;
    tx.execute(
        Stmt::new("INSERT INTO events (id, kind, payload, created_at_us) VALUES ($1, $2, $3, $4)")
            .bind(u64_to_i64("id", id)?)
            .bind(kind)
            .bind(payload)
            .bind(now),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn list(store: &SqlStore, after_id: u64, limit: u32) -> Result<Vec<Event>> {
    let mut stmt =
        Stmt::new("SELECT id, kind, payload, created_at_us FROM events WHERE id > $1 ORDER BY id")
            .bind(u64_to_i64("after_id", after_id)?);
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

fn decode_row(row: &Row) -> Result<Event> {
    let id: i64 = row.get(0)?;
    let bad = |reason: String| Error::InvalidData {
        kind: "event",
        key: id.to_string(),
        reason,
    };
    let payload: String = row.get(2)?;
    let created_at: i64 = row.get(3)?;
    Ok(Event {
        id: u64::try_from(id).map_err(|_| bad("negative id".to_owned()))?,
        kind: row.get(1)?,
        payload: serde_json::from_str(&payload).map_err(|e| bad(format!("payload: {e}")))?,
        created_at: us_to_time(created_at)
            .ok_or_else(|| bad("created_at: out of range".to_owned()))?,
    })
}

pub(super) async fn prune(store: &SqlStore, before: SystemTime) -> Result<u64> {
    let before = time_to_us("before", before)?;
    Ok(store
        .pool
        .execute(Stmt::new("DELETE FROM events WHERE created_at_us < $1").bind(before))
        .await?)
}
