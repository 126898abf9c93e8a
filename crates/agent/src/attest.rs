//! Node attestation: the `AttestAgent` exchange that turns a join token or an x509pop credential
//! into the agent's SVID and the trust domain's bundle.
//!
//! Wire format (the contract with the server, `proto/lanyard/node/v1/node.proto`):
//! - `join_token`: `payload` = the token, UTF-8; no challenge.
//! - `x509pop`: `payload` = the node certificate chain, concatenated DER, leaf first; each
//!   `challenge` is the 32-byte nonce, and each `challenge_response` is the signature that
//!   [`X509PopClient::respond`] makes over it (the server knows which nonce it sent).

use std::time::SystemTime;

use lanyard_attestation::{JoinTokenClient, X509PopChallenge, X509PopClient};
use lanyard_core::{Bundle, BundleSet, TrustDomain};
use lanyard_proto::node as pb;
use pb::attest_agent_request::Step as RequestStep;
use pb::attest_agent_response::Step as ResponseStep;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::NodeAttestorConfig;
use crate::node::{ChannelKind, Connector};
use crate::storage::AgentSvid;
use crate::{AgentError, keys};

/// Most challenges one attestation answers; a server asking for more is misbehaving.
const MAX_CHALLENGES: usize = 8;

/// What a successful attestation yields.
#[derive(Debug)]
pub(crate) struct Attested {
    pub(crate) svid: AgentSvid,
    pub(crate) bundle: Bundle,
}

/// The attestor's side of the exchange, ready to send.
enum Prepared {
    JoinToken { payload: Vec<u8>, token_id: String },
    X509Pop { client: X509PopClient },
}

impl Prepared {
    fn new(config: &NodeAttestorConfig) -> Result<Self, AgentError> {
        match config {
            NodeAttestorConfig::JoinToken(token) => Ok(Self::JoinToken {
                payload: JoinTokenClient::new(token.clone())
                    .attestation_data()
                    .token
                    .as_bytes()
                    .to_vec(),
                token_id: token.id().to_string(),
            }),
            NodeAttestorConfig::X509Pop {
                cert_chain_path,
                key_path,
            } => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|e| {
                        AgentError::X509PopCredentials(format!("{}: {e}", path.display()))
                    })
                };
                let chain = read(cert_chain_path)?;
                let mut key = read(key_path)?;
                let client = X509PopClient::from_pem(&chain, &key);
                zeroize::Zeroize::zeroize(&mut key);
                Ok(Self::X509Pop {
                    client: client.map_err(|e| AgentError::X509PopCredentials(e.to_string()))?,
                })
            }
        }
    }

    fn attestor(&self) -> &'static str {
        match self {
            Self::JoinToken { .. } => lanyard_attestation::node::join_token::JOIN_TOKEN_ATTESTOR,
            Self::X509Pop { .. } => lanyard_attestation::node::x509pop::X509POP_ATTESTOR,
        }
    }

    fn payload(&self) -> Vec<u8> {
        match self {
            Self::JoinToken { payload, .. } => payload.clone(),
            Self::X509Pop { client } => client.attestation_data().chain.concat(),
        }
    }

    fn token_id(&self) -> Option<String> {
        match self {
            Self::JoinToken { token_id, .. } => Some(token_id.clone()),
            Self::X509Pop { .. } => None,
        }
    }

    fn answer(&self, challenge: &[u8]) -> Result<Vec<u8>, AgentError> {
        match self {
            Self::JoinToken { .. } => Err(AgentError::Attestation(
                "the server sent a challenge, which join_token does not have".into(),
            )),
            Self::X509Pop { client } => {
                let nonce = challenge.try_into().map_err(|_| {
                    AgentError::Attestation(format!(
                        "the x509pop challenge has {} bytes, not 32",
                        challenge.len()
                    ))
                })?;
                let response = client
                    .respond(&X509PopChallenge { nonce })
                    .map_err(|e| AgentError::Attestation(e.to_string()))?;
                Ok(response.signature)
            }
        }
    }
}

/// Whether an attestation should be retried later: the server could not be reached or failed in
/// passing. A refusal is final.
pub(crate) fn is_transient(error: &AgentError) -> bool {
    matches!(error, AgentError::Unreachable(_))
}

