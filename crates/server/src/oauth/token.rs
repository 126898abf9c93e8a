//! The token and introspection endpoints.
//!
//! Three ways to a token, each decided by the Cedar policies (principal = the workload,
//! resource = `Tool::"<resource URI>"`, one action per scope):
//! - **jwt-bearer** (RFC 7523, the MCP workload identity federation extension): `assertion` is a
//!   JWT-SVID of this trust domain whose single `aud` is the issuer or the token endpoint; the
//!   same assertion serves one token per resource (`jti` replay refused);
//! - **client_credentials** with a `jwt-spiffe` client assertion (draft-ietf-oauth-spiffe-client-
//!   auth): its single `aud` must be the issuer;
//! - **token exchange** (RFC 8693) of a live task token, by the workload that holds it
//!   (authenticated as above): the resource is the task's tool, the scopes a subset of its
//!   operations, the expiry no later than the task's, and the token is a child of the task, so
//!   ending the task revokes it.
//!
//! Errors are RFC 6749 §5.2 JSON; which code follows the RFC of each grant (RFC 7523 §3.1:
//! `invalid_grant`; RFC 8693 §2.2.2: `invalid_request` for a bad subject token; RFC 8707:
//! `invalid_target`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use lanyard_ca::AccessTokenRequest;
use lanyard_core::{
    BundleSet, RegistrationEntry, SpiffeId, VerifiedJwtSvid, verify_jwt, verify_jwt_svid,
};
use lanyard_policy::GrantRequest;
use lanyard_store::{EntryFilter, PageRequest, TaskRecord};
use serde_json::{Map, Value, json};

use super::form::Form;
use super::{OAuth, json_response};
use crate::delegation::{live_task_of, unverified_audience};
use crate::identity::Principal;
use crate::tasks::{CLAIM, MAX_TASK_TTL, decision_details, random_id, refusal_message, sha256_hex};
use crate::{ServerState, audit, unix_seconds};

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const CLIENT_CREDENTIALS: &str = "client_credentials";
const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// An assertion may not live longer than this: RFC 7523 §3 lets a server refuse an `exp`
/// "unreasonably far in the future", and a JWT-SVID minted for a workload lives 5 minutes.
const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest resource URI (as a tool audience).
const MAX_RESOURCE_BYTES: usize = lanyard_policy::MAX_AUDIENCE_BYTES;

/// An RFC 6749 §5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) description: String,
    /// Already in the audit log (a refusal by the policies, with its decision).
    pub(crate) recorded: bool,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
            recorded: false,
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub(crate) fn too_large(max: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::invalid_request(format!("the body is larger than {max} bytes"))
        }
    }

    /// RFC 6749 §5.2: a client that failed to authenticate may get 401.
    fn invalid_client(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            ..Self::new("invalid_client", description)
        }
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    fn invalid_target(description: impl Into<String>) -> Self {
        Self::new("invalid_target", description)
    }

    fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new("invalid_scope", description)
    }

    fn server_error(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            ..Self::new("server_error", description)
        }
    }

    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        let mut response = json_response(
            self.status,
            &json!({"error": self.code, "error_description": self.description}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// `POST /oauth/token`.
pub(crate) async fn token(
    state: &ServerState,
    oauth: &OAuth,
    form: &Form,
) -> Result<Value, OAuthError> {
    match form.get("grant_type").unwrap_or_default() {
        JWT_BEARER => jwt_bearer(state, oauth, form).await,
        CLIENT_CREDENTIALS => client_credentials(state, oauth, form).await,
        TOKEN_EXCHANGE => token_exchange(state, oauth, form).await,
        "" => Err(OAuthError::invalid_request("grant_type is required")),
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!(
                "grant_type {:?} is not supported: use {JWT_BEARER}, {CLIENT_CREDENTIALS} or {TOKEN_EXCHANGE}",
                crate::limits::clip(other, 128)
            ),
        )),
    }
}

