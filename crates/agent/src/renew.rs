//! The agent's own SVID: renewed through `RenewAgent` (a new key and CSR) at half its lifetime
//! ±10%, persisted, and presented on every new connection from then on. Past its `NotAfter` the
//! agent must attest again.

use std::sync::Arc;

use lanyard_proto::node::RenewAgentRequest;
use tokio::sync::watch;

use crate::agent::{CallError, ReattestReason, Shared, classify, pause};
use crate::attest::{agent_svid_from, is_transient};
use crate::timing::Backoff;
use crate::{AgentError, keys};

/// Runs until the agent stops; an error is fatal.
pub(crate) async fn renew_loop(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let tuning = &shared.config.tuning;
    let mut backoff = Backoff::new(tuning.retry_initial, tuning.retry_max);
    loop {
        let seen = *shared.generation.borrow();
        let (_, renew_at, not_after, _) = shared.agent_svid_times();
        let now = shared.now();
        if now >= not_after {
            match shared
                .reattest(ReattestReason::Expired(not_after), seen)
                .await
            {
                Ok(()) => continue,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "cannot attest again yet");
                    if pause(backoff.next_delay(), &mut stop, std::future::pending()).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        if let Ok(wait) = renew_at.duration_since(now)
            && !wait.is_zero()
        {
            let mut generation = shared.generation.subscribe();
            let changed = async move {
                let _ = generation.changed().await;
            };
            if pause(wait, &mut stop, changed).await {
                return Ok(());
            }
            continue;
        }
        let wait = match renew(&shared).await {
            Ok(()) => {
                backoff.reset();
                continue;
            }
            Err(CallError::Transient(detail)) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %detail, retry_in = ?wait, "cannot renew the agent SVID now");
                wait
            }
            Err(CallError::Rejected(status)) => {
                let reason = format!("renewing the agent SVID: {}", status.message());
                match shared
                    .reattest(ReattestReason::Rejected(reason), seen)
                    .await
                {
                    Ok(()) => continue,
                    Err(e) if is_transient(&e) => backoff.next_delay(),
                    Err(e) => return Err(e),
                }
            }
        };
        // Never wait past expiry: at expiry the next round attests again.
        let until_expiry = not_after.duration_since(shared.now()).unwrap_or_default();
        if pause(wait.min(until_expiry), &mut stop, std::future::pending()).await {
            return Ok(());
        }
    }
}

/// One renewal.
async fn renew(shared: &Shared) -> Result<(), CallError> {
    let (spiffe_id, _, _, token_id) = shared.agent_svid_times();
    let fresh = keys::generate().map_err(|e| CallError::Transient(e.to_string()))?;
    let response = shared
        .client()
        .renew_agent(RenewAgentRequest { csr: fresh.csr })
        .await
        .map_err(classify)?
        .into_inner();
    let message = response
        .svid
        .ok_or_else(|| CallError::Transient("RenewAgent answered without an SVID".into()))?;
    let renewed = agent_svid_from(
        message,
        fresh.key,
        token_id,
        &shared.config.trust_domain,
        shared.now(),
    )
    .map_err(|e| CallError::Transient(e.to_string()))?;
    if renewed.svid.spiffe_id != spiffe_id {
        return Err(CallError::Transient(format!(
            "the renewed SVID is for {}, not {spiffe_id}",
            renewed.svid.spiffe_id
        )));
    }
    tracing::info!(agent = %spiffe_id, "agent SVID renewed");
    shared
        .install_agent_svid(renewed.svid)
        .map_err(|e| CallError::Transient(e.to_string()))
}
