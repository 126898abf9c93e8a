//! The streams both services serve from snapshots (`FetchX509SVID`, `FetchX509Bundles`,
//! `FetchJWTBundles`, the task service's `WatchRevocations`): a message built for the caller from
//! the newest snapshot, sent again only when what the caller sees changes, ended by shutdown.

use std::sync::Arc;

use lanyard_core::SelectorSet;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::status;
use crate::{IdentitySource, Snapshot};

/// A stream of messages, each the full state.
pub(crate) type UpdateStream<M> = ReceiverStream<Result<M, Status>>;

/// Builds one message of a stream for a caller: `Ok(None)` when there is nothing to say yet (the
/// stream waits for a snapshot that has it); `Err` ends the stream with that status.
pub(crate) type Build<M> = fn(&Snapshot, &SelectorSet) -> Result<Option<M>, Status>;

/// Opens a stream for a caller with `selectors`: refuses the call if the current snapshot builds
/// an error, else sends its message (if it has one) at once, then a new one on every snapshot
/// change that changes what this caller sees, until `stop` turns true (then `Unavailable`).
pub(crate) fn open<S, M>(
    source: &S,
    stop: watch::Receiver<bool>,
    selectors: SelectorSet,
    build: Build<M>,
) -> Result<Response<UpdateStream<M>>, Status>
where
    S: IdentitySource,
    M: PartialEq + Clone + Send + 'static,
{
    let mut snapshots = source.subscribe();
    let snapshot = snapshots.borrow_and_update().clone();
    let first = build(&snapshot, &selectors)?;
    // One message in flight: a slow reader holds the latest state back, never a backlog.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(follow(snapshots, selectors, build, first, tx, stop));
    Ok(Response::new(ReceiverStream::new(rx)))
}

async fn follow<M: PartialEq + Clone + Send>(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    selectors: SelectorSet,
    build: Build<M>,
    first: Option<M>,
    tx: mpsc::Sender<Result<M, Status>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = first.clone();
    if let Some(first) = first
        && !deliver(&tx, Ok(first), &mut stop).await
    {
        return;
    }
    loop {
        tokio::select! {
            () = stopped(&mut stop) => {
                let _ = tx.try_send(Err(status::shutting_down()));
                return;
            }
            () = tx.closed() => return,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    let _ = tx.try_send(Err(status::source_closed()));
                    return;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                match build(&snapshot, &selectors) {
                    Ok(None) => {}
                    Ok(Some(message)) if last.as_ref() == Some(&message) => {}
                    Ok(Some(message)) => {
                        last = Some(message.clone());
                        if !deliver(&tx, Ok(message), &mut stop).await {
                            return;
                        }
                    }
                    // Lost every identity: PermissionDenied ends the stream (WAPI-3).
                    Err(status) => {
                        deliver(&tx, Err(status), &mut stop).await;
                        return;
                    }
                }
            }
        }
    }
}

/// Sends unless the client is gone or shutdown starts first.
async fn deliver<M>(
    tx: &mpsc::Sender<Result<M, Status>>,
    item: Result<M, Status>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        () = stopped(stop) => false,
    }
}

/// Completes when shutdown has started (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}
