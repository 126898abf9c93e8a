//! lanyard as an OAuth 2.1 authorization server, for tool servers that are OAuth resource servers
//! (MCP servers above all): they accept only RFC 9068 access tokens issued for their own URI, so
//! a workload trades its SPIFFE credentials for one here.
//!
//! An HTTPS listener of its own (a configured certificate; OAuth clients check web PKI names, not
//! SPIFFE IDs) serves:
//! - `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata;
//! - `GET /oauth/jwks.json`: the trust domain's JWT keys as a plain RFC 7517 JWKS (`use: sig`);
//! - `POST /oauth/token`: the jwt-bearer grant with a JWT-SVID assertion (the MCP workload
//!   identity federation extension), `client_credentials` with a JWT-SVID client assertion
//!   (`jwt-spiffe`, draft-ietf-oauth-spiffe-client-auth), and RFC 8693 exchange of a task token
//!   (see [`token`]);
//! - `POST /oauth/introspect`: RFC 7662, for authenticated workloads.
//!
//! Every token is decided by the same Cedar policies as task credentials (resource = the tool's
//! URI, actions = the scopes), stored as a task (so ending or revoking it, or its parent task,
//! revokes the token) and recorded in the audit log; every refusal is recorded too.

mod form;
mod token;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lanyard_core::JwtKeyType;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::OAuthConfig;
use crate::{ServerError, ServerState};

pub(crate) use token::OAuthError;

/// Largest request body: a form with a few tokens in it.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most concurrent connections; one over it is closed at once.
const MAX_CONNECTIONS: usize = 4096;
/// Longest a connection may take to finish its TLS handshake, and then to send each request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most assertions remembered against replay; beyond it, expired ones are forgotten first, and
/// a full cache of live ones refuses new assertions rather than forget one.
const MAX_REMEMBERED_ASSERTIONS: usize = 1_000_000;

pub(crate) const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
pub(crate) const TOKEN_PATH: &str = "/oauth/token";
pub(crate) const JWKS_PATH: &str = "/oauth/jwks.json";
pub(crate) const INTROSPECT_PATH: &str = "/oauth/introspect";

/// The authorization server's settings and state, once its listener is bound.
#[derive(Debug)]
pub(crate) struct OAuth {
    /// The issuer identifier: `https://host[:port]`, no trailing slash.
    pub(crate) issuer: String,
    pub(crate) access_token_ttl: Duration,
    /// Assertions already used, by `(jti, resource)`, until they expire.
    used: Mutex<HashMap<(String, String), SystemTime>>,
}

/// The bound listener and its TLS settings, handed to [`serve`].
pub(crate) struct Listener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl OAuth {
    pub(crate) fn token_endpoint(&self) -> String {
        format!("{}{TOKEN_PATH}", self.issuer)
    }

    /// The RFC 8414 document. There is no authorization endpoint (machine grants only), so
    /// `response_types_supported`, required by RFC 8414 §2 but empty here, is left out as §3.2
    /// requires of empty members.
    pub(crate) fn metadata(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint(),
            "jwks_uri": format!("{}{JWKS_PATH}", self.issuer),
            "introspection_endpoint": format!("{}{INTROSPECT_PATH}", self.issuer),
            "grant_types_supported": [
                token::JWT_BEARER,
                token::TOKEN_EXCHANGE,
                token::CLIENT_CREDENTIALS,
            ],
            "token_endpoint_auth_methods_supported": ["spiffe_jwt", "none"],
            "introspection_endpoint_auth_methods_supported": ["spiffe_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "RS256"],
        })
    }

    /// Marks the assertion `(jti, resource)` used until `expires_at`; false if it was already.
    fn first_use(
        &self,
        jti: &str,
        resource: &str,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() >= MAX_REMEMBERED_ASSERTIONS {
            used.retain(|_, exp| *exp > now);
            if used.len() >= MAX_REMEMBERED_ASSERTIONS {
                return false;
            }
        }
        let key = (jti.to_owned(), resource.to_owned());
        match used.get(&key) {
            Some(exp) if *exp > now => false,
            _ => {
                used.insert(key, expires_at);
                true
            }
        }
    }
}

/// Binds the listener and works out the issuer.
pub(crate) async fn bind(config: &OAuthConfig) -> Result<(OAuth, Listener), ServerError> {
    let tls = tls_acceptor(config).map_err(ServerError::OAuth)?;
    let tcp = TcpListener::bind(config.bind)
        .await
        .map_err(|e| ServerError::OAuth(format!("cannot bind {}: {e}", config.bind)))?;
    let bound = tcp
        .local_addr()
        .map_err(|e| ServerError::OAuth(e.to_string()))?;
    let issuer = match &config.issuer {
        Some(issuer) => issuer.trim_end_matches('/').to_owned(),
        None => format!("https://{bound}"),
    };
    check_issuer(&issuer).map_err(ServerError::OAuth)?;
    tracing::info!(addr = %bound, %issuer, "OAuth authorization server listening");
    let oauth = OAuth {
        issuer,
        access_token_ttl: config.access_token_ttl,
        used: Mutex::new(HashMap::new()),
    };
    Ok((oauth, Listener { tcp, tls }))
}