/// Records a refused token request (`oauth.refused`), at the rate the node API's refusals are
/// recorded; a refusal by the policies is recorded where it is decided (`oauth.denied`).
pub(crate) async fn record_refusal(
    state: &ServerState,
    grant_type: &str,
    error: &OAuthError,
    peer: SocketAddr,
) {
    if error.recorded {
        return;
    }
    if let crate::limits::Admit::Record { suppressed } = state.refusals.admit(Some(peer.ip())) {
        state
            .record_as(
                "oauth.refused",
                &format!("peer:{peer}"),
                "oauth",
                json!({
                    "grant_type": crate::limits::clip(grant_type, 128),
                    "error": error.code,
                    "reason": error.description,
                    "suppressed_before": suppressed,
                }),
            )
            .await;
    }
}

/// What a token is asked for, once the caller is known.
struct Grant {
    grant_type: &'static str,
    /// Who the token is for (the policies' principal).
    workload: SpiffeId,
    /// The authenticated client (`client_id`): the workload itself.
    client: SpiffeId,
    resource: String,
    scopes: Vec<String>,
    /// For an exchange: the task and the verified claims of its token.
    parent: Option<(TaskRecord, Map<String, Value>)>,
    /// The error code of a refusal by the policies.
    denied: fn(String) -> OAuthError,
}

async fn jwt_bearer(state: &ServerState, oauth: &OAuth, form: &Form) -> Result<Value, OAuthError> {
    let assertion = form.required("assertion")?;
    let client = authenticate(state, oauth, form)?;
    let now = state.clock.now();
    let svid = verify_svid(
        state,
        assertion,
        &[&oauth.issuer, &oauth.token_endpoint()],
        now,
    )
    .map_err(|e| OAuthError::invalid_grant(format!("the assertion is not valid: {e}")))?;
    if client.as_ref().is_some_and(|c| c != svid.spiffe_id()) {
        return Err(OAuthError::invalid_grant(
            "the client assertion and the grant assertion name different workloads",
        ));
    }
    let resource = resource(form)?;
    let scopes = scopes(form)?.ok_or_else(|| OAuthError::invalid_scope("scope is required"))?;
    // The same assertion serves one token per resource.
    let jti = svid.claims().get("jti").and_then(Value::as_str);
    let expires = svid.expiry() + lanyard_core::jwt::JWT_LEEWAY;
    if jti.is_some_and(|jti| !oauth.first_use(jti, &resource, expires, now)) {
        return Err(OAuthError::invalid_grant(
            "this assertion was used already for this resource (jti replay)",
        ));
    }
    let workload = svid.spiffe_id().clone();
    issue(
        state,
        oauth,
        Grant {
            grant_type: JWT_BEARER,
            client: workload.clone(),
            workload,
            resource,
            scopes,
            parent: None,
            denied: OAuthError::invalid_grant,
        },
    )
    .await
}

async fn client_credentials(
    state: &ServerState,
    oauth: &OAuth,
    form: &Form,
) -> Result<Value, OAuthError> {
    let client = authenticate(state, oauth, form)?.ok_or_else(|| {
        OAuthError::invalid_client(format!(
            "authenticate with client_assertion_type={JWT_SPIFFE} and a JWT-SVID for {}",
            oauth.issuer
        ))
    })?;
    let resource = resource(form)?;
    let scopes = scopes(form)?.ok_or_else(|| OAuthError::invalid_scope("scope is required"))?;
    issue(
        state,
        oauth,
        Grant {
            grant_type: CLIENT_CREDENTIALS,
            workload: client.clone(),
            client,
            resource,
            scopes,
            parent: None,
            denied: OAuthError::invalid_grant,
        },
    )
    .await
}

