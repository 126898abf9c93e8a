//! Real `lanyard server run` and `lanyard agent run` processes through crashes and outages: the
//! agent keeps serving what it has, resumes without a token, and catches up when the server
//! returns.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, Instant};

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::{Server, wait_for};

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/node-a";

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// (SPIFFE IDs, serial of the first SVID) as `lanyard x509 fetch` shows them, if it succeeds.
fn fetch(agent: &Agent) -> Option<(Vec<String>, String)> {
    let out = agent.cli(&["x509", "fetch", "--output", "json"]);
    if !out.success {
        return None;
    }
    let doc = out.json();
    let svids = doc["svids"].as_array()?;
    let ids = svids
        .iter()
        .map(|s| s["spiffe_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    Some((ids, svids.first()?["svid_pem"].as_str()?.to_owned()))
}

fn create(server: &Server, spiffe_id: &str, ttl: &str) {
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            AGENT_ID,
            "--spiffe-id",
            spiffe_id,
            "--selector",
            &format!("unix:uid:{}", uid()),
            "--x509-ttl",
            ttl,
        ])
        .ok();
}

#[test]
fn agent_and_server_crashes_lose_nothing() {
    let mut server = Server::start();
    create(&server, "spiffe://example.org/first", "1h");
    let mut agent = Agent::start(&server, AGENT_ID);
    let (ids, _) = wait_for("the first SVID", Duration::from_secs(30), || fetch(&agent));
    assert_eq!(ids, ["spiffe://example.org/first"]);

    // Server killed: the agent keeps serving; restarted: the agent reconnects, resumes from its
    // revision, and a new entry reaches it.
    server.kill();
    assert_eq!(fetch(&agent).unwrap().0, ["spiffe://example.org/first"]);
    server.restart();
    create(&server, "spiffe://example.org/second", "1h");
    wait_for(
        "the new entry after the server restart",
        Duration::from_secs(60),
        || fetch(&agent).filter(|(ids, _)| ids.len() == 2).map(|_| ()),
    );

    // Agent killed and restarted without a token: it resumes from its persisted SVID.
    agent.restart_without_token();
    let (ids, _) = wait_for(
        "SVIDs after the agent restart",
        Duration::from_secs(60),
        || fetch(&agent).filter(|(ids, _)| ids.len() == 2),
    );
    assert_eq!(
        ids,
        ["spiffe://example.org/first", "spiffe://example.org/second"]
    );

    // The server never saw a second attestation.
    let agents = server.cli(&["agent", "list", "--output", "json"]).json();
    assert_eq!(agents.as_array().unwrap().len(), 1);
}

#[test]
fn cached_svids_outlive_a_server_outage_and_renew_when_it_returns() {
    let mut server = Server::start();
    create(&server, "spiffe://example.org/short", "30s");
    let agent = Agent::start(&server, AGENT_ID);
    let (_, first) = wait_for("the first SVID", Duration::from_secs(30), || fetch(&agent));

    // Wait for a renewal, so that the outage starts right after a fresh mint.
    let (_, fresh) = wait_for("a renewal", Duration::from_secs(40), || {
        fetch(&agent).filter(|(_, pem)| *pem != first)
    });
    let down_at = Instant::now();
    server.kill();
    // Past half the SVID's life (15 s), when the agent would have renewed: it keeps serving the
    // SVID it has, which is still valid.
    wait_for(
        "half the SVID lifetime to pass",
        Duration::from_secs(30),
        || (down_at.elapsed() >= Duration::from_secs(16)).then_some(()),
    );
    let (ids, during) = fetch(&agent).expect("served during the outage");
    assert_eq!(ids, ["spiffe://example.org/short"]);
    assert_eq!(
        during, fresh,
        "the cached SVID is served while the server is down"
    );

    server.restart();
    wait_for(
        "a renewal once the server is back",
        Duration::from_secs(40),
        || fetch(&agent).filter(|(_, pem)| *pem != fresh).map(|_| ()),
    );
}
