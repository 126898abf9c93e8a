//! A simulated agent: it speaks the node API to a real server the way an agent does (TLS that
//! requires the server's SPIFFE ID, attestation, then mTLS with its agent SVID). Tests use it to
//! probe the server's checks; load generators use it to play many agents from one process.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use lanyard_core::{Bundle, BundleSet, SpiffeId, TrustDomain};
use lanyard_proto::node::{self as pb, node_client::NodeClient};
use lanyard_tls::{Authorizer, BundleHandle, SpiffeServerVerifier, SvidHandle};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// A fresh P-256 key and a CSR for it.
pub fn key_and_csr() -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// Connects to the node API at `addr`, trusting `bundle` and requiring the server's ID;
/// presents `svid` as the client certificate if given.
pub async fn connect(
    addr: SocketAddr,
    bundle: &Bundle,
    svid: Option<SvidHandle>,
) -> anyhow::Result<NodeClient<Channel>> {
    let td = bundle.trust_domain().clone();
    let server_id = td.id_from_segments(&["lanyard", "server"])?;
    let bundles: BundleSet = [bundle.clone()].into_iter().collect();
    let verifier =
        SpiffeServerVerifier::new(BundleHandle::new(bundles), Authorizer::Exact(server_id));
    let config = Arc::new(lanyard_tls::client_config(verifier, svid)?);
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(tower::service_fn(move |_| {
            let config = config.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect("localhost".try_into().map_err(std::io::Error::other)?, tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(NodeClient::new(channel))
}

/// An attested simulated agent.
#[derive(Debug, Clone)]
pub struct SimAgent {
    pub addr: SocketAddr,
    pub bundle: Bundle,
    pub spiffe_id: SpiffeId,
    pub svid: SvidHandle,
    pub chain: Vec<Vec<u8>>,
}

impl SimAgent {
    /// Attests with a join token.
    pub async fn attest(
        addr: SocketAddr,
        bundle: &Bundle,
        token: &str,
    ) -> Result<Self, tonic::Status> {
        let (key, csr) = key_and_csr().map_err(|e| tonic::Status::internal(e.to_string()))?;
        let svid = attest_join_token(addr, bundle, token, csr).await?;
        Self::from_svid(addr, bundle, svid, &key)
    }

    /// The agent holding `svid` (from attestation or renewal) and its PKCS#8 `key`.
    pub fn from_svid(
        addr: SocketAddr,
        bundle: &Bundle,
        svid: pb::AgentSvid,
        key: &[u8],
    ) -> Result<Self, tonic::Status> {
        let spiffe_id: SpiffeId = svid
            .spiffe_id
            .parse()
            .map_err(|e: lanyard_core::IdError| tonic::Status::internal(e.to_string()))?;
        let handle = SvidHandle::new(&svid.cert_chain, key)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(Self {
            addr,
            bundle: bundle.clone(),
            spiffe_id,
            svid: handle,
            chain: svid.cert_chain,
        })
    }

    /// A node API client authenticated with this agent's SVID.
    pub async fn client(&self) -> anyhow::Result<NodeClient<Channel>> {
        connect(self.addr, &self.bundle, Some(self.svid.clone())).await
    }
}

/// Runs AttestAgent with a join token and returns the agent SVID.
pub async fn attest_join_token(
    addr: SocketAddr,
    bundle: &Bundle,
    token: &str,
    csr: Vec<u8>,
) -> Result<pb::AgentSvid, tonic::Status> {
    let mut client = connect(addr, bundle, None)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::AttestationParams {
                attestor: "join_token".to_owned(),
                payload: token.as_bytes().to_vec(),
                csr,
            },
        )),
    };
    let mut responses = client
        .attest_agent(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("no attestation result"))?;
    match response.step {
        Some(pb::attest_agent_response::Step::Result(svid)) => Ok(svid),
        other => Err(tonic::Status::internal(format!(
            "unexpected attestation step {other:?}"
        ))),
    }
}

/// Parses a bundle printed by `lanyard bundle show --format spiffe`.
pub fn parse_bundle(trust_domain: &str, json: &str) -> anyhow::Result<Bundle> {
    Ok(Bundle::parse_json(
        TrustDomain::new(trust_domain)?,
        json.as_bytes(),
    )?)
}

/// Runs AttestAgent with x509pop: sends the chain, signs the server's challenge with `key`
/// (PKCS#8 DER), returns the agent SVID.
pub async fn attest_x509pop(
    addr: SocketAddr,
    bundle: &Bundle,
    chain: Vec<Vec<u8>>,
    key_pkcs8: &[u8],
    csr: Vec<u8>,
) -> Result<pb::AgentSvid, tonic::Status> {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key_pkcs8.to_vec().into());
    let signer = lanyard_attestation::X509PopClient::new(chain.clone(), &key)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    attest_x509pop_signed_by(addr, bundle, chain, &signer, csr).await
}

/// Like [`attest_x509pop`], but sends `chain` while answering the challenge with `signer`,
/// which may hold another certificate: what a forger would try.
pub async fn attest_x509pop_signed_by(
    addr: SocketAddr,
    bundle: &Bundle,
    chain: Vec<Vec<u8>>,
    signer: &lanyard_attestation::X509PopClient,
    csr: Vec<u8>,
) -> Result<pb::AgentSvid, tonic::Status> {
    let internal = |e: &dyn std::fmt::Display| tonic::Status::internal(e.to_string());
    let mut client = connect(addr, bundle, None)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let params = pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::AttestationParams {
                attestor: "x509pop".to_owned(),
                payload: chain.concat(),
                csr,
            },
        )),
    };
    tx.send(params).await.map_err(|e| internal(&e))?;
    let mut responses = client
        .attest_agent(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let message = responses
            .message()
            .await?
            .ok_or_else(|| tonic::Status::internal("no attestation result"))?;
        match message.step {
            Some(pb::attest_agent_response::Step::Challenge(nonce)) => {
                let nonce = nonce
                    .try_into()
                    .map_err(|_| tonic::Status::internal("challenge of the wrong size"))?;
                let challenge = lanyard_attestation::X509PopChallenge { nonce };
                let answer = signer.respond(&challenge).map_err(|e| internal(&e))?;
                let reply = pb::AttestAgentRequest {
                    step: Some(pb::attest_agent_request::Step::ChallengeResponse(
                        answer.signature,
                    )),
                };
                tx.send(reply).await.map_err(|e| internal(&e))?;
            }
            Some(pb::attest_agent_response::Step::Result(svid)) => return Ok(svid),
            None => return Err(tonic::Status::internal("an empty attestation message")),
        }
    }
}
