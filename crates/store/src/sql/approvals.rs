//! Task grants waiting for a human. Every change of state is one conditional update (from the
//! state the caller saw) with its audit record, so two admins deciding at once, or two callers
//! collecting one approved grant, cannot both succeed.

use super::{SqlStore, audit};
use crate::codec::{time_to_us, us_to_time};
use crate::db::{Row, Stmt};
use crate::{Approval, ApprovalState, AuditAppend, AuditRow, Error, Result};

const KIND: &str = "approval";
const COLUMNS: &str = "id, spiffe_id, request, policy_ids, state, decided_by, reason, task_id, \
    created_at_us, expires_at_us, decided_at_us";
/// Most pending approvals listed.
const MAX_PENDING_LISTED: i64 = 1000;

fn state_name(state: ApprovalState) -> &'static str {
    match state {
        ApprovalState::Pending => "pending",
        ApprovalState::Approved => "approved",
        ApprovalState::Denied => "denied",
        ApprovalState::Granted => "granted",
    }
}

pub(super) async fn create(
    store: &SqlStore,
    approval: &Approval,
    record: &AuditAppend,
) -> Result<AuditRow> {
    if approval.id.is_empty() {
        return Err(Error::InvalidArgument {
            field: "id",
            reason: "must not be empty".to_owned(),
        });
    }
    audit::validate(record)?;
    let now = time_to_us("now", store.now())?;
    let policy_ids =
        serde_json::to_string(&approval.policy_ids).map_err(|e| Error::InvalidArgument {
            field: "policy_ids",
            reason: e.to_string(),
        })?;
    let insert = Stmt::new(format!(
        "INSERT INTO approvals ({COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, '', '', NULL, $6, $7, NULL) ON CONFLICT DO NOTHING"
    ))
    .bind(approval.id.as_str())
    .bind(approval.spiffe_id.as_str())
    .bind(approval.request.as_str())
    .bind(policy_ids)
    .bind(state_name(ApprovalState::Pending))
    .bind(now)
    .bind(time_to_us("expires_at", approval.expires_at)?);
    let mut tx = store.pool.begin_write().await?;
    if tx.execute(insert).await? == 0 {
        return Err(Error::AlreadyExists {
            kind: KIND,
            key: approval.id.clone(),
        });
    }
    let row = audit::append_in(&mut tx, record, now).await?;
    tx.commit().await?;
    Ok(row)
}

pub(super) async fn get(store: &SqlStore, id: &str) -> Result<Option<Approval>> {
    store
        .pool
        .fetch_optional(
            Stmt::new(format!("SELECT {COLUMNS} FROM approvals WHERE id = $1")).bind(id),
        )
        .await?
        .map(|row| decode_row(&row))
        .transpose()
}

pub(super) async fn pending(store: &SqlStore) -> Result<Vec<Approval>> {
    store
        .pool
        .fetch_all(
            Stmt::new(format!(
                "SELECT {COLUMNS} FROM approvals WHERE state = $1 ORDER BY created_at_us, id LIMIT $2"
            ))
            .bind(state_name(ApprovalState::Pending))
            .bind(MAX_PENDING_LISTED),
        )
        .await?
        .iter()
        .map(decode_row)
        .collect()
}

#[allow(
    clippy::too_many_arguments,
    reason = "one conditional transition, every part named"
)]
pub(super) async fn decide(
    store: &SqlStore,
    id: &str,
    from: ApprovalState,
    to: ApprovalState,
    decided_by: &str,
    reason: &str,
    task_id: Option<&str>,
    record: &AuditAppend,
) -> Result<Approval> {
    audit::validate(record)?;
    let now = time_to_us("now", store.now())?;
    let mut tx = store.pool.begin_write().await?;
    // Granting keeps who decided; deciding sets it.
    let changed = if to == ApprovalState::Granted {
        tx.execute(
            Stmt::new("UPDATE approvals SET state = $1, task_id = $2 WHERE id = $3 AND state = $4")
                .bind(state_name(to))
                .bind(task_id.map(str::to_owned))
                .bind(id)
                .bind(state_name(from)),
        )
        .await?
    } else {
        tx.execute(
            Stmt::new(
                "UPDATE approvals SET state = $1, decided_by = $2, reason = $3, decided_at_us = $4 \
                 WHERE id = $5 AND state = $6",
            )
            .bind(state_name(to))
            .bind(decided_by)
            .bind(reason)
            .bind(now)
            .bind(id)
            .bind(state_name(from)),
        )
        .await?
    };
    let row = tx
        .fetch_optional(
            Stmt::new(format!("SELECT {COLUMNS} FROM approvals WHERE id = $1")).bind(id),
        )
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: KIND,
            key: id.to_owned(),
        })?;
    let approval = decode_row(&row)?;
    if changed == 0 {
        return Err(Error::Conflict {
            kind: KIND,
            key: id.to_owned(),
            detail: format!("it is {} now", state_name(approval.state)),
        });
    }
    audit::append_in(&mut tx, record, now).await?;
    tx.commit().await?;
    Ok(approval)
}

fn decode_row(row: &Row) -> Result<Approval> {
    let id: String = row.get(0)?;
    let bad = |reason: String| Error::InvalidData {
        kind: KIND,
        key: id.clone(),
        reason,
    };
    let time =
        |name: &str, us: i64| us_to_time(us).ok_or_else(|| bad(format!("{name}: out of range")));
    let spiffe_id: String = row.get(1)?;
    let policy_ids: String = row.get(3)?;
    let state: String = row.get(4)?;
    Ok(Approval {
        spiffe_id: spiffe_id
            .parse()
            .map_err(|e| bad(format!("spiffe_id: {e}")))?,
        request: row.get(2)?,
        policy_ids: serde_json::from_str(&policy_ids)
            .map_err(|e| bad(format!("policy_ids: {e}")))?,
        state: match state.as_str() {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            "granted" => ApprovalState::Granted,
            other => return Err(bad(format!("state {other:?}"))),
        },
        decided_by: row.get(5)?,
        reason: row.get(6)?,
        task_id: row.get(7)?,
        created_at: time("created_at", row.get(8)?)?,
        expires_at: time("expires_at", row.get(9)?)?,
        decided_at: row
            .get::<Option<i64>>(10)?
            .map(|us| time("decided_at", us))
            .transpose()?,
        id,
    })
}
