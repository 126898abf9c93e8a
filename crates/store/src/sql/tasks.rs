//! Granted tasks. A task is written in the same transaction as its audit record, so the log
//! never misses a grant and never records one that did not happen.

use std::time::SystemTime;

use lanyard_core::{EntryId, SpiffeId};

use super::{SqlStore, audit, finish_page, page_limit, push_list};
use crate::codec::{time_to_us, us_to_time};
use crate::db::{Row, Stmt};
use crate::{AuditAppend, AuditRow, Error, Page, PageRequest, Result, TaskFilter, TaskRecord};

const KIND: &str = "task";

/// Most SPIFFE IDs a listing filter may name.
const MAX_FILTER_IDS: usize = 1000;

/// The columns [`decode_row`] reads, in order (also the columns an insert writes).
const COLUMNS: &str = "id, spiffe_id, entry_id, agent_id, audience, operations, purpose, \
    on_behalf_of, policy_ids, token_id, issued_at_us, expires_at_us, ended_at_us, parent_id, depth";

pub(super) async fn create(
    store: &SqlStore,
    task: &TaskRecord,
    record: &AuditAppend,
) -> Result<AuditRow> {
    for (field, value) in [("id", &task.id), ("token_id", &task.token_id)] {
        if value.is_empty() {
            return Err(Error::InvalidArgument {
                field,
                reason: "must not be empty".to_owned(),
            });
        }
    }
    audit::validate(record)?;
    let now = time_to_us("now", store.now())?;
    let insert = Stmt::new(format!(
        "INSERT INTO tasks ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING"
    ))
    .bind(task.id.as_str())
    .bind(task.spiffe_id.as_str())
    .bind(task.entry_id.as_str())
    .bind(task.agent_id.as_str())
    .bind(task.audience.as_str())
    .bind(strings_json("operations", &task.operations)?)
    .bind(task.purpose.as_str())
    .bind(task.on_behalf_of.as_str())
    .bind(strings_json("policy_ids", &task.policy_ids)?)
    .bind(task.token_id.as_str())
    .bind(time_to_us("issued_at", task.issued_at)?)
    .bind(time_to_us("expires_at", task.expires_at)?)
    .bind(
        task.ended_at
            .map(|t| time_to_us("ended_at", t))
            .transpose()?,
    )
    .bind(task.parent_id.clone())
    .bind(i64::from(task.depth));

    let mut tx = store.pool.begin_write().await?;
    // The task first: when its id (or token id) is taken, nothing is appended (the transaction
    // is dropped, so rolled back) and the audit counter's lock was never taken.
    if tx.execute(insert).await? == 0 {
        let id_taken = tx
            .fetch_optional(Stmt::new("SELECT 1 FROM tasks WHERE id = $1").bind(task.id.as_str()))
            .await?
            .is_some();
        return Err(if id_taken {
            Error::AlreadyExists {
                kind: KIND,
                key: task.id.clone(),
            }
        } else {
            Error::AlreadyExists {
                kind: "task token id",
                key: task.token_id.clone(),
            }
        });
    }
    let row = audit::append_in(&mut tx, record, now).await?;
    tx.commit().await?;
    Ok(row)
}

/// Ends a task now, and every task delegated from it (at any depth) that has not ended, with one
/// audit record per task ended, in one transaction: `record` for the task itself, and for each
/// descendant a copy of it whose subject is that task's id. A task that has ended already keeps
/// its first `ended_at`; if nothing ended, nothing is appended.
pub(super) async fn end(
    store: &SqlStore,
    id: &str,
    record: &AuditAppend,
) -> Result<(TaskRecord, Vec<AuditRow>)> {
    audit::validate(record)?;
    let now = time_to_us("now", store.now())?;
    let mut tx = store.pool.begin_write().await?;
    // The task and its descendants, by following parent_id down.
    let family = tx
        .fetch_all(
            Stmt::new(
                "WITH RECURSIVE family(id) AS (\
                   SELECT id FROM tasks WHERE id = $1 \
                   UNION SELECT t.id FROM tasks t JOIN family f ON t.parent_id = f.id) \
                 SELECT t.id FROM tasks t JOIN family f ON t.id = f.id \
                 WHERE t.ended_at_us IS NULL ORDER BY t.depth, t.id",
            )
            .bind(id),
        )
        .await?
        .iter()
        .map(|row| row.get::<String>(0))
        .collect::<std::result::Result<Vec<String>, _>>()?;
    let mut rows = Vec::with_capacity(family.len());
    for task_id in &family {
        tx.execute(
            Stmt::new("UPDATE tasks SET ended_at_us = $1 WHERE id = $2 AND ended_at_us IS NULL")
                .bind(now)
                .bind(task_id.as_str()),
        )
        .await?;
        let mut record = record.clone();
        if task_id != id {
            record.subject = task_id.clone();
        }
        rows.push(audit::append_in(&mut tx, &record, now).await?);
    }
    let row = tx
        .fetch_optional(Stmt::new(format!("SELECT {COLUMNS} FROM tasks WHERE id = $1")).bind(id))
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: KIND,
            key: id.to_owned(),
        })?;
    let task = decode_row(&row)?;
    tx.commit().await?;
    Ok((task, rows))
}

