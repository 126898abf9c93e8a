//! A Workload API client over a Unix socket, for the CLI, tests and Rust services. It always sends
//! the security header, and parses what the server sends into lanyard's types, refusing malformed
//! responses. Besides the SPIFFE Workload API it follows the task service's revocation feed, so a
//! service validating tokens locally needs nothing else:
//!
//! ```no_run
//! # async fn service(socket: &std::path::Path) -> Result<(), lanyard_workload::Error> {
//! use lanyard_core::verify_jwt_svid;
//! use lanyard_workload::WorkloadClient;
//!
//! let mut client = WorkloadClient::connect(socket).await?;
//! let mut bundles = client.watch_jwt_bundles().await?;
//! let mut revocations = client.watch_revocations().await?;
//! let (bundles, revoked) = (bundles.next().await?, revocations.next().await?);
//! # let token = "";
//! let verified = verify_jwt_svid(token, "tickets", &bundles, std::time::SystemTime::now());
//! let allowed = verified.is_ok_and(|token| revoked.check(&token).is_ok());
//! # let _ = allowed;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use hyper_util::rt::TokioIo;
use lanyard_core::{Bundle, BundleSet, RevocationList, SpiffeId, TrustDomain, X509Authority};
use lanyard_proto::task::tasks_client::TasksClient;
use lanyard_proto::task::{WatchRevocationsRequest, WatchRevocationsResponse};
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, ValidateJwtsvidRequest,
    X509BundlesRequest, X509BundlesResponse, X509svidRequest, X509svidResponse,
};
use serde_json::{Map, Value};
use tokio::net::UnixStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, SvidKey};

/// A Workload API connection, which also reaches the task service on the same socket.
#[derive(Debug, Clone)]
pub struct WorkloadClient {
    inner: SpiffeWorkloadApiClient<InterceptedService<Channel, SecurityHeader>>,
    tasks: TasksClient<InterceptedService<Channel, SecurityHeader>>,
}

/// Adds `workload.spiffe.io: true` to every request.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeader;

/// One X509-SVID with the bundle of its trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Svid {
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub key: SvidKey,
    pub bundle: Bundle,
    pub hint: String,
}

/// One `FetchX509SVID` message: the caller's SVIDs (the first is the default) and federated
/// bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Context {
    pub svids: Vec<X509Svid>,
    pub federated_bundles: BundleSet,
}

/// One JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvid {
    pub spiffe_id: SpiffeId,
    pub token: String,
    pub hint: String,
}

/// A token the server validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwtSvid {
    pub spiffe_id: SpiffeId,
    pub claims: Map<String, Value>,
}

/// The messages of a Workload API stream, each the full state.
pub struct Updates<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>,
}

// === impl WorkloadClient ===

