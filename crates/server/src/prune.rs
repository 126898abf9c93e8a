//! Pruning on a schedule, so that what the datastore keeps for diagnosis and catching up does not
//! grow without bound: join tokens expired or used a while ago, and entry tombstones older than
//! their retention. The audit log is never pruned: it is the record, and its Merkle tree and
//! signed checkpoints cover it from its first record (see `docs/audit.md`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::ServerState;

/// Prunes every `retention.prune_interval` until `stop`. Several servers on one database may all
/// do it: each statement only deletes what is old enough.
pub(crate) async fn run(state: Arc<ServerState>, mut stop: watch::Receiver<bool>) {
    let retention = state.config.retention.clone();
    let mut interval = tokio::time::interval(retention.prune_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (time, store revision) samples: tombstones carry a revision, not a time, so the revision
    // the store had `entry_tombstones` ago is what may be pruned through.
    let mut revisions: VecDeque<(SystemTime, u64)> = VecDeque::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = state.clock.now();
        let store = &state.store;
        let before = |age| now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        match store
            .prune_join_tokens(before(retention.used_join_tokens))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(join_tokens = n, "pruned expired and used join tokens"),
            Err(e) => tracing::warn!(error = %e, "cannot prune join tokens"),
        }
        match store.current_revision().await {
            Ok(revision) => revisions.push_back((now, revision)),
            Err(e) => tracing::warn!(error = %e, "cannot read the entry revision"),
        }
        let mut through = None;
        while let Some(&(at, revision)) = revisions.front()
            && at <= before(retention.entry_tombstones)
        {
            through = Some(revision);
            revisions.pop_front();
        }
        if let Some(revision) = through {
            match store.prune_entry_tombstones(revision).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tombstones = n, revision, "pruned entry tombstones"),
                Err(e) => tracing::warn!(error = %e, "cannot prune entry tombstones"),
            }
        }
    }
}
