//! Join tokens: stored as SHA-256 hashes, used at most once, expiring.
//!
//! A plain (unkeyed) hash suffices: tokens are long random secrets, so the hash cannot be
//! reversed by guessing, and a leaked database does not hand out usable tokens. A used token
//! stays until it expires, so that a second use is reported as such, then `prune` removes it.

use std::time::SystemTime;

use lanyard_core::SpiffeId;

use super::SqlStore;
use crate::codec::{sha256_hex, time_to_us, us_to_time};
use crate::db::Stmt;
use crate::{Error, JoinTokenGrant, Result};

pub(super) async fn create(
    store: &SqlStore,
    token: &str,
    spiffe_id: Option<&SpiffeId>,
    expires_at: SystemTime,
) -> Result<()> {
    if token.is_empty() {
        return Err(Error::InvalidArgument {
            field: "token",
            reason: "a join token must not be empty".to_owned(),
        });
    }
    let hash = sha256_hex(token.as_bytes());
    let stmt = Stmt::new(
        "INSERT INTO join_tokens (token_hash, spiffe_id, expires_at_us, created_at_us) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
    )
    .bind(hash.clone())
    .bind(spiffe_id.map(|id| id.as_str().to_owned()))
    .bind(time_to_us("expires_at", expires_at)?)
    .bind(time_to_us("now", store.now())?);
    if store.pool.execute(stmt).await? == 0 {
        // Name the token by a prefix of its hash: the token itself is a secret.
        return Err(Error::AlreadyExists {
            kind: "join token",
            key: format!("sha256:{}…", &hash[..12]),
        });
    }
    Ok(())
}

pub(super) async fn consume(store: &SqlStore, token: &str) -> Result<JoinTokenGrant> {
    let hash = sha256_hex(token.as_bytes());
    let now = time_to_us("now", store.now())?;
    // One statement decides: the row lock (PostgreSQL) or the write lock (SQLite) lets exactly
    // one of several concurrent callers see `used_at_us IS NULL`.
    let used = store
        .pool
        .fetch_optional(
            Stmt::new(
                "UPDATE join_tokens SET used_at_us = $2 WHERE token_hash = $1 \
                 AND used_at_us IS NULL AND expires_at_us > $2 \
                 RETURNING spiffe_id, expires_at_us",
            )
            .bind(hash.clone())
            .bind(now),
        )
        .await?;
    if let Some(row) = used {
        let spiffe_id: Option<String> = row.get(0)?;
        let expires_at: i64 = row.get(1)?;
        let bad = |reason: String| Error::InvalidData {
            kind: "join token",
            key: format!("sha256:{}…", &hash[..12]),
            reason,
        };
        return Ok(JoinTokenGrant {
            spiffe_id: spiffe_id
                .map(|id| SpiffeId::parse(&id).map_err(|e| bad(format!("spiffe_id: {e}"))))
                .transpose()?,
            expires_at: us_to_time(expires_at)
                .ok_or_else(|| bad("expires_at: out of range".to_owned()))?,
        });
    }
    // Refused: say why. (Only the reason is read here; the decision above is final.)
    let row = store
        .pool
        .fetch_optional(
            Stmt::new("SELECT used_at_us FROM join_tokens WHERE token_hash = $1").bind(hash),
        )
        .await?;
    match row {
        None => Err(Error::JoinTokenNotFound),
        Some(row) => {
            let used_at: Option<i64> = row.get(0)?;
            if used_at.is_some() {
                Err(Error::JoinTokenUsed)
            } else {
                Err(Error::JoinTokenExpired)
            }
        }
    }
}

pub(super) async fn prune(store: &SqlStore, used_before: SystemTime) -> Result<u64> {
    let now = time_to_us("now", store.now())?;
    let used_before = time_to_us("used_before", used_before)?;
    Ok(store
        .pool
        .execute(
            Stmt::new("DELETE FROM join_tokens WHERE expires_at_us <= $1 OR used_at_us < $2")
                .bind(now)
                .bind(used_before),
        )
        .await?)
}