impl WorkloadClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        let channel = connect_channel(path).await?;
        Ok(Self {
            inner: SpiffeWorkloadApiClient::with_interceptor(channel.clone(), SecurityHeader),
            tasks: TasksClient::with_interceptor(channel, SecurityHeader),
        })
    }

    /// The first `FetchX509SVID` message.
    pub async fn fetch_x509_context(&mut self) -> Result<X509Context, Error> {
        self.watch_x509_context().await?.next().await
    }

    /// `FetchX509SVID` as a stream: a message at once, then one per change.
    pub async fn watch_x509_context(&mut self) -> Result<Updates<X509Context>, Error> {
        let stream = self
            .inner
            .fetch_x509svid(X509svidRequest {})
            .await?
            .into_inner();
        Ok(Updates::new(stream, parse_x509_context))
    }

    /// The first `FetchX509Bundles` message: roots by trust domain.
    pub async fn fetch_x509_bundles(&mut self) -> Result<BundleSet, Error> {
        self.watch_x509_bundles().await?.next().await
    }

    pub async fn watch_x509_bundles(&mut self) -> Result<Updates<BundleSet>, Error> {
        let stream = self
            .inner
            .fetch_x509_bundles(X509BundlesRequest {})
            .await?
            .into_inner();
        Ok(Updates::new(stream, parse_x509_bundles))
    }

    /// The first `FetchJWTBundles` message: JWT keys by trust domain.
    pub async fn fetch_jwt_bundles(&mut self) -> Result<BundleSet, Error> {
        self.watch_jwt_bundles().await?.next().await
    }

    pub async fn watch_jwt_bundles(&mut self) -> Result<Updates<BundleSet>, Error> {
        let stream = self
            .inner
            .fetch_jwt_bundles(JwtBundlesRequest {})
            .await?
            .into_inner();
        Ok(Updates::new(stream, parse_jwt_bundles))
    }

    /// The task service's `WatchRevocations`: the tokens revoked before their expiry, for checking
    /// tokens verified locally ([`RevocationList::check`]). The first message comes once the agent
    /// has heard the list from its server (`next` waits until then), then one on every change,
    /// each the whole list.
    pub async fn watch_revocations(&mut self) -> Result<Updates<RevocationList>, Error> {
        let stream = self
            .tasks
            .watch_revocations(WatchRevocationsRequest {})
            .await?
            .into_inner();
        Ok(Updates::new(stream, parse_revocations))
    }

    /// JWT-SVIDs for `audiences`: for every identity of the caller, or only `spiffe_id`.
    pub async fn fetch_jwt_svids(
        &mut self,
        audiences: &[String],
        spiffe_id: Option<&SpiffeId>,
    ) -> Result<Vec<JwtSvid>, Error> {
        let response = self
            .inner
            .fetch_jwtsvid(JwtsvidRequest {
                audience: audiences.to_vec(),
                spiffe_id: spiffe_id.map(ToString::to_string).unwrap_or_default(),
            })
            .await?
            .into_inner();
        if response.svids.is_empty() {
            return Err(invalid("there were no SVIDs in the response"));
        }
        response
            .svids
            .into_iter()
            .map(|svid| {
                Ok(JwtSvid {
                    spiffe_id: parse_id(&svid.spiffe_id)?,
                    token: svid.svid,
                    hint: svid.hint,
                })
            })
            .collect()
    }

    /// Asks the server to validate `token` for `audience`.
    pub async fn validate_jwt_svid(
        &mut self,
        audience: &str,
        token: &str,
    ) -> Result<ValidatedJwtSvid, Error> {
        let response = self
            .inner
            .validate_jwtsvid(ValidateJwtsvidRequest {
                audience: audience.to_owned(),
                svid: token.to_owned(),
            })
            .await?
            .into_inner();
        Ok(ValidatedJwtSvid {
            spiffe_id: parse_id(&response.spiffe_id)?,
            claims: response
                .claims
                .map(|claims| struct_to_json(&claims))
                .unwrap_or_default(),
        })
    }
}

/// A channel to the Workload API socket at `path`, with no interceptor: for callers that need
/// the generated client itself (tests sending malformed requests).
pub async fn connect_channel(path: impl AsRef<Path>) -> Result<Channel, Error> {
    let path: PathBuf = path.as_ref().to_owned();
    let socket = path.clone();
    // The URI is never dialled; `localhost` is the `:authority` every server accepts.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| Error::Connect { path, source })
}

impl Interceptor for SecurityHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("workload.spiffe.io", MetadataValue::from_static("true"));
        Ok(request)
    }
}

// === impl Updates ===

impl<T: 'static> Updates<T> {
    fn new<M: Send + 'static>(
        stream: tonic::Streaming<M>,
        parse: fn(M) -> Result<T, Error>,
    ) -> Self {
        Self {
            inner: Box::pin(stream.map(move |item| parse(item?))),
        }
    }

    /// The next message; [`Error::Status`] when the server ends the stream with one,
    /// [`Error::StreamEnded`] when it ends without.
    pub async fn next(&mut self) -> Result<T, Error> {
        self.inner.next().await.unwrap_or(Err(Error::StreamEnded))
    }
}

impl<T> fmt::Debug for Updates<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

// === parsing ===

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidResponse {
        reason: reason.into(),
    }
}

fn parse_id(id: &str) -> Result<SpiffeId, Error> {
    SpiffeId::parse(id).map_err(|e| invalid(format!("SPIFFE ID {id:?}: {e}")))
}

/// A bundle map key: `spiffe://<td>` as servers send it, or a bare `<td>` as go-spiffe accepts.
fn parse_trust_domain(key: &str) -> Result<TrustDomain, Error> {
    let name = key.strip_prefix("spiffe://").unwrap_or(key);
    TrustDomain::new(name).map_err(|e| invalid(format!("trust domain {key:?}: {e}")))
}