/// RFC 8414 §2: an `https` URL with no query or fragment. lanyard serves its metadata at the
/// root, so the issuer has no path either.
fn check_issuer(issuer: &str) -> Result<(), String> {
    let rest = issuer
        .strip_prefix("https://")
        .ok_or_else(|| format!("oauth.issuer {issuer:?} must be an https URL"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#']) {
        return Err(format!(
            "oauth.issuer {issuer:?} must be https://host[:port], with no path, query or fragment"
        ));
    }
    Ok(())
}

fn tls_acceptor(config: &OAuthConfig) -> Result<TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(config.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("oauth.cert_file: {e}"))?;
    if chain.is_empty() {
        return Err("oauth.cert_file holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes())
        .map_err(|e| format!("oauth.key_file: {e}"))?;
    let mut tls =
        tokio_rustls::rustls::ServerConfig::builder_with_provider(lanyard_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("oauth certificate and key: {e}"))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// Serves the endpoints until `shutdown` turns true.
pub(crate) async fn serve(
    listener: Listener,
    state: Arc<ServerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "OAuth endpoint: accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (state, tls, stop) = (state.clone(), listener.tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, request, peer).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut stop = stop;
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::select! {
                // A client that hangs up mid-request is not the server's problem.
                _ = connection.as_mut() => {}
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
                }
            }
        });
    }
}

async fn respond(
    state: &ServerState,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let Some(oauth) = &state.oauth else {
        return json_response(StatusCode::NOT_FOUND, &json!({}));
    };
    let path = request.uri().path().to_owned();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, METADATA_PATH) => json_response(StatusCode::OK, &oauth.metadata()),
        (Method::GET, JWKS_PATH) => json_response(StatusCode::OK, &jwks(state)),
        (Method::POST, TOKEN_PATH) => {
            let form = form::read(request, MAX_BODY_BYTES).await;
            let result = match &form {
                Ok(form) => token::token(state, oauth, form).await,
                Err(e) => Err(e.clone()),
            };
            if let Err(e) = &result {
                let grant_type = form.as_ref().ok().and_then(|f| f.get("grant_type"));
                token::record_refusal(state, grant_type.unwrap_or_default(), e, peer).await;
            }
            reply(result)
        }
        (Method::POST, INTROSPECT_PATH) => {
            let result = match form::read(request, MAX_BODY_BYTES).await {
                Ok(form) => token::introspect(state, oauth, &form).await,
                Err(e) => Err(e),
            };
            reply(result)
        }
        (_, METADATA_PATH | JWKS_PATH) => method_not_allowed("GET"),
        (_, TOKEN_PATH | INTROSPECT_PATH) => method_not_allowed("POST"),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "error_description": format!("try {METADATA_PATH}")}),
        ),
    }
}

/// The trust domain's JWT keys, which sign access tokens, as RFC 7517 JWKs: the bundle's keys
/// with `use: sig` and their `alg` (not the SPIFFE bundle's `use: jwt-svid`, which OAuth
/// libraries refuse).
fn jwks(state: &ServerState) -> Value {
    let bundle = state.authority.trust_bundle();
    let mut doc: Value = serde_json::from_str(&bundle.jwks_json()).unwrap_or(json!({"keys": []}));
    if let Some(keys) = doc["keys"].as_array_mut() {
        for (key, authority) in keys.iter_mut().zip(bundle.jwt_authorities()) {
            key["use"] = json!("sig");
            key["alg"] = json!(match authority.key_type() {
                JwtKeyType::EcP256 => "ES256",
                JwtKeyType::EcP384 => "ES384",
                JwtKeyType::Rsa => "RS256",
                _ => "ES512",
            });
        }
    }
    doc
}

/// A token endpoint's answer: never cached (RFC 6749 §5.1).
fn reply(result: Result<Value, OAuthError>) -> Response<Full<Bytes>> {
    match result {
        Ok(body) => no_store(json_response(StatusCode::OK, &body)),
        Err(e) => no_store(e.response()),
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// RFC 6749 §5.1: responses with tokens (and their errors) are not cached.
fn no_store(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        hyper::header::PRAGMA,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    response
}

fn method_not_allowed(allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "invalid_request", "error_description": format!("use {allowed}")}),
    );
    response.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allowed),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn issuers_are_https_origins() {
        assert!(check_issuer("https://lanyard.example.com").is_ok());
        assert!(check_issuer("https://127.0.0.1:8443").is_ok());
        for bad in [
            "http://lanyard.example.com",
            "https://",
            "https://a/b",
            "https://a?x",
            "https://a#f",
            "lanyard",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_assertion_is_used_once_per_resource_until_it_expires() {
        let oauth = OAuth {
            issuer: "https://a".into(),
            access_token_ttl: Duration::from_secs(60),
            used: Mutex::new(HashMap::new()),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let exp = now + Duration::from_secs(60);
        assert!(oauth.first_use("j1", "https://r1", exp, now));
        assert!(!oauth.first_use("j1", "https://r1", exp, now));
        assert!(oauth.first_use("j1", "https://r2", exp, now));
        // Once expired, the assertion is refused by its verification anyway: forgetting it is safe.
        assert!(oauth.first_use("j1", "https://r1", exp, exp));
    }
}
