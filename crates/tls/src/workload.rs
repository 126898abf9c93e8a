//! TLS configs that follow the Workload API: the process's SVID and its trust bundles are kept
//! current from the agent's `FetchX509SVID` stream, so new connections use the newest SVID and
//! bundles without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lanyard_core::{BundleSet, SpiffeId};
use lanyard_workload::{WorkloadClient, X509Context};
use tokio::sync::watch;

use crate::{
    Authorizer, BundleHandle, SpiffeClientVerifier, SpiffeServerVerifier, SvidHandle, TlsError,
};

/// Longest wait between reconnection attempts to the Workload API.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long [`WorkloadIdentity::connect`] waits for the first SVID.
pub const FIRST_SVID_TIMEOUT: Duration = Duration::from_secs(30);

/// `InvalidArgument` means the request itself is wrong: retrying cannot help (SPIFFE Workload
/// Endpoint §6). Everything else may pass.
fn is_final(e: &lanyard_workload::Error) -> bool {
    e.status()
        .is_some_and(|s| s.code() == tonic::Code::InvalidArgument)
}

/// The current X509-SVID and bundles of this process, from the Workload API.
#[derive(Debug)]
pub struct WorkloadIdentity {
    svid: SvidHandle,
    bundles: BundleHandle,
    /// The default SVID's ID, and how many updates have been applied.
    state: watch::Receiver<(SpiffeId, u64)>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkloadIdentity {
    /// Connects to the Workload API at `socket` and waits for the first SVID, for at most
    /// [`FIRST_SVID_TIMEOUT`]. Like every SPIFFE client it retries, with backoff, while the agent
    /// is not there yet or has no identity for this process yet (it may be about to get one).
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, TlsError> {
        let socket = socket.as_ref().to_owned();
        let deadline = tokio::time::Instant::now() + FIRST_SVID_TIMEOUT;
        let mut backoff = Duration::from_millis(50);
        let (updates, first) = loop {
            let attempt = async {
                let mut client = WorkloadClient::connect(&socket).await?;
                let mut updates = client.watch_x509_context().await?;
                let first = updates.next().await?;
                Ok::<_, lanyard_workload::Error>((updates, first))
            }
            .await;
            match attempt {
                Ok(ok) => break ok,
                Err(e) if is_final(&e) || tokio::time::Instant::now() >= deadline => {
                    return Err(TlsError::workload(e));
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let svid = SvidHandle::default();
        let bundles = BundleHandle::default();
        let id = apply(&first, &svid, &bundles)?;
        let (tx, state) = watch::channel((id, 1));
        let task = tokio::spawn(follow(socket, updates, svid.clone(), bundles.clone(), tx));
        Ok(Self {
            svid,
            bundles,
            state,
            task,
        })
    }

    /// The SPIFFE ID of the default SVID.
    pub fn spiffe_id(&self) -> SpiffeId {
        self.state.borrow().0.clone()
    }

    /// Changes every time a new SVID or bundle arrives; the number counts the updates.
    pub fn updates(&self) -> watch::Receiver<(SpiffeId, u64)> {
        self.state.clone()
    }

    /// A server config presenting this SVID and requiring clients that `authorizer` accepts.
    pub fn server_config(&self, authorizer: Authorizer) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = SpiffeClientVerifier::new(self.bundles.clone(), authorizer);
        crate::server_config(self.svid.clone(), Some(verifier))
    }

    /// A client config presenting this SVID and accepting servers that `authorizer` accepts.
    pub fn client_config(&self, authorizer: Authorizer) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = SpiffeServerVerifier::new(self.bundles.clone(), authorizer);
        crate::client_config(verifier, Some(self.svid.clone()))
    }
}

impl Drop for WorkloadIdentity {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the default SVID and every bundle of `context`; returns the SVID's ID.
fn apply(
    context: &X509Context,
    svid: &SvidHandle,
    bundles: &BundleHandle,
) -> Result<SpiffeId, TlsError> {
    let default = context.svids.first().ok_or(TlsError::EmptyChain)?;
    svid.set(&default.chain, default.key.as_pkcs8_der())?;
    let mut set: BundleSet = context.federated_bundles.clone();
    for s in &context.svids {
        set.insert(s.bundle.clone());
    }
    bundles.set(set);
    Ok(default.spiffe_id.clone())
}

/// Applies every update; reconnects with backoff when the stream ends. The last good SVID stays
/// in use meanwhile (it is still valid until it expires).
async fn follow(
    socket: PathBuf,
    mut updates: lanyard_workload::Updates<X509Context>,
    svid: SvidHandle,
    bundles: BundleHandle,
    tx: watch::Sender<(SpiffeId, u64)>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match updates.next().await {
            Ok(context) => match apply(&context, &svid, &bundles) {
                Ok(id) => {
                    backoff = Duration::from_millis(100);
                    tx.send_modify(|(current, count)| {
                        *current = id;
                        *count += 1;
                    });
                }
                Err(e) => tracing::warn!(error = %e, "ignoring an unusable Workload API update"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "Workload API stream ended; reconnecting");
                loop {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let reconnected = async {
                        let mut client = WorkloadClient::connect(&socket).await?;
                        client.watch_x509_context().await
                    }
                    .await;
                    if let Ok(stream) = reconnected {
                        updates = stream;
                        break;
                    }
                }
            }
        }
    }
}