async fn token_exchange(
    state: &ServerState,
    oauth: &OAuth,
    form: &Form,
) -> Result<Value, OAuthError> {
    let client = authenticate(state, oauth, form)?.ok_or_else(|| {
        OAuthError::invalid_client(format!(
            "a token exchange is made by the workload holding the task: authenticate with client_assertion_type={JWT_SPIFFE}"
        ))
    })?;
    let subject = form.required("subject_token")?;
    match form.required("subject_token_type")? {
        TOKEN_TYPE_JWT => {}
        other => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type {:?} is not supported: a task token is {TOKEN_TYPE_JWT}",
                crate::limits::clip(other, 128)
            )));
        }
    }
    if let Some(other) = form
        .get("requested_token_type")
        .filter(|t| *t != TOKEN_TYPE_ACCESS_TOKEN)
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type {:?} is not supported: lanyard issues {TOKEN_TYPE_ACCESS_TOKEN}",
            crate::limits::clip(other, 128)
        )));
    }
    if form.get("actor_token").is_some() || form.get("actor_token_type").is_some() {
        return Err(OAuthError::invalid_request(
            "actor_token is not supported: the authenticated client is the actor",
        ));
    }
    let (task, claims) = live_task_of(state, subject, "subject", state.clock.now())
        .await
        .map_err(OAuthError::invalid_request)?;
    if task.spiffe_id != client {
        return Err(OAuthError::invalid_request(
            "the subject token belongs to another workload than the client",
        ));
    }
    let resource = match form.get("resource") {
        None => task.audience.clone(),
        Some(_) => resource(form)?,
    };
    if resource != task.audience {
        return Err(OAuthError::invalid_target(format!(
            "the task is for {:?}, not {:?}",
            task.audience,
            crate::limits::clip(&resource, 256)
        )));
    }
    let scopes = scopes(form)?.unwrap_or_else(|| task.operations.clone());
    if let Some(scope) = scopes.iter().find(|s| !task.operations.contains(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "scope {scope:?} was not granted to the task"
        )));
    }
    issue(
        state,
        oauth,
        Grant {
            grant_type: TOKEN_EXCHANGE,
            workload: client.clone(),
            client,
            resource,
            scopes,
            parent: Some((task, claims)),
            denied: OAuthError::invalid_request,
        },
    )
    .await
}

