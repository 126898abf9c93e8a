//! Workload SVIDs: for every entry due (new, changed, at its renewal time, or no longer trusted by
//! the bundle) a fresh key and CSR, sent in `BatchNewX509Svid` batches; results are checked and
//! cached, and the snapshot published. Expired SVIDs are dropped on time even while the server is
//! away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_core::EntryId;
use lanyard_proto::node::{BatchNewX509SvidRequest, X509SvidParams};
use tokio::sync::watch;

use crate::AgentError;
use crate::agent::{CallError, MAX_IDLE, ReattestReason, Shared, classify, pause};
use crate::attest::is_transient;
use crate::cache::{InstallError, MintJob};
use crate::keys::{self, KeyAndCsr};
use crate::timing::Backoff;

/// An entry the server would not mint for (or whose result did not check out), and when to try
/// it again.
#[derive(Debug)]
struct Failure {
    backoff: Backoff,
    retry_at: SystemTime,
}

/// Runs until the agent stops; an error is fatal.
pub(crate) async fn mint_loop(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let tuning = shared.config.tuning.clone();
    let mut backoff = Backoff::new(tuning.retry_initial, tuning.retry_max);
    let mut failures: HashMap<EntryId, Failure> = HashMap::new();
    loop {
        let now = shared.now();
        let (jobs, deadline, dropped) = {
            let mut cache = shared.cache();
            let dropped = cache.drop_expired(now);
            (cache.mint_jobs(now), cache.next_deadline(now), dropped)
        };
        if dropped {
            tracing::warn!("SVIDs expired before they could be renewed");
            shared.publish();
        }
        failures.retain(|id, _| jobs.iter().any(|j| &j.entry_id == id));
        let jobs: Vec<MintJob> = jobs
            .into_iter()
            .filter(|j| failures.get(&j.entry_id).is_none_or(|f| f.retry_at <= now))
            .collect();
        let mut wait = [deadline, failures.values().map(|f| f.retry_at).min()]
            .into_iter()
            .flatten()
            .filter_map(|t| t.duration_since(now).ok())
            .min()
            .unwrap_or(MAX_IDLE);
        if !jobs.is_empty() {
            let seen = *shared.generation.borrow();
            match mint(&shared, &jobs, &mut failures, tuning.mint_batch_size).await {
                Ok(()) => {
                    backoff.reset();
                    continue;
                }
                Err(CallError::Transient(detail)) => {
                    wait = backoff.next_delay();
                    tracing::warn!(error = %detail, retry_in = ?wait, pending = jobs.len(), "cannot mint SVIDs now; serving what is cached");
                }
                Err(CallError::Rejected(status)) => {
                    let reason = format!("minting SVIDs: {}", status.message());
                    match shared
                        .reattest(ReattestReason::Rejected(reason), seen)
                        .await
                    {
                        Ok(()) => continue,
                        Err(e) if is_transient(&e) => wait = backoff.next_delay(),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // Round up to the next millisecond so a deadline is never woken for just before it.
        let wait = wait.saturating_add(Duration::from_millis(1));
        if pause(wait, &mut stop, shared.mint_wakeup.notified()).await {
            return Ok(());
        }
    }
}

/// Mints `jobs` in batches, installing each result; per-entry refusals go to `failures`. A failed
/// call ends the round.
async fn mint(
    shared: &Shared,
    jobs: &[MintJob],
    failures: &mut HashMap<EntryId, Failure>,
    batch_size: usize,
) -> Result<(), CallError> {
    for batch in jobs.chunks(batch_size.max(1)) {
        let keys = batch
            .iter()
            .map(|_| keys::generate())
            .collect::<Result<Vec<KeyAndCsr>, _>>()
            .map_err(|e| CallError::Transient(e.to_string()))?;
        let request = BatchNewX509SvidRequest {
            params: batch
                .iter()
                .zip(&keys)
                .map(|(job, key)| X509SvidParams {
                    entry_id: job.entry_id.to_string(),
                    csr: key.csr.clone(),
                })
                .collect(),
        };
        let response = shared
            .client()
            .batch_new_x509_svid(request)
            .await
            .map_err(classify)?
            .into_inner();
        if response.results.len() != batch.len() {
            return Err(CallError::Transient(format!(
                "the server answered {} CSRs with {} results",
                batch.len(),
                response.results.len()
            )));
        }
        let now = shared.now();
        let mut installed = 0usize;
        for ((job, key), result) in batch.iter().zip(keys).zip(response.results) {
            let outcome = if result.entry_id != job.entry_id.as_str() {
                Err(format!(
                    "a result for entry {:?} in its place",
                    result.entry_id
                ))
            } else if result.code != 0 {
                Err(format!(
                    "the server refused ({}): {}",
                    tonic::Code::from(result.code).description(),
                    result.message
                ))
            } else {
                match shared
                    .cache()
                    .install(job, result.cert_chain, key.key, &key.spki, now)
                {
                    Ok(()) => Ok(()),
                    // Minted again in the next round, at once.
                    Err(InstallError::Stale) => continue,
                    Err(InstallError::Invalid(reason)) => Err(reason),
                }
            };
            match outcome {
                Ok(()) => {
                    installed += 1;
                    failures.remove(&job.entry_id);
                }
                Err(reason) => {
                    let failure = failures
                        .entry(job.entry_id.clone())
                        .or_insert_with(|| Failure {
                            backoff: Backoff::new(
                                shared.config.tuning.retry_initial,
                                shared.config.tuning.retry_max,
                            ),
                            retry_at: now,
                        });
                    let delay = failure.backoff.next_delay();
                    failure.retry_at = now + delay;
                    tracing::warn!(entry_id = %job.entry_id, %reason, retry_in = ?delay, "no SVID for entry");
                }
            }
        }
        tracing::debug!(installed, requested = batch.len(), "SVIDs minted");
        shared.publish();
    }
    Ok(())
}
