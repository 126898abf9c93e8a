//! SPIRE's habit, `token generate --spiffe-id spiffe://td/node/n1`: the ID becomes a node alias of
//! the one agent that uses the token, so entries parented to `…/node/n1` run on that agent and on
//! no other.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::{Server, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// The SPIFFE IDs of the X509-SVIDs the agent gives this process, once it gives any.
fn svids_of(agent: &Agent) -> Option<Vec<String>> {
    let out = agent.cli(&["x509", "fetch", "--output", "json"]);
    if !out.success {
        return None;
    }
    let mut ids: Vec<String> = out.json()["svids"]
        .as_array()?
        .iter()
        .map(|s| s["spiffe_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    Some(ids)
}

fn create_entry(server: &Server, parent: &str, spiffe_id: &str, selector: &str) {
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            parent,
            "--spiffe-id",
            spiffe_id,
            "--selector",
            selector,
        ])
        .ok();
}

#[test]
fn a_token_for_a_node_id_makes_an_alias_that_only_its_agent_serves() {
    let server = Server::start();
    let uid = format!("unix:uid:{}", rustix::process::getuid().as_raw());

    let generated = server
        .cli(&[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://example.org/node/n1",
            "--output",
            "json",
        ])
        .json();
    let token = generated["token"].as_str().unwrap();
    let token_id = generated["token_id"].as_str().unwrap();
    let alias_entry_id = generated["alias_entry_id"].as_str().unwrap();
    assert_eq!(generated["spiffe_id"], "spiffe://example.org/node/n1");
    assert!(!token.contains(token_id) && !token_id.contains(token));

    // The alias is an ordinary entry the admin can see (and delete).
    let alias = server
        .cli(&["entry", "show", "--id", alias_entry_id, "--output", "json"])
        .json();
    assert_eq!(alias["spiffe_id"], "spiffe://example.org/node/n1");
    assert_eq!(alias["parent_id"], "spiffe://example.org/lanyard/server");
    assert_eq!(
        alias["selectors"],
        serde_json::json!([format!("join_token:{token_id}")])
    );

    create_entry(
        &server,
        "spiffe://example.org/node/n1",
        "spiffe://example.org/on-n1",
        &uid,
    );
    let n1 = Agent::start_with_token(&server, token);
    let ids = wait_for("the SVID of the node alias's entry", WAIT, || svids_of(&n1));
    assert_eq!(ids, ["spiffe://example.org/on-n1"], "{}", n1.log());

    // The agent keeps its own ID; the alias only adds what it serves.
    let agents = server.cli(&["agent", "list", "--output", "json"]).json();
    assert_eq!(
        agents[0]["spiffe_id"],
        format!("spiffe://example.org/lanyard/agent/join_token/{token_id}")
    );
    assert_eq!(
        agents[0]["selectors"],
        serde_json::json!([format!("join_token:{token_id}")])
    );

    // Another agent, attested with a plain token, never serves it. Its own entry is created
    // after the alias's, and entries reach an agent in the order they were written: once it
    // serves its own, it has seen everything before it.
    let other = server
        .cli(&["token", "generate", "--output", "json"])
        .json();
    let other_id = format!(
        "spiffe://example.org/lanyard/agent/join_token/{}",
        other["token_id"].as_str().unwrap()
    );
    create_entry(&server, &other_id, "spiffe://example.org/on-other", &uid);
    let other = Agent::start_with_token(&server, other["token"].as_str().unwrap());
    let ids = wait_for("the other agent's own SVID", WAIT, || svids_of(&other));
    assert_eq!(ids, ["spiffe://example.org/on-other"], "{}", other.log());

    // The text output names the alias entry.
    let text = server
        .cli(&[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://example.org/node/n2",
        ])
        .ok()
        .to_owned();
    let alias_line = text
        .lines()
        .find(|l| l.starts_with("Alias entry:"))
        .unwrap_or_else(|| panic!("{text}"));
    let alias_id = alias_line.trim_start_matches("Alias entry:").trim();
    let shown = server
        .cli(&["entry", "show", "--id", alias_id, "--output", "json"])
        .json();
    assert_eq!(shown["spiffe_id"], "spiffe://example.org/node/n2");
}