/// Decides `grant` with the policies, mints the access token, and stores it as a task with its
/// record before returning it.
async fn issue(state: &ServerState, oauth: &OAuth, grant: Grant) -> Result<Value, OAuthError> {
    let now = state.clock.now();
    let entry = match &grant.parent {
        Some((task, _)) => state.index.get(&task.entry_id),
        None => None,
    };
    let entry = match entry {
        Some(entry) => entry,
        None => entry_for(state, &grant.workload).await?.ok_or_else(|| {
            (grant.denied)(format!("no registration entry holds {}", grant.workload))
        })?,
    };
    let parent_claim = grant
        .parent
        .as_ref()
        .and_then(|(_, claims)| claims.get(CLAIM))
        .cloned()
        .unwrap_or(Value::Null);
    let principal = parent_claim.get("obo").and_then(Principal::from_claim);
    let chain = parent_claim
        .get("chain")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let hop_sub = |hop: Option<&Value>| {
        hop.and_then(|h| h.get("sub"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let policies = state.policies.current();
    let (on_behalf_of, on_behalf_of_verified, on_behalf_of_issuer) =
        Principal::grant_context(principal.as_ref());
    let request = GrantRequest {
        principal: grant.workload.clone(),
        selectors: entry.selectors().clone(),
        audience: grant.resource.clone(),
        operations: grant.scopes.clone(),
        ttl_seconds: oauth.access_token_ttl.as_secs(),
        purpose: String::new(),
        on_behalf_of,
        on_behalf_of_verified,
        on_behalf_of_issuer,
        delegation_depth: grant.parent.as_ref().map_or(0, |(t, _)| t.depth),
        root_principal: hop_sub(chain.first()),
        parent_workload: hop_sub(chain.last()),
        now,
    };
    let decision = policies
        .bundle
        .decide(&request)
        .map_err(|e| OAuthError::invalid_scope(format!("the request cannot be decided: {e}")))?;
    if !decision.allowed() {
        let message = refusal_message(&grant.resource, &decision);
        state
            .record_as(
                "oauth.denied",
                grant.workload.as_ref(),
                &crate::limits::clip(&grant.resource, crate::limits::MAX_LOGGED_TEXT),
                json!({
                    "grant_type": grant.grant_type,
                    "scopes": grant.scopes,
                    "decision": decision_details(&decision),
                    "reason": message,
                }),
            )
            .await;
        return Err(OAuthError {
            recorded: true,
            ..(grant.denied)(message)
        });
    }
    let limit = policies.bundle.ttl_limit(&decision).unwrap_or(u64::MAX);
    let mut ttl = oauth
        .access_token_ttl
        .min(MAX_TASK_TTL)
        .min(Duration::from_secs(limit));
    if let Some((task, _)) = &grant.parent {
        ttl = ttl.min(task.expires_at.duration_since(now).unwrap_or_default());
    }
    if ttl.is_zero() {
        return Err((grant.denied)("the task expires now".to_owned()));
    }
    let task_id = random_id();
    let jti = random_id();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(oauth.issuer));
    claims.insert("client_id".into(), json!(grant.client.to_string()));
    claims.insert("scope".into(), json!(grant.scopes.join(" ")));
    let mut lanyard = json!({ "txn": task_id });
    if let Some((parent, parent_claims)) = &grant.parent {
        lanyard["parent"] = json!(parent.id);
        let outer = parent_claims.get("act").cloned();
        // RFC 8693 §4.1: when the token is for a person, the workload is the current actor.
        let act = match (&principal, outer) {
            (Some(_), inner) => {
                let mut act = json!({ "sub": grant.workload.to_string() });
                if let Some(inner) = inner {
                    act["act"] = inner;
                }
                Some(act)
            }
            (None, inner) => inner,
        };
        if let Some(act) = act {
            claims.insert("act".into(), act);
        }
        if let Some(principal) = &principal {
            lanyard["obo"] = principal.claim();
        }
    }
    claims.insert(CLAIM.into(), lanyard);
    let subject = principal
        .as_ref()
        .map_or_else(|| grant.workload.to_string(), |p| p.name.clone());
    let token = state
        .authority
        .ca
        .mint_access_token(&AccessTokenRequest {
            subject: subject.clone(),
            audience: grant.resource.clone(),
            ttl,
            jti: jti.clone(),
            extra_claims: claims,
        })
        .map_err(|e| OAuthError::server_error(format!("the CA cannot sign: {e}")))?;
    let task = TaskRecord {
        id: task_id.clone(),
        spiffe_id: grant.workload.clone(),
        entry_id: entry.id().clone(),
        agent_id: entry.parent_id().clone(),
        audience: grant.resource.clone(),
        operations: grant.scopes.clone(),
        purpose: String::new(),
        on_behalf_of: request.on_behalf_of.clone(),
        policy_ids: decision.policy_ids(),
        token_id: jti.clone(),
        issued_at: token.issued_at,
        expires_at: token.expires_at,
        ended_at: None,
        parent_id: grant.parent.as_ref().map(|(t, _)| t.id.clone()),
        depth: grant.parent.as_ref().map_or(0, |(t, _)| t.depth),
    };
    let record = audit::draft(
        "oauth.granted",
        grant.workload.as_ref(),
        &task_id,
        json!({
            "grant_type": grant.grant_type,
            "client_id": grant.client.to_string(),
            "sub": subject,
            "resource": grant.resource,
            "scopes": grant.scopes,
            "parent_id": task.parent_id,
            "policy_ids": decision.policy_ids(),
            "jti": jti,
            "token_sha256": sha256_hex(token.token.as_bytes()),
            "issued_at": unix_seconds(token.issued_at),
            "expires_at": unix_seconds(token.expires_at),
        }),
        now,
    )
    .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    state.store.create_task(&task, &record).await.map_err(|e| {
        tracing::error!(error = %e, "cannot store an access token's task");
        OAuthError::server_error("the token cannot be recorded now; retry later")
    })?;
    state.metrics.signed("access_token");
    let expires_in = token
        .expires_at
        .duration_since(token.issued_at)
        .unwrap_or_default()
        .as_secs();
    let mut body = json!({
        "access_token": token.token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": grant.scopes.join(" "),
    });
    if grant.parent.is_some() {
        body["issued_token_type"] = json!(TOKEN_TYPE_ACCESS_TOKEN);
    }
    Ok(body)
}

/// `POST /oauth/introspect` (RFC 7662), for an authenticated workload: the token's claims if it
/// is one of this server's access tokens, unexpired, whose task has not ended; otherwise only
/// `{"active": false}`.
pub(crate) async fn introspect(
    state: &ServerState,
    oauth: &OAuth,
    form: &Form,
) -> Result<Value, OAuthError> {
    authenticate(state, oauth, form)?.ok_or_else(|| {
        OAuthError::invalid_client(format!(
            "introspection needs client authentication: client_assertion_type={JWT_SPIFFE}"
        ))
    })?;
    let token = form.required("token")?;
    let Some(claims) = active_access_token(state, oauth, token).await else {
        return Ok(json!({ "active": false }));
    };
    let mut body = json!({ "active": true, "token_type": "Bearer" });
    for name in [
        "iss",
        "sub",
        "aud",
        "client_id",
        "scope",
        "exp",
        "iat",
        "jti",
        "act",
    ] {
        if let Some(value) = claims.get(name) {
            body[name] = value.clone();
        }
    }
    Ok(body)
}

async fn active_access_token(
    state: &ServerState,
    oauth: &OAuth,
    token: &str,
) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .ok()?,
    )
    .ok()?;
    if header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
        return None;
    }
    let now = state.clock.now();
    let audience = unverified_audience(token)?;
    let verified = verify_jwt(token, &audience, &state.authority.trust_bundle(), now).ok()?;
    let claims = verified.claims();
    if claims.get("iss").and_then(Value::as_str) != Some(oauth.issuer.as_str()) {
        return None;
    }
    let task_id = claims.get(CLAIM)?.get("txn")?.as_str()?;
    let task = state.store.get_task(task_id).await.ok()??;
    let live = task.ended_at.is_none()
        && task.expires_at > now
        && claims.get("jti").and_then(Value::as_str) == Some(task.token_id.as_str());
    live.then(|| claims.clone())
}

