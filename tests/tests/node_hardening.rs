//! The node API's boundary against a hostile network and stolen credentials, probed on a real
//! `lanyard server run`: agent SVIDs bound to the agent's record, limits on the unauthenticated
//! attestation call, and what refusals cost the server.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use lanyard_e2e::Server;
use lanyard_e2e::node_client::{SimAgent, key_and_csr, parse_bundle};
use lanyard_proto::node as pb;
use lanyard_tls::SvidHandle;
use tonic::Code;

fn bundle_of(server: &Server) -> lanyard_core::Bundle {
    let json = server
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();
    parse_bundle("example.org", &json).unwrap()
}

fn token(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["token", "generate", "--output", "json"];
    all.extend_from_slice(args);
    server.cli(&all).json()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Renews `agent`'s SVID through RenewAgent; returns the agent holding the new SVID.
async fn renew(agent: &SimAgent) -> Result<SimAgent, tonic::Status> {
    let (key, csr) = key_and_csr().unwrap();
    let svid = agent
        .client()
        .await
        .unwrap()
        .renew_agent(pb::RenewAgentRequest { csr })
        .await?
        .into_inner()
        .svid
        .unwrap();
    Ok(SimAgent {
        svid: SvidHandle::new(&svid.cert_chain, &key).unwrap(),
        chain: svid.cert_chain,
        ..agent.clone()
    })
}

/// Whether the server serves `agent` an entry stream.
async fn sync_code(agent: &SimAgent) -> Code {
    let mut client = agent.client().await.unwrap();
    match client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_svid_works_only_while_it_is_the_records_current_one() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = bundle_of(&server);
    let first = SimAgent::attest(addr, &bundle, &token(&server, &[]))
        .await
        .unwrap();

    // Renewal: until the agent uses its new SVID, the old one still works (a lost answer must not
    // lock the agent out); the first call with the new one retires the old.
    let second = renew(&first).await.unwrap();
    assert_eq!(sync_code(&first).await, Code::Ok);
    assert_eq!(sync_code(&second).await, Code::Ok);
    assert_eq!(sync_code(&first).await, Code::PermissionDenied);
    assert_eq!(
        renew(&first).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // A renewal whose answer was lost: the agent renews again from its current SVID, and only
    // the newest renewed SVID is accepted.
    let lost = renew(&second).await.unwrap();
    let third = renew(&second).await.unwrap();
    assert_eq!(sync_code(&third).await, Code::Ok);
    assert_eq!(sync_code(&lost).await, Code::PermissionDenied);
    assert_eq!(sync_code(&second).await, Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_svid_from_before_a_reattestation_or_eviction_is_refused() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = bundle_of(&server);
    let id = "spiffe://example.org/lanyard/agent/join_token/node-1";
    let before = SimAgent::attest(addr, &bundle, &token(&server, &["--spiffe-id", id]))
        .await
        .unwrap();
    assert_eq!(before.spiffe_id.as_str(), id);

    // The same node attests again: the SVID it held before is dead, the new one works.
    let again = SimAgent::attest(addr, &bundle, &token(&server, &["--spiffe-id", id]))
        .await
        .unwrap();
    assert_eq!(sync_code(&before).await, Code::PermissionDenied);
    assert_eq!(sync_code(&again).await, Code::Ok);

    // Evicted, then attested again: neither earlier SVID comes back to life.
    server.cli(&["agent", "evict", "--spiffe-id", id]).ok();
    let after = SimAgent::attest(addr, &bundle, &token(&server, &["--spiffe-id", id]))
        .await
        .unwrap();
    assert_eq!(sync_code(&again).await, Code::PermissionDenied);
    assert_eq!(sync_code(&before).await, Code::PermissionDenied);
    assert_eq!(sync_code(&after).await, Code::Ok);
}
