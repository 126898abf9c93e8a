//! The change feed: notice of writes that servers sharing the datastore must act on.
//!
//! On PostgreSQL, triggers (migration 9) send a notice on the channel [`CHANNEL`] when a
//! transaction that wrote entries, bundles, or an audit record of a kind in
//! [`NOTIFIED_AUDIT_KINDS`] commits. The notice names only the table: it says "catch up", and the
//! reader reads what changed from the store (entries by revision, the audit log by seq). A
//! [`ChangeFeed`] listens on a connection of its own, outside the store's pool, and coalesces:
//! [`ChangeFeed::recv`] returns everything noticed since the previous call, so a burst of writes
//! costs the reader one catch-up, not one per write.
//!
//! A feed never reconnects by itself. When its connection drops it ends with [`Error::Listen`];
//! notices sent while no one listened are gone, so the reader opens a new feed and then catches up
//! by revision (in that order: a write that commits between the two is then either read by the
//! catch-up or noticed by the new feed).
//!
//! On SQLite the feed yields nothing until the store is closed: one SQLite file has one server
//! writing it, and that server knows its own writes.

use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::Notify;

use crate::db::Pool;
use crate::{Error, Result};

/// The PostgreSQL notification channel the triggers send on.
pub const CHANNEL: &str = "lanyard_changes";

/// The audit record kinds whose appends are noticed: those a server acts on when another server
/// wrote them (an agent evicted, banned or attested again ends its open streams everywhere; a
/// task ended or revoked puts its token on the list every agent refuses). Migration 9's trigger
/// names the same kinds (a test checks this); adding one takes a new migration.
pub const NOTIFIED_AUDIT_KINDS: &[&str] = &[
    "agent.evicted",
    "agent.banned",
    "agent.attested",
    "task.ended",
    "task.revoked",
];

/// What was written since the previous [`ChangeFeed::recv`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Changes {
    /// Entries created, updated or deleted: read `entry_changes_since` the last revision seen.
    pub entries: bool,
    /// Audit records of a kind in [`NOTIFIED_AUDIT_KINDS`]: read the log from the last seq seen.
    pub audit: bool,
    /// A bundle stored or deleted (this trust domain's or a federated one).
    pub bundles: bool,
}

/// A subscription to the datastore's change notices; see the module documentation. Dropping it
/// stops listening and closes its connection.
#[derive(Debug)]
pub struct ChangeFeed {
    shared: Arc<Shared>,
    /// Reads notices into `shared` until the connection drops or the store closes.
    task: tokio::task::JoinHandle<()>,
}

/// What the listening task hands to [`ChangeFeed::recv`].
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled after every change to `state`; holds a permit when no one waits.
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    pending: Changes,
    end: Option<End>,
}

/// Why the feed ended.
#[derive(Debug)]
enum End {
    /// The connection dropped or failed; the error is returned once, then `Finished`.
    Lost(sqlx::Error),
    /// The store was closed, or the loss was reported already.
    Closed,
}

/// Subscribes to the store's change notices: on PostgreSQL, opens a connection and `LISTEN`s,
/// returning once the subscription is in place; on SQLite, a feed that waits for the store to
/// close.
pub(crate) async fn subscribe(pool: &Pool) -> Result<ChangeFeed> {
    let shared = Arc::new(Shared::default());
    let task = match pool {
        Pool::Sqlite(pool, _) => {
            if pool.is_closed() {
                return Err(Error::Closed);
            }
            let closed = pool.close_event();
            let shared = shared.clone();
            tokio::spawn(async move {
                closed.await;
                shared.end(End::Closed);
            })
        }
        Pool::Postgres(pool) => {
            if pool.is_closed() {
                return Err(Error::Closed);
            }
            let listener = listen(pool).await.map_err(Error::Listen)?;
            let closed = pool.close_event();
            tokio::spawn(read_notices(listener, closed, shared.clone()))
        }
    };
    Ok(ChangeFeed { shared, task })
}