/// The id of the join token `config` would attest with, if it is a join token.
pub(crate) fn join_token_id(config: &NodeAttestorConfig) -> Option<String> {
    match config {
        NodeAttestorConfig::JoinToken(token) => Some(token.id().to_string()),
        NodeAttestorConfig::X509Pop { .. } => None,
    }
}

/// Runs one attestation. `kind` says how the server is authenticated (bundle or, under
/// `insecure_bootstrap`, only its SPIFFE ID).
pub(crate) async fn attest(
    connector: &Connector,
    kind: ChannelKind,
    config: &NodeAttestorConfig,
    trust_domain: &TrustDomain,
    now: impl Fn() -> SystemTime,
) -> Result<Attested, AgentError> {
    let prepared = Prepared::new(config)?;
    let fresh = keys::generate()?;
    let mut client = connector.client(connector.channel(kind)?);
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_CHALLENGES + 1);
    let params = pb::AttestAgentRequest {
        step: Some(RequestStep::Params(pb::AttestationParams {
            attestor: prepared.attestor().to_owned(),
            payload: prepared.payload(),
            csr: fresh.csr.clone(),
        })),
    };
    // The channel has room for every message this exchange sends; a send fails only once the
    // call is over, which the response stream reports.
    let _ = tx.try_send(params);
    let mut responses = client
        .attest_agent(ReceiverStream::new(rx))
        .await
        .map_err(attest_status)?
        .into_inner();
    let mut challenges = 0;
    let result = loop {
        let message = responses
            .message()
            .await
            .map_err(attest_status)?
            .ok_or_else(|| {
                AgentError::Attestation("the server ended attestation without an answer".into())
            })?;
        match message.step {
            Some(ResponseStep::Challenge(challenge)) => {
                challenges += 1;
                if challenges > MAX_CHALLENGES {
                    return Err(AgentError::Attestation("too many challenges".into()));
                }
                let answer = prepared.answer(&challenge)?;
                let _ = tx.try_send(pb::AttestAgentRequest {
                    step: Some(RequestStep::ChallengeResponse(answer)),
                });
            }
            Some(ResponseStep::Result(svid)) => break svid,
            None => {
                return Err(AgentError::InvalidResponse(
                    "an attestation message with no step".into(),
                ));
            }
        }
    };
    drop(tx);
    let svid = agent_svid_from(result, fresh.key, prepared.token_id(), trust_domain, now())?;
    Ok(svid)
}

/// Checks an `AgentSvid` message: its bundle is this trust domain's, the chain verifies against
/// it, the leaf names the SPIFFE ID given and carries `key`.
pub(crate) fn agent_svid_from(
    message: pb::AgentSvid,
    key: lanyard_workload::SvidKey,
    join_token_id: Option<String>,
    trust_domain: &TrustDomain,
    now: SystemTime,
) -> Result<Attested, AgentError> {
    let bad = |reason: String| AgentError::InvalidResponse(reason);
    let bundle = Bundle::parse_json(trust_domain.clone(), message.bundle_json.as_bytes())
        .map_err(|e| bad(format!("the bundle: {e}")))?;
    if bundle.x509_authorities().is_empty() {
        return Err(bad("the bundle holds no X.509 authority".into()));
    }
    let svid = AgentSvid::new(message.cert_chain, key, join_token_id)?;
    if svid.spiffe_id.as_str() != message.spiffe_id {
        return Err(bad(format!(
            "the agent SVID is for {}, the message says {}",
            svid.spiffe_id, message.spiffe_id
        )));
    }
    if !svid.spiffe_id.is_member_of(trust_domain) {
        return Err(bad(format!(
            "the agent SVID {} is not in trust domain {trust_domain}",
            svid.spiffe_id
        )));
    }
    let bundles: BundleSet = std::iter::once(bundle.clone()).collect();
    lanyard_core::verify_x509_svid(&svid.chain, &bundles, now)
        .map_err(|e| bad(format!("the agent SVID does not verify: {e}")))?;
    Ok(Attested { svid, bundle })
}

/// Sorts a failed call into "retry later" and "refused".
fn attest_status(status: tonic::Status) -> AgentError {
    use tonic::Code;
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Internal => AgentError::Unreachable(status_detail(&status)),
        code => AgentError::AttestationRefused {
            code,
            message: status.message().to_owned(),
        },
    }
}

/// A status's message with the chain of causes behind it (a transport error's cause says, for
/// example, which certificate check failed).
pub(crate) fn status_detail(status: &tonic::Status) -> String {
    let mut detail = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}
