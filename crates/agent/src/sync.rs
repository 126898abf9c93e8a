//! The entry stream: one `SyncEntries` call kept open, resumed from the last revision applied,
//! on whichever server the connector reaches. A stream that was serving and broke is reopened at
//! once (a round over the servers: the one that just failed is likely down); after that, rounds
//! are paced by jittered exponential backoff, cut short when a server that was down listens
//! again. Each complete update is applied to the cache
//! and published; a changed bundle is persisted and used to authenticate the server from then on.

use std::sync::Arc;

use lanyard_proto::node::SyncEntriesRequest;
use tokio::sync::watch;

use crate::AgentError;
use crate::agent::{CallError, ReattestReason, Shared, classify, pause, stopped};
use crate::attest::is_transient;
use crate::timing::Backoff;

/// Runs until the agent stops; an error is fatal.
pub(crate) async fn sync_loop(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let tuning = &shared.config.tuning;
    let mut backoff = Backoff::new(tuning.retry_initial, tuning.retry_max);
    let mut generation = shared.generation.subscribe();
    // When a stream that had served last broke without waiting: at most once per `retry_max`, so
    // that a server that serves and breaks over and over is still backed off from.
    let mut last_immediate: Option<tokio::time::Instant> = None;
    loop {
        let seen = *generation.borrow_and_update();
        let mut served = false;
        let outcome = tokio::select! {
            outcome = stream_once(&shared, &mut backoff, &mut served) => outcome,
            // A new agent SVID: reconnect over a connection that presents it.
            _ = generation.changed() => {
                tracing::debug!("agent SVID changed; reconnecting the entry stream");
                continue;
            }
            () = stopped(&mut stop) => return Ok(()),
        };
        match outcome {
            Ok(()) => tracing::info!("the server closed the entry stream; reconnecting"),
            Err(CallError::Transient(detail)) => {
                tracing::warn!(error = %detail, "entry stream failed; reconnecting");
                if !served && let Err(e) = shared.fail_over() {
                    tracing::warn!(error = %e, "cannot make a new node-API channel");
                }
            }
            Err(CallError::Rejected(status)) => {
                let reason = format!("entry stream: {}", status.message());
                match shared
                    .reattest(ReattestReason::Rejected(reason), seen)
                    .await
                {
                    Ok(()) => continue,
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "cannot attest again yet");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let now = tokio::time::Instant::now();
        if served && last_immediate.is_none_or(|at| now.duration_since(at) >= tuning.retry_max) {
            last_immediate = Some(now);
            continue;
        }
        let delay = backoff.next_delay();
        let mut changed = generation.clone();
        let connector = shared.connector.clone();
        if pause(delay, &mut stop, async move {
            tokio::select! {
                _ = changed.changed() => {}
                // A server that was down listens again: no need to wait the backoff out.
                () = connector.until_reachable() => {}
            }
        })
        .await
        {
            return Ok(());
        }
    }
}

/// One `SyncEntries` call, until it ends; `served` turns true with the first message applied.
async fn stream_once(
    shared: &Shared,
    backoff: &mut Backoff,
    served: &mut bool,
) -> Result<(), CallError> {
    let since = {
        let mut cache = shared.cache();
        // Chunks of an update the last stream did not finish are sent again in full.
        cache.discard_pending();
        cache.revision()
    };
    let mut client = shared.client();
    let mut stream = client
        .sync_entries(SyncEntriesRequest {
            since_revision: since,
        })
        .await
        .map_err(classify)?
        .into_inner();
    tracing::info!(since_revision = since, "entry stream open");
    // The server answered: whatever could not be minted while it was away can be now.
    shared.mint_wakeup.notify_one();
    while let Some(message) = stream.message().await.map_err(classify)? {
        apply(shared, message).map_err(CallError::Transient)?;
        backoff.reset();
        *served = true;
    }
    Ok(())
}

/// Applies one message; an error makes the stream reconnect (and resume from the last revision
/// applied in full).
fn apply(shared: &Shared, message: lanyard_proto::node::SyncEntriesResponse) -> Result<(), String> {
    let now = shared.now();
    let (outcome, bundle, gone) = {
        let mut cache = shared.cache();
        let before = cache.spiffe_ids();
        let outcome = cache.apply(message, now).map_err(|e| e.to_string())?;
        let after = cache.spiffe_ids();
        let gone: Vec<_> = before.difference(&after).cloned().collect();
        (outcome, cache.own_bundle().clone(), gone)
    };
    if outcome.skipped > 0 {
        tracing::warn!(
            skipped = outcome.skipped,
            "the server sent entries that are not valid"
        );
    }
    if !outcome.applied {
        return Ok(());
    }
    tracing::debug!(
        revision = shared.cache().revision(),
        removed = gone.len(),
        "entry update applied"
    );
    for id in &gone {
        shared.jwt_cache.remove_identity(id);
    }
    if outcome.bundle_changed {
        tracing::info!(sequence = bundle.sequence(), "trust bundle updated");
        if let Err(e) = shared.install_bundle(&bundle) {
            // Still in use in memory; the next change tries again.
            tracing::error!(error = %e, "cannot persist the trust bundle");
        }
    }
    shared.publish();
    shared.mint_wakeup.notify_one();
    Ok(())
}