/// A listener on [`CHANNEL`], on a connection of its own: it holds the connection for as long as
/// it listens, which must not take one from the store's pool.
async fn listen(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let options = (*pool.connect_options())
        .clone()
        .application_name("lanyard change feed");
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    // Reconnecting is the reader's decision (it must catch up after), never done silently here.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn read_notices(
    mut listener: PgListener,
    mut store_closed: sqlx::pool::CloseEvent,
    shared: Arc<Shared>,
) {
    loop {
        let next = tokio::select! {
            () = &mut store_closed => {
                shared.end(End::Closed);
                return;
            }
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notice)) => shared.notice(Changes::from_payload(notice.payload())),
            Ok(None) => {
                shared.end(End::Lost(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the listening connection was lost",
                ))));
                return;
            }
            Err(e) => {
                shared.end(End::Lost(e));
                return;
            }
        }
    }
}

// === impl Changes ===

impl Changes {
    /// Everything: what a reader assumes after (re)subscribing, having missed any notices.
    pub const ALL: Self = Self {
        entries: true,
        audit: true,
        bundles: true,
    };

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Both sets of changes together.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self {
            entries: self.entries || other.entries,
            audit: self.audit || other.audit,
            bundles: self.bundles || other.bundles,
        }
    }

    /// What a notice's payload (the table written) means. A table this version does not know
    /// (the trigger of a newer lanyard) means "anything may have changed".
    fn from_payload(table: &str) -> Self {
        match table {
            "entries" | "entry_tombstones" => Self {
                entries: true,
                ..Self::default()
            },
            "audit_log" => Self {
                audit: true,
                ..Self::default()
            },
            "bundles" => Self {
                bundles: true,
                ..Self::default()
            },
            _ => Self::ALL,
        }
    }
}

// === impl ChangeFeed ===

impl ChangeFeed {
    /// Waits for a notice and returns what changed since the previous call (never empty).
    /// Cancel-safe: notices that arrive meanwhile are kept for the next call.
    ///
    /// Errors: [`Error::Listen`] once when the connection dropped or failed (open a new feed,
    /// then catch up: notices sent meanwhile are lost); [`Error::Closed`] when the store was
    /// closed, and on every call after an error.
    pub async fn recv(&mut self) -> Result<Changes> {
        loop {
            if let Some(result) = self.shared.take() {
                return result;
            }
            self.shared.wake.notified().await;
        }
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain values, consistent at every point a holder could panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notice(&self, changes: Changes) {
        {
            let mut state = self.lock();
            state.pending = state.pending.union(changes);
        }
        self.wake.notify_one();
    }

    fn end(&self, end: End) {
        self.lock().end = Some(end);
        self.wake.notify_one();
    }

    /// Pending changes first, then the end, if either; `None`: wait.
    fn take(&self) -> Option<Result<Changes>> {
        let mut state = self.lock();
        if !state.pending.is_empty() {
            return Some(Ok(std::mem::take(&mut state.pending)));
        }
        match state.end.take()? {
            End::Lost(e) => {
                state.end = Some(End::Closed);
                Some(Err(Error::Listen(e)))
            }
            End::Closed => {
                state.end = Some(End::Closed);
                Some(Err(Error::Closed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_what_to_catch_up() {
        assert!(Changes::from_payload("entries").entries);
        assert!(Changes::from_payload("entry_tombstones").entries);
        assert!(!Changes::from_payload("entries").audit);
        assert!(Changes::from_payload("audit_log").audit);
        assert!(Changes::from_payload("bundles").bundles);
        assert_eq!(Changes::from_payload("a_newer_table"), Changes::ALL);
    }

    /// The trigger of migration 9 fires for exactly the kinds listed here.
    #[test]
    fn the_trigger_names_the_notified_kinds() {
        let migration = include_str!("../migrations/postgres/0009_change_feed.sql");
        let quoted: Vec<String> = NOTIFIED_AUDIT_KINDS
            .iter()
            .map(|k| format!("'{k}'"))
            .collect();
        let condition = format!("WHEN (NEW.kind IN ({}))", quoted.join(", "));
        assert!(
            migration.contains(&condition),
            "migration 9 must say {condition}"
        );
        assert_eq!(migration.matches("NEW.kind IN").count(), 1);
    }
}