/// The client, if the request authenticates one with a `jwt-spiffe` assertion: a JWT-SVID of
/// this trust domain whose only `aud` is the issuer. A `client_id`, if sent, must be its SPIFFE
/// ID.
fn authenticate(
    state: &ServerState,
    oauth: &OAuth,
    form: &Form,
) -> Result<Option<SpiffeId>, OAuthError> {
    let id = match (
        form.get("client_assertion_type"),
        form.get("client_assertion"),
    ) {
        (None, None) => None,
        (Some(JWT_SPIFFE), Some(assertion)) => {
            let svid = verify_svid(state, assertion, &[&oauth.issuer], state.clock.now()).map_err(
                |e| OAuthError::invalid_client(format!("the client assertion is not valid: {e}")),
            )?;
            Some(svid.spiffe_id().clone())
        }
        (Some(JWT_SPIFFE), None) => {
            return Err(OAuthError::invalid_client("client_assertion is missing"));
        }
        (None, Some(_)) => {
            return Err(OAuthError::invalid_client(
                "client_assertion_type is missing",
            ));
        }
        (Some(other), _) => {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type {:?} is not supported: use {JWT_SPIFFE}",
                crate::limits::clip(other, 128)
            )));
        }
    };
    match (form.get("client_id"), &id) {
        (Some(client_id), Some(id)) if client_id != id.as_str() => Err(OAuthError::invalid_client(
            "client_id is not the client assertion's SPIFFE ID",
        )),
        (Some(_), None) => Err(OAuthError::invalid_client(
            "a client_id alone does not authenticate: send a JWT-SVID client assertion",
        )),
        _ => Ok(id),
    }
}

/// A JWT-SVID of this trust domain whose single `aud` is one of `audiences`, not expiring
/// unreasonably late.
fn verify_svid(
    state: &ServerState,
    token: &str,
    audiences: &[&str],
    now: SystemTime,
) -> Result<VerifiedJwtSvid, String> {
    let mut bundles = BundleSet::new();
    bundles.insert(state.authority.trust_bundle());
    let audience = unverified_audience(token).unwrap_or_default();
    let expected = audiences
        .iter()
        .find(|a| **a == audience)
        .ok_or_else(|| format!("its aud must be exactly one of {audiences:?}"))?;
    let svid = verify_jwt_svid(token, expected, &bundles, now).map_err(|e| e.to_string())?;
    if svid.audience().len() != 1 {
        return Err(format!("its aud must be exactly one of {audiences:?}"));
    }
    if svid.expiry() > now + MAX_ASSERTION_LIFETIME {
        return Err(format!(
            "it expires more than {} s from now",
            MAX_ASSERTION_LIFETIME.as_secs()
        ));
    }
    Ok(svid)
}