fn parse_x509_bundle(trust_domain: TrustDomain, der: &[u8]) -> Result<Bundle, Error> {
    let authorities = X509Authority::parse_concatenated_der(der)
        .map_err(|e| invalid(format!("bundle of {trust_domain}: {e}")))?;
    let mut bundle = Bundle::new(trust_domain);
    for authority in authorities {
        bundle.add_x509_authority(authority);
    }
    Ok(bundle)
}

fn parse_chain(mut der: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut chain = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| invalid(format!("certificate chain: {e}")))?;
        chain.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    if chain.is_empty() {
        return Err(invalid("an SVID has no certificates"));
    }
    Ok(chain)
}

fn parse_x509_context(response: X509svidResponse) -> Result<X509Context, Error> {
    if response.svids.is_empty() {
        return Err(invalid("no SVIDs in response"));
    }
    let svids = response
        .svids
        .into_iter()
        .map(|svid| {
            let spiffe_id = parse_id(&svid.spiffe_id)?;
            if svid.x509_svid_key.is_empty() {
                return Err(invalid(format!("SVID {spiffe_id} has no key")));
            }
            Ok(X509Svid {
                chain: parse_chain(&svid.x509_svid)?,
                key: SvidKey::from_pkcs8_der(svid.x509_svid_key),
                bundle: parse_x509_bundle(spiffe_id.trust_domain(), &svid.bundle)?,
                hint: svid.hint,
                spiffe_id,
            })
        })
        .collect::<Result<_, Error>>()?;
    let mut federated_bundles = BundleSet::new();
    for (key, der) in response.federated_bundles {
        federated_bundles.insert(parse_x509_bundle(parse_trust_domain(&key)?, &der)?);
    }
    Ok(X509Context {
        svids,
        federated_bundles,
    })
}

fn parse_x509_bundles(response: X509BundlesResponse) -> Result<BundleSet, Error> {
    let mut bundles = BundleSet::new();
    for (key, der) in response.bundles {
        bundles.insert(parse_x509_bundle(parse_trust_domain(&key)?, &der)?);
    }
    Ok(bundles)
}

fn parse_jwt_bundles(response: JwtBundlesResponse) -> Result<BundleSet, Error> {
    let mut bundles = BundleSet::new();
    for (key, jwks) in response.bundles {
        let trust_domain = parse_trust_domain(&key)?;
        let bundle = Bundle::parse_jwks(trust_domain.clone(), &jwks)
            .map_err(|e| invalid(format!("JWT bundle of {trust_domain}: {e}")))?;
        bundles.insert(bundle);
    }
    Ok(bundles)
}

fn parse_revocations(response: WatchRevocationsResponse) -> Result<RevocationList, Error> {
    if response.revoked.iter().any(|r| r.token_id.is_empty()) {
        return Err(invalid("a revoked token without an id"));
    }
    Ok(RevocationList::from_unix_seconds(
        response
            .revoked
            .into_iter()
            .map(|r| (r.token_id, r.expires_at)),
    ))
}

fn struct_to_json(value: &prost_types::Struct) -> Map<String, Value> {
    value
        .fields
        .iter()
        .map(|(name, value)| (name.clone(), prost_to_json(value)))
        .collect()
}

fn prost_to_json(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        // Whole numbers (exp, iat) read back as integers, as the token carries them.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9e15 => Value::from(*n as i64),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.iter().map(prost_to_json).collect())
        }
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use lanyard_proto::task::RevokedToken;

    use super::*;

    fn revoked(entries: &[(&str, i64)]) -> WatchRevocationsResponse {
        WatchRevocationsResponse {
            revoked: entries
                .iter()
                .map(|(token_id, expires_at)| RevokedToken {
                    token_id: (*token_id).to_owned(),
                    expires_at: *expires_at,
                })
                .collect(),
        }
    }

    #[test]
    fn a_revocation_list_is_read_whole_and_an_entry_without_an_id_refuses_it() {
        let list = parse_revocations(revoked(&[("b", 20), ("a", i64::MIN), ("b", 10)])).unwrap();
        assert_eq!(
            list.iter().map(|(jti, _)| jti).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            list.expiry("b"),
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(20))
        );
        assert!(parse_revocations(revoked(&[])).unwrap().is_empty());
        let err = parse_revocations(revoked(&[("a", 1), ("", 1)])).unwrap_err();
        assert!(matches!(err, Error::InvalidResponse { .. }), "{err:?}");
    }
}