/// The token ids of tasks that ended before their tokens expired, with those expiries: what
/// agents must refuse until then.
pub(super) async fn revoked(
    store: &SqlStore,
    now: SystemTime,
) -> Result<Vec<(String, SystemTime)>> {
    let stmt = Stmt::new(
        "SELECT token_id, expires_at_us FROM tasks \
         WHERE ended_at_us IS NOT NULL AND expires_at_us > $1 ORDER BY token_id",
    )
    .bind(time_to_us("now", now)?);
    store
        .pool
        .fetch_all(stmt)
        .await?
        .iter()
        .map(|row| {
            let token_id: String = row.get(0)?;
            let expires_at: i64 = row.get(1)?;
            let expires_at = us_to_time(expires_at).ok_or_else(|| Error::InvalidData {
                kind: KIND,
                key: token_id.clone(),
                reason: "expires_at: out of range".to_owned(),
            })?;
            Ok((token_id, expires_at))
        })
        .collect()
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<Option<TaskRecord>> {
    let stmt = Stmt::new(format!("SELECT {COLUMNS} FROM tasks WHERE id = $1")).bind(id);
    store
        .pool
        .fetch_optional(stmt)
        .await?
        .map(|row| decode_row(&row))
        .transpose()
}

pub(super) async fn list(
    store: &SqlStore,
    filter: &TaskFilter,
    page: &PageRequest,
) -> Result<Page<TaskRecord>> {
    let after = super::page_after(page, |token| (!token.is_empty()).then(|| token.to_owned()))?;
    if filter.spiffe_ids.len() > MAX_FILTER_IDS {
        return Err(Error::InvalidArgument {
            field: "spiffe_ids",
            reason: format!(
                "a filter may name at most {MAX_FILTER_IDS} SPIFFE IDs, got {}",
                filter.spiffe_ids.len()
            ),
        });
    }

    let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM tasks WHERE 1 = 1"));
    if !filter.spiffe_ids.is_empty() {
        stmt.push(" AND spiffe_id IN (");
        push_list(
            &mut stmt,
            filter.spiffe_ids.iter().map(|id| id.as_str().to_owned()),
        );
        stmt.push(")");
    }
    if let Some(audience) = &filter.audience {
        stmt.push(" AND audience = ").push_bind(audience.as_str());
    }
    if let Some(after) = after {
        stmt.push(" AND id > ").push_bind(after);
    }
    stmt.push(" ORDER BY id");
    if let Some(limit) = page_limit(page) {
        stmt.push(" LIMIT ").push_bind(limit);
    }
    let rows = store.pool.fetch_all(stmt).await?;
    let items = rows.iter().map(decode_row).collect::<Result<Vec<_>>>()?;
    Ok(finish_page(items, page, |t| t.id.clone()))
}

fn strings_json(field: &'static str, values: &[String]) -> Result<String> {
    serde_json::to_string(values).map_err(|e| Error::InvalidArgument {
        field,
        reason: e.to_string(),
    })
}

fn decode_row(row: &Row) -> Result<TaskRecord> {
    let id: String = row.get(0)?;
    let bad = |reason: String| Error::InvalidData {
        kind: KIND,
        key: id.clone(),
        reason,
    };
    let time = |field: &str, us: i64| -> Result<SystemTime> {
        us_to_time(us).ok_or_else(|| bad(format!("{field}: out of range")))
    };
    let spiffe_id = |field: &str, text: String| -> Result<SpiffeId> {
        SpiffeId::parse(&text).map_err(|e| bad(format!("{field}: {e}")))
    };
    let strings = |field: &str, text: String| -> Result<Vec<String>> {
        serde_json::from_str(&text).map_err(|e| bad(format!("{field}: {e}")))
    };
    let entry_id: String = row.get(2)?;
    Ok(TaskRecord {
        spiffe_id: spiffe_id("spiffe_id", row.get(1)?)?,
        entry_id: EntryId::new(&entry_id).map_err(|e| bad(format!("entry_id: {e}")))?,
        agent_id: spiffe_id("agent_id", row.get(3)?)?,
        audience: row.get(4)?,
        operations: strings("operations", row.get(5)?)?,
        purpose: row.get(6)?,
        on_behalf_of: row.get(7)?,
        policy_ids: strings("policy_ids", row.get(8)?)?,
        token_id: row.get(9)?,
        issued_at: time("issued_at", row.get(10)?)?,
        expires_at: time("expires_at", row.get(11)?)?,
        ended_at: row
            .get::<Option<i64>>(12)?
            .map(|us| time("ended_at", us))
            .transpose()?,
        parent_id: row.get(13)?,
        depth: u32::try_from(row.get::<i64>(14)?)
            .map_err(|_| bad("depth out of range".to_owned()))?,
        id,
    })
}
