//! The `SpiffeWorkloadAPI` gRPC service: request checks, caller attestation, and the streams that
//! follow snapshot changes.

use std::sync::Arc;

use lanyard_core::{SelectorSet, SharedClock, SpiffeId, verify_jwt_svid};
use lanyard_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
    WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::stream::{self, Build, UpdateStream};
use super::{CallerInfo, responses, status};
use crate::{CallerAttestor, IdentitySource, Revocations, Snapshot};

/// The gRPC metadata key every Workload API request must carry, with value `true`.
pub(crate) const SECURITY_HEADER: &str = "workload.spiffe.io";

pub(crate) struct WorkloadService<S, A> {
    pub(crate) source: Arc<S>,
    pub(crate) attestor: Arc<A>,
    pub(crate) clock: SharedClock,
    /// Turns true when shutdown starts: open streams end so that graceful shutdown can finish.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Validates a JWT-SVID for a caller with `selectors`: against the own bundle and those of the
/// trust domains the caller's entries federate with, for `audience`, at `now`, and not revoked
/// (see [`Revocations`]). Shared by `ValidateJWTSVID` and the task service's `ValidateTaskToken`.
pub(crate) fn validate_token(
    snapshot: &Snapshot,
    selectors: &SelectorSet,
    token: &str,
    audience: &str,
    now: std::time::SystemTime,
) -> Result<lanyard_core::VerifiedJwtSvid, Status> {
    let bundles = responses::validation_bundles(snapshot, selectors);
    let verified = verify_jwt_svid(token, audience, &bundles, now)
        .map_err(|e| status::invalid_jwt_svid(&e))?;
    // A task's token is revoked when the task ends, before it expires.
    match snapshot.revocations() {
        Revocations::NotTracked => {}
        Revocations::Pending => return Err(status::revocations_pending()),
        Revocations::Known(revoked) => revoked
            .check(&verified)
            .map_err(|_| status::token_revoked())?,
    }
    Ok(verified)
}

/// Refuses a request without exactly one `workload.spiffe.io: true` (EP-3). Runs before the
/// request body is read and before any handler, for unary and streaming RPCs alike.
#[allow(
    clippy::result_large_err,
    reason = "tonic's interceptor signature returns Status"
)]
pub(crate) fn check_security_header(request: Request<()>) -> Result<Request<()>, Status> {
    let mut values = request.metadata().get_all(SECURITY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if value.as_bytes() == b"true" => Ok(request),
        _ => Err(status::security_header_missing()),
    }
}

// === impl WorkloadService ===

impl<S: IdentitySource, A: CallerAttestor> WorkloadService<S, A> {
    async fn attest<T>(&self, request: &Request<T>) -> Result<SelectorSet, Status> {
        let credentials = request
            .extensions()
            .get::<CallerInfo>()
            .and_then(|info| info.0.clone());
        let Some(credentials) = credentials else {
            return Err(status::no_credentials());
        };
        self.attestor
            .attest(&credentials)
            .await
            .map_err(|e| status::attestation_failed(&e))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.source.subscribe().borrow().clone()
    }

    /// A stream of `build`'s message for this caller; see [`stream::open`].
    fn open_stream<M>(
        &self,
        selectors: SelectorSet,
        build: Build<M>,
    ) -> Result<Response<UpdateStream<M>>, Status>
    where
        M: PartialEq + Clone + Send + 'static,
    {
        stream::open(&*self.source, self.stop.clone(), selectors, build)
    }
}

#[tonic::async_trait]
impl<S: IdentitySource, A: CallerAttestor> SpiffeWorkloadApi for WorkloadService<S, A> {
    type FetchX509SVIDStream = UpdateStream<X509svidResponse>;
    type FetchX509BundlesStream = UpdateStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = UpdateStream<JwtBundlesResponse>;
    type FetchWITSVIDStream = UpdateStream<WitsvidResponse>;
    type FetchWITBundlesStream = UpdateStream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let selectors = self.attest(&request).await?;
        self.open_stream(selectors, |snapshot, caller| {
            responses::x509_svids(snapshot, caller).map(Some)
        })
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let selectors = self.attest(&request).await?;
        self.open_stream(selectors, |snapshot, caller| {
            responses::x509_bundles(snapshot, caller).map(Some)
        })
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let body = request.get_ref();
        if body.audience.is_empty() || body.audience.iter().any(String::is_empty) {
            return Err(status::audience_missing());
        }
        let requested = match body.spiffe_id.as_str() {
            "" => None,
            id => Some(SpiffeId::parse(id).map_err(|e| status::invalid_spiffe_id(&e))?),
        };
        let selectors = self.attest(&request).await?;
        let mut identities = responses::jwt_identities(&self.snapshot(), &selectors)?;
        if let Some(requested) = &requested {
            identities.retain(|(id, _)| id == requested);
            if identities.is_empty() {
                return Err(status::no_identity());
            }
        }
        let mut svids = Vec::with_capacity(identities.len());
        for (spiffe_id, hint) in identities {
            let token = self
                .source
                .fetch_jwt_svid(&spiffe_id, &body.audience)
                .await
                .map_err(|e| status::jwt_fetch_failed(&e))?;
            svids.push(Jwtsvid {
                spiffe_id: spiffe_id.to_string(),
                svid: token,
                hint,
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let selectors = self.attest(&request).await?;
        self.open_stream(selectors, |snapshot, caller| {
            responses::jwt_bundles(snapshot, caller).map(Some)
        })
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let body = request.get_ref();
        if body.audience.is_empty() {
            return Err(status::audience_missing());
        }
        if body.svid.is_empty() {
            return Err(status::svid_missing());
        }
        let selectors = self.attest(&request).await?;
        let snapshot = self.snapshot();
        let verified = validate_token(
            &snapshot,
            &selectors,
            &body.svid,
            &body.audience,
            self.clock.now(),
        )?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: verified.spiffe_id().to_string(),
            claims: Some(responses::claims(&verified, snapshot.trust_domain())),
        }))
    }

    async fn fetch_witsvid(
        &self,
        _request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(status::wit_unimplemented())
    }

    async fn fetch_wit_bundles(
        &self,
        _request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(status::wit_unimplemented())
    }
}
