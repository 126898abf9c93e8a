//! The agent as the Workload API's [`IdentitySource`]: the published snapshots, and JWT-SVIDs
//! minted by the server (`NewJwtSvid`) and cached by (SPIFFE ID, audiences) until half their life.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use lanyard_core::SpiffeId;
use lanyard_proto::node::NewJwtSvidRequest;
use lanyard_workload::{IdentitySource, JwtSvidCache, JwtSvidFetchError, Snapshot};
use tokio::sync::watch;

use crate::agent::Shared;

/// What the Workload API server reads.
#[derive(Debug, Clone)]
pub(crate) struct AgentSource {
    snapshots: Arc<watch::Sender<Arc<Snapshot>>>,
    jwt_cache: Arc<JwtSvidCache>,
    /// Set once the agent has its identity; until then nothing is entitled to a JWT-SVID.
    shared: Arc<OnceLock<Arc<Shared>>>,
}

impl AgentSource {
    pub(crate) fn new(
        snapshots: Arc<watch::Sender<Arc<Snapshot>>>,
        jwt_cache: Arc<JwtSvidCache>,
        shared: Arc<OnceLock<Arc<Shared>>>,
    ) -> Self {
        Self {
            snapshots,
            jwt_cache,
            shared,
        }
    }
}

impl IdentitySource for AgentSource {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    async fn fetch_jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        audiences: &[String],
    ) -> Result<String, JwtSvidFetchError> {
        let shared = self
            .shared
            .get()
            .ok_or_else(|| JwtSvidFetchError::Unavailable {
                reason: "the agent is not attested yet".into(),
            })?
            .clone();
        let entry_id = shared
            .cache()
            .entry_for(spiffe_id, shared.now())
            .ok_or_else(|| JwtSvidFetchError::Refused {
                spiffe_id: spiffe_id.clone(),
                reason: "no entry has this SPIFFE ID any more".into(),
            })?;
        self.jwt_cache
            .get_or_mint(spiffe_id, audiences, || async {
                let response = shared
                    .client()
                    .new_jwt_svid(NewJwtSvidRequest {
                        entry_id: entry_id.to_string(),
                        audience: audiences.to_vec(),
                    })
                    .await
                    .map_err(|status| match status.code() {
                        tonic::Code::PermissionDenied
                        | tonic::Code::NotFound
                        | tonic::Code::InvalidArgument => JwtSvidFetchError::Refused {
                            spiffe_id: spiffe_id.clone(),
                            reason: status.message().to_owned(),
                        },
                        _ => JwtSvidFetchError::Unavailable {
                            reason: crate::attest::status_detail(&status),
                        },
                    })?
                    .into_inner();
                let expires_at = u64::try_from(response.expires_at)
                    .ok()
                    .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
                    .ok_or_else(|| JwtSvidFetchError::Unavailable {
                        reason: "the server sent a JWT-SVID without a valid expiry".into(),
                    })?;
                Ok((response.token, expires_at))
            })
            .await
    }
}
