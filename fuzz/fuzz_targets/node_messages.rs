//! The node API's request messages (`lanyard.node.v1`, crates/proto), decoded with prost and then
//! parsed as the server parses them (crates/server/src/node.rs): the x509pop attestation payload
//! (`X509Authority::parse_concatenated_der`, then `X509PopVerifier::begin` against a fixed root),
//! the answer to the challenge, join tokens, CSRs, entry ids and JWT audiences. `AttestAgent` is
//! the one call an agent makes without a client certificate, so its payload is the most exposed
//! input lanyard has.
//!
//! The first input byte picks the message; the rest is its protobuf encoding (for `AttestAgent`,
//! two length-delimited messages: the parameters, then the answer to the challenge).
//!
//! Properties:
//! - nothing panics;
//! - every decoded message re-encodes to `encoded_len` bytes that decode to an equal message;
//! - an x509pop chain that is accepted names an agent ID in the trust domain ending in the
//!   leaf's SHA-1 fingerprint, and an answer the harness did not sign never completes it;
//! - a join token that parses gives a valid agent ID;
//! - CSRs mint only SVIDs that verify for the agent ID; JWT-SVIDs minted for the requested
//!   audiences verify for each of them.

#![no_main]

use std::sync::{Arc, OnceLock};

use lanyard_attestation::node::x509pop::fingerprint;
use lanyard_attestation::{
    JoinToken, JoinTokenVerifier, X509PopAttestationData, X509PopConfig, X509PopResponse,
    X509PopVerifier,
};
use lanyard_ca::{JwtSvidRequest, X509SvidRequest};
use lanyard_core::{EntryId, SpiffeId, X509Authority};
use lanyard_proto::node as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, mut bytes)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            let Ok(first) = pb::AttestAgentRequest::decode_length_delimited(&mut bytes) else {
                return;
            };
            lanyard_fuzz::check_protobuf_round_trip(&first);
            let answer = pb::AttestAgentRequest::decode_length_delimited(&mut bytes).ok();
            if let Some(answer) = &answer {
                lanyard_fuzz::check_protobuf_round_trip(answer);
            }
            attest_agent(first, answer);
        }
        1 => {
            let Ok(request) = pb::RenewAgentRequest::decode(bytes) else {
                return;
            };
            lanyard_fuzz::check_protobuf_round_trip(&request);
            mint_from_csr(&request.csr);
        }
        2 => {
            let Ok(request) = pb::SyncEntriesRequest::decode(bytes) else {
                return;
            };
            lanyard_fuzz::check_protobuf_round_trip(&request);
        }
        3 => {
            let Ok(request) = pb::BatchNewX509SvidRequest::decode(bytes) else {
                return;
            };
            lanyard_fuzz::check_protobuf_round_trip(&request);
            for param in &request.params {
                check_entry_id(&param.entry_id);
                mint_from_csr(&param.csr);
            }
        }
        _ => {
            let Ok(request) = pb::NewJwtSvidRequest::decode(bytes) else {
                return;
            };
            lanyard_fuzz::check_protobuf_round_trip(&request);
            check_entry_id(&request.entry_id);
            let req = JwtSvidRequest::new(workload_id().clone(), request.audience);
            lanyard_fuzz::mint_and_check_jwt(&req);
        }
    }
});

fn attest_agent(first: pb::AttestAgentRequest, answer: Option<pb::AttestAgentRequest>) {
    // The server refuses a stream that does not start with the parameters.
    let Some(pb::attest_agent_request::Step::Params(params)) = first.step else {
        return;
    };
    match params.attestor.as_str() {
        "join_token" => {
            let Ok(token) = std::str::from_utf8(&params.payload) else {
                return;
            };
            if let Ok(token) = token.parse::<JoinToken>() {
                let verifier = JoinTokenVerifier::new(lanyard_fuzz::trust_domain());
                let id = verifier
                    .agent_id(&token.id())
                    .unwrap_or_else(|e| panic!("a valid join token names no agent: {e}"));
                assert!(id.is_member_of(&lanyard_fuzz::trust_domain()));
            }
        }
        "x509pop" => {
            let Ok(chain) = X509Authority::parse_concatenated_der(&params.payload) else {
                return;
            };
            let chain: Vec<Vec<u8>> = chain.into_iter().map(|c| c.der().to_vec()).collect();
            let Ok(pending) = x509pop().begin(&X509PopAttestationData {
                chain: chain.clone(),
            }) else {
                return;
            };
            let id = pending.agent_id();
            assert!(id.is_member_of(&lanyard_fuzz::trust_domain()));
            assert_eq!(id.segments().last(), Some(fingerprint(&chain[0]).as_str()));
            let Some(pb::attest_agent_request::Step::ChallengeResponse(signature)) =
                answer.and_then(|a| a.step)
            else {
                return;
            };
            let response = X509PopResponse {
                nonce: pending.challenge().nonce,
                signature,
            };
            assert!(
                pending.finish(&response).is_err(),
                "an x509pop challenge was answered without the leaf's key"
            );
        }
        _ => return,
    }
    mint_from_csr(&params.csr);
}

/// Mints from a CSR and checks the result, as the server does for agents and entries.
fn mint_from_csr(csr: &[u8]) {
    let request = X509SvidRequest::new(workload_id().clone());
    if let Ok(svid) = lanyard_fuzz::ca().mint_x509_svid_from_csr(csr, &request) {
        let verified = lanyard_core::verify_x509_svid(
            &svid.cert_chain,
            lanyard_fuzz::ca_bundles(),
            lanyard_fuzz::now(),
        )
        .unwrap_or_else(|e| panic!("a minted SVID does not verify: {e}"));
        assert_eq!(verified.spiffe_id(), workload_id());
    }
}

fn check_entry_id(id: &str) {
    if let Ok(parsed) = id.parse::<EntryId>() {
        assert_eq!(parsed.as_str(), id);
    }
}

fn workload_id() -> &'static SpiffeId {
    static ID: OnceLock<SpiffeId> = OnceLock::new();
    ID.get_or_init(|| SpiffeId::parse("spiffe://example.org/lanyard/agent/x").expect("an ID"))
}

/// An x509pop verifier trusting the root the seeds chain to, at the fixed time.
fn x509pop() -> &'static X509PopVerifier {
    static VERIFIER: OnceLock<X509PopVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        X509PopVerifier::new(
            X509PopConfig::new(
                lanyard_fuzz::trust_domain(),
                vec![lanyard_fuzz::X509POP_ROOT_DER.to_vec()],
            ),
            Arc::new(lanyard_fuzz::FixedClock),
        )
        .expect("an x509pop verifier")
    })
}
