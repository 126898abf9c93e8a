//! Attestation, persistence, restart, eviction and shutdown, against the fake node server over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::*;
use lanyard_agent::AgentError;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(start_paused = true)]
async fn attests_persists_and_resumes_without_a_token() {
    let env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    let token = env.server.add_token();

    let agent = env.spawn(env.config(Some(&token)));
    let ctx = wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;
    assert_eq!(ids(&ctx), ["spiffe://example.org/web"]);
    assert_eq!(env.server.state().attestations, 1);
    // Every call after attestation presented the agent SVID.
    let agent_id = FakeServer::agent_id_for(&token);
    assert!(
        env.server
            .state()
            .callers
            .iter()
            .all(|c| c.as_ref() == Some(&agent_id))
    );
    let data = env.data_dir();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("agent_svid.json")), 0o600);
    assert_eq!(mode(&data.join("bundle.json")), 0o600);
    let svid_file = std::fs::read_to_string(data.join("agent_svid.json")).unwrap();
    assert!(
        !svid_file.contains(&token),
        "the token itself is never stored"
    );

    agent.shutdown().await.unwrap();
    assert!(!env.socket().exists(), "the socket is removed at shutdown");

    // Restart with no token: the persisted SVID is used, no new attestation.
    let agent = env.spawn(env.config(None));
    let ctx = wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;
    assert_eq!(ids(&ctx), ["spiffe://example.org/web"]);
    assert_eq!(env.server.state().attestations, 1);
    agent.shutdown().await.unwrap();

    // The spent token again, with the SVID still valid: it is not even offered.
    let agent = env.spawn(env.config(Some(&token)));
    wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;
    agent.shutdown().await.unwrap();
    assert_eq!(env.server.state().refused_attestations, 0);
}

#[tokio::test(start_paused = true)]
async fn first_start_needs_a_valid_token() {
    let env = Env::new().await;
    let err = env.spawn(env.config(None)).join().await.unwrap_err();
    assert!(matches!(err, AgentError::NoAttestor), "{err}");
    assert!(!env.socket().exists());

    let err = env
        .spawn(env.config(Some("bogus")))
        .join()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::AttestationRefused {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(env.server.state().refused_attestations, 1);
}

#[tokio::test(start_paused = true)]
async fn an_expired_persisted_svid_needs_a_new_token() {
    let env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    env.server.state().agent_ttl = std::time::Duration::from_secs(600);
    let token = env.server.add_token();
    let agent = env.spawn(env.config(Some(&token)));
    wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;
    agent.shutdown().await.unwrap();

    // Down for longer than the agent SVID lives.
    tokio::time::advance(std::time::Duration::from_secs(900)).await;
    let err = env.spawn(env.config(None)).join().await.unwrap_err();
    assert!(matches!(err, AgentError::SvidExpired { .. }), "{err}");
    let err = env
        .spawn(env.config(Some(&token)))
        .join()
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::JoinTokenUsed), "{err}");

    let fresh = env.server.add_token();
    let agent = env.spawn(env.config(Some(&fresh)));
    wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;
    assert_eq!(env.server.state().attestations, 2);
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_evicted_agent_attests_again_or_stops() {
    let env = Env::new().await;
    env.server.put_entry(entry("e1", "/web", SELECTOR));
    let token = env.server.add_token();
    let agent = env.spawn(env.config(Some(&token)));
    wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;

    // Only the spent token: the agent stops with a clear error.
    env.server.evict(&FakeServer::agent_id_for(&token));
    let err = agent.join().await.unwrap_err();
    assert!(matches!(err, AgentError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("new join token"), "{err}");

    // A new token: the agent attests again and carries on.
    let env2_token = env.server.add_token();
    let agent = env.spawn(env.config(Some(&env2_token)));
    // The persisted SVID is still valid, so the agent starts with it; the server refuses it.
    wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;
    assert_eq!(env.server.state().attestations, 2);
    let new_id = FakeServer::agent_id_for(&env2_token);
    assert_eq!(
        env.server.state().callers.last().unwrap().as_ref(),
        Some(&new_id)
    );
    agent.shutdown().await.unwrap();
}
