//! This server's heartbeat in the datastore, and the retirement of dead servers' authorities.
//!
//! Servers sharing a PostgreSQL database each keep their own CA keys, and the trust domain's
//! bundle is the union of every server's authorities. A server that dies for good would keep its
//! authorities in that bundle until they expire (a day by default). Instead, every server records
//! `signs_until`: no credential it handed out is valid after it. A live server keeps moving it
//! forward (its longest default lifetime ahead, and never before the latest expiry it actually
//! signed); a dead one stops, and once that time has passed nothing it signed can still verify, so
//! the other servers publish the bundle without its authorities. A server that comes back beats
//! again and its authorities return with its next publish.
//!
//! The remaining window: a credential with a lifetime longer than the server's defaults (an entry
//! with its own TTL) signed less than [`CHECK_INTERVAL`] before the server died may outlive the
//! recorded `signs_until`. The beat after such a signature comes within that check, not a whole
//! heartbeat interval later.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_store::{ServerInfo, ServerRecord};
use tokio::sync::watch;

use crate::ServerState;

/// How often the loop looks whether the CA signed beyond the recorded horizon (no datastore
/// query unless it did, or the heartbeat interval has passed).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A server whose last beat is older than this many heartbeat intervals is reported as not live.
pub(crate) const MISSED_BEATS: u32 = 3;

/// What this server says about itself at every beat, besides what changes.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) node_address: SocketAddr,
    pub(crate) health_address: Option<SocketAddr>,
    pub(crate) started_at: SystemTime,
}

/// Beats every `heartbeat_interval` (or sooner when the CA signed beyond the last recorded
/// horizon) until `stop`, and republishes the bundle whenever the set of retired servers changes.
pub(crate) async fn run(
    state: Arc<ServerState>,
    identity: Identity,
    mut stop: watch::Receiver<bool>,
) {
    let interval = state.config.heartbeat_interval;
    let mut check = tokio::time::interval(CHECK_INTERVAL.min(interval));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat: Option<(tokio::time::Instant, SystemTime)> = None;
    let mut retired = BTreeSet::new();
    loop {
        tokio::select! {
            _ = check.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let due = last_beat
            .is_none_or(|(at, horizon)| at.elapsed() >= interval || signed_beyond(&state, horizon));
        if !due {
            continue;
        }
        match beat(&state, &identity).await {
            Ok(record) => last_beat = Some((tokio::time::Instant::now(), record.info.signs_until)),
            Err(e) => tracing::warn!(error = %e, "cannot record this server's heartbeat"),
        }
        match state.authority.retired_servers().await {
            Ok(now_retired) if now_retired != retired => {
                retire(&state, &now_retired).await;
                retired = now_retired;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the other servers' heartbeats"),
        }
    }
}

/// Records one heartbeat now.
pub(crate) async fn beat(
    state: &ServerState,
    identity: &Identity,
) -> Result<ServerRecord, lanyard_store::Error> {
    let info = ServerInfo {
        server_id: state.authority.server_id().to_owned(),
        node_address: identity.node_address.to_string(),
        health_address: identity.health_address.map(|a| a.to_string()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: identity.started_at,
        ca_expires_at: state.authority.active_x509_expiry(),
        signs_until: horizon(state),
    };
    state.store.server_heartbeat(&info).await
}

/// Until when credentials this server handed out, or hands out before its next beat, may be
/// valid: its longest default lifetime from now (or the latest expiry it signed, if later), plus
/// two heartbeat intervals for the beat that may come late.
fn horizon(state: &ServerState) -> SystemTime {
    let now = state.clock.now();
    let config = &state.config;
    // Task credentials are only granted under a policy; access tokens only with [oauth].
    let tasks = match config.policy_dir {
        Some(_) => crate::tasks::MAX_TASK_TTL,
        None => Duration::ZERO,
    };
    let access_tokens = config
        .oauth
        .as_ref()
        .map_or(Duration::ZERO, |o| o.access_token_ttl);
    let longest_default = [
        config.ca.default_x509_svid_ttl,
        config.ca.default_jwt_svid_ttl,
        config.agent_svid_ttl,
        tasks,
        access_tokens,
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    let signed = state.authority.ca.signed_until().unwrap_or(now);
    (now + longest_default).max(signed) + 2 * config.heartbeat_interval
}

/// True if the CA signed something expiring after what the last beat recorded, less the margin
/// the horizon keeps for a late beat.
fn signed_beyond(state: &ServerState, recorded: SystemTime) -> bool {
    let margin = state.config.heartbeat_interval;
    state
        .authority
        .ca
        .signed_until()
        .is_some_and(|signed| signed + margin > recorded)
}

/// Publishes the bundle again now that the retired servers are `retired`, and sends it out.
async fn retire(state: &ServerState, retired: &BTreeSet<String>) {
    match state.authority.persist().await {
        Ok(()) => {
            tracing::info!(
                retired = ?retired,
                sequence = state.authority.trust_bundle().sequence(),
                "servers whose credentials have all expired are out of the bundle"
            );
            state.bundles_changed().await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot publish the bundle without retired servers"),
    }
}

/// Whether a server's heartbeat is recent enough to call it live, judged with this server's
/// heartbeat interval.
pub(crate) fn is_live(record: &ServerRecord, now: SystemTime, interval: Duration) -> bool {
    now.duration_since(record.last_seen)
        .is_ok_and(|age| age <= interval * MISSED_BEATS)
        || record.last_seen > now
}
