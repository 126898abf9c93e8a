//! How this server learns of writes other servers made to a shared PostgreSQL datastore: entries
//! (for the index and so every agent stream), agent evictions, bans and re-attestations (which end
//! the agent's streams here too), ended and revoked tasks (whose tokens every agent must refuse),
//! and bundles (another server's new root, a federated bundle set through another server).
//!
//! The datastore pushes a notice when such a write commits ([`lanyard_store::ChangeFeed`]); the
//! notice says only what to catch up, and catching up reads from where this server left off (the
//! index's revision, the audit log's seq), so a notice that is late, doubled or coalesced with
//! others costs nothing. Notices sent while the feed's connection was down are lost: after every
//! (re)subscription this server catches up on everything, and a slow poll
//! (`datastore_poll_interval`) catches up too, for whatever else might be missed (a connection that
//! hangs without failing). Writes through this server take effect here at once; they do not wait
//! for their own notice.

use std::sync::Arc;
use std::time::Duration;

use lanyard_store::{ChangeFeed, Changes};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ServerState;
use crate::node;

/// The first wait before subscribing again after the feed failed; doubled on every failure in a
/// row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps this server current with other servers' writes until `stop` turns true.
pub(crate) async fn run(state: Arc<ServerState>, mut stop: watch::Receiver<bool>) {
    let mut follower = Follower {
        // Only events from now on: older evictions were acted on when they happened.
        events_seen: state.store.audit_size().await.ok(),
    };
    let period = state.config.datastore_poll_interval;
    let mut poll = tokio::time::interval_at(Instant::now() + period, period);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feed: Option<ChangeFeed> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut subscribe_at = Instant::now();
    loop {
        let event = {
            let next = next_notice(feed.as_mut(), subscribe_at);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = poll.tick() => Event::Poll,
                event = next => event,
            }
        };
        match event {
            Event::Poll => follower.catch_up(&state, Changes::ALL).await,
            Event::Notice(changes) => follower.catch_up(&state, changes).await,
            Event::Subscribe => match state.store.change_feed().await {
                Ok(subscribed) => {
                    tracing::debug!("subscribed to the datastore's change notices");
                    feed = Some(subscribed);
                    backoff = FIRST_BACKOFF;
                    // Whatever was written while no one listened.
                    follower.catch_up(&state, Changes::ALL).await;
                }
                Err(lanyard_store::Error::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot subscribe to the datastore's change notices");
                    subscribe_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            },
            Event::Lost(lanyard_store::Error::Closed) => return,
            Event::Lost(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "lost the datastore's change notices; subscribing again");
                feed = None;
                subscribe_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What the follower does next.
enum Event {
    /// The safety poll is due.
    Poll,
    /// Other servers wrote this.
    Notice(Changes),
    /// The feed ended: subscribe again after a pause.
    Lost(lanyard_store::Error),
    /// Time to (re)subscribe.
    Subscribe,
}

/// The feed's next notice or end; without a feed, the time to subscribe.
async fn next_notice(feed: Option<&mut ChangeFeed>, subscribe_at: Instant) -> Event {
    match feed {
        Some(feed) => match feed.recv().await {
            Ok(changes) => Event::Notice(changes),
            Err(e) => Event::Lost(e),
        },
        None => {
            tokio::time::sleep_until(subscribe_at).await;
            Event::Subscribe
        }
    }
}

/// Where this server is in what others wrote.
struct Follower {
    /// The audit seq to read agent and task events from; `None` until known.
    events_seen: Option<u64>,
}

// === impl Follower ===

impl Follower {
    /// Reads what `changes` names from where this server left off, and acts on it. A failure is
    /// logged; the next notice or poll retries from the same place.
    async fn catch_up(&mut self, state: &ServerState, changes: Changes) {
        if changes.entries
            && let Err(e) = state.index.catch_up(&*state.store).await
        {
            tracing::warn!(error = %e, "cannot read entry changes from the datastore");
        }
        if changes.audit
            && let Err(e) = node::follow_agent_events(state, &mut self.events_seen).await
        {
            tracing::warn!(error = %e, "cannot read agent and task events from the datastore");
        }
        if changes.bundles {
            // Another server's root (the trust domain's bundle), or a federated bundle.
            if let Err(e) = state.authority.refresh_published().await {
                tracing::warn!(error = %e, "cannot read the trust bundle from the datastore");
            }
            state.bundles_changed().await;
        }
    }
}