/// An entry through which `workload` holds its SPIFFE ID (the first, if several).
async fn entry_for(
    state: &ServerState,
    workload: &SpiffeId,
) -> Result<Option<RegistrationEntry>, OAuthError> {
    let filter = EntryFilter {
        spiffe_id: Some(workload.clone()),
        ..EntryFilter::default()
    };
    let page = state
        .store
        .list_entries(
            &filter,
            &PageRequest {
                token: None,
                size: 1,
            },
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read entries");
            OAuthError::server_error("the datastore cannot be read now; retry later")
        })?;
    Ok(page.items.into_iter().next())
}

/// RFC 8707 §2: `resource` is an absolute URI without a fragment.
fn resource(form: &Form) -> Result<String, OAuthError> {
    let resource = form.get("resource").ok_or_else(|| {
        OAuthError::invalid_target("resource is required: the tool server's canonical URI")
    })?;
    check_resource(resource).map_err(OAuthError::invalid_target)?;
    Ok(resource.to_owned())
}

pub(crate) fn check_resource(resource: &str) -> Result<(), String> {
    if resource.len() > MAX_RESOURCE_BYTES {
        return Err(format!(
            "resource is longer than {MAX_RESOURCE_BYTES} bytes"
        ));
    }
    let scheme_end = resource
        .find("://")
        .ok_or("resource must be an absolute URI such as https://tool.example/mcp")?;
    let scheme = &resource[..scheme_end];
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        || resource.len() == scheme_end + 3
    {
        return Err("resource must be an absolute URI such as https://tool.example/mcp".into());
    }
    if resource.contains('#') {
        return Err("resource must not have a fragment".into());
    }
    if resource
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("resource must not contain spaces or control characters".into());
    }
    Ok(())
}

/// The requested scopes (space-separated, RFC 6749 §3.3), if any; a repeated one is refused.
fn scopes(form: &Form) -> Result<Option<Vec<String>>, OAuthError> {
    let Some(scope) = form.get("scope") else {
        return Ok(None);
    };
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if scopes.iter().any(|have| have == s) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {:?} is repeated",
                crate::limits::clip(s, 128)
            )));
        }
        scopes.push(s.to_owned());
    }
    Ok((!scopes.is_empty()).then_some(scopes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn resources_are_absolute_uris_without_fragments() {
        for good in [
            "https://tickets.example/mcp",
            "https://127.0.0.1:9000/mcp",
            "urn+x://thing",
        ] {
            assert!(check_resource(good).is_ok(), "{good}");
        }
        for bad in [
            "tickets",
            "mcp.example.com",
            "https://",
            "://x",
            "1http://x",
            "https://a/b#frag",
            "https://a/ b",
            "https://a/\u{7}",
        ] {
            assert!(check_resource(bad).is_err(), "{bad}");
        }
        assert!(check_resource(&format!("https://a/{}", "x".repeat(3000))).is_err());
    }

    #[test]
    fn scopes_split_on_spaces_and_refuse_repeats() {
        let form = Form::parse(b"scope=tools%3Aread+tools%3Awrite").unwrap();
        assert_eq!(
            scopes(&form).unwrap(),
            Some(vec!["tools:read".to_owned(), "tools:write".to_owned()])
        );
        assert_eq!(scopes(&Form::parse(b"").unwrap()).unwrap(), None);
        assert_eq!(scopes(&Form::parse(b"scope=+++").unwrap()).unwrap(), None);
        let e = scopes(&Form::parse(b"scope=a+a").unwrap()).unwrap_err();
        assert_eq!(e.code, "invalid_scope");
    }

    #[test]
    fn errors_are_rfc_6749_json() {
        let e = OAuthError::invalid_client("no");
        let response = e.response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response
                .headers()
                .contains_key(hyper::header::WWW_AUTHENTICATE)
        );
        assert_eq!(
            OAuthError::too_large(10).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            OAuthError::invalid_grant("x").status,
            StatusCode::BAD_REQUEST
        );
    }
}
