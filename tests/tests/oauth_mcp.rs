//! lanyard as the OAuth authorization server of MCP tool servers, checked by libraries nobody
//! here wrote: a real server with `[oauth]` on HTTPS (certificate from a test CA made here), a
//! real agent, and tests/python/oauth_mcp.py, which discovers the server (RFC 8414), reads the
//! RFC 9728 document `lanyard oauth resource-metadata` prints, gets access tokens by jwt-bearer,
//! client_credentials and token exchange, verifies them with PyJWT, runs a real MCP server (the
//! Python `mcp` SDK) guarded by authlib's RFC 9068 validator and RFC 7662 introspection, and
//! checks the token endpoint's refusals. This side holds what a workload holds (JWT-SVIDs and
//! task tokens from its agent) and ends a task when the script asks, so that the script sees the
//! task's access token revoked.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::python::{ensure_python_packages, repo_root};
use lanyard_e2e::running::Running;
use lanyard_e2e::tasks::TaskSetup;
use lanyard_e2e::wait_for;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/oauth";
/// This test process (and the Python script it runs): the MCP client's workload.
const WORKLOAD: &str = "spiffe://example.org/agents/mcp-client";
/// The MCP server's canonical URI (RFC 8707 resource). The script serves it on 127.0.0.1 over
/// plain HTTP, as a tool behind a TLS-terminating proxy would be; the URI is only a name here.
const RESOURCE: &str = "https://tools.lanyard.test/mcp";
/// Another tool the workload may read: its tokens must not open [`RESOURCE`].
const OTHER_RESOURCE: &str = "https://other-tools.lanyard.test/mcp";
/// Short, so that the script sees a token expire; long enough for the checks the script runs
/// on each token right after it is issued.
const ACCESS_TOKEN_TTL_SECS: u64 = 20;
/// How long the script may take to reach each point this test waits for (the expiry it waits
/// for included).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long anything that should happen at once may take.
const PROMPT: Duration = Duration::from_secs(30);

/// `tools:read` on both tools for the workload, nothing else.
fn policy() -> String {
    format!(
        r#"
@id("read-tools")
permit(
  principal == Workload::"{WORKLOAD}",
  action == Action::"tools:read",
  resource == Tool::"{RESOURCE}"
);

@id("read-other-tools")
permit(
  principal == Workload::"{WORKLOAD}",
  action == Action::"tools:read",
  resource == Tool::"{OTHER_RESOURCE}"
);
"#
    )
}

/// The HTTPS endpoint's files in `dir`, from a CA made for this test: (CA certificate, leaf
/// certificate for 127.0.0.1, its PKCS#8 key), all PEM.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "lanyard OAuth test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    // An IP address string becomes an IP SAN, which is what a client checks for 127.0.0.1.
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).unwrap();

    let paths = (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// A JWT-SVID for `audience`, from the agent, as the workload gets it.
fn jwt_svid(agent: &Agent, audience: &str) -> String {
    let out = agent
        .cli(&["jwt", "fetch", "--audience", audience, "--output", "json"])
        .json();
    assert_eq!(out[0]["spiffe_id"], WORKLOAD, "{out}");
    out[0]["token"].as_str().unwrap().to_owned()
}

/// A task reading [`RESOURCE`]: (its id, its token).
fn begin_task(agent: &Agent) -> (String, String) {
    let out = agent
        .cli(&[
            "task",
            "begin",
            "--audience",
            RESOURCE,
            "--op",
            "tools:read",
            "--output",
            "json",
        ])
        .json();
    (
        out["task"]["id"].as_str().unwrap().to_owned(),
        out["token"].as_str().unwrap().to_owned(),
    )
}

fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn an_mcp_server_accepts_lanyard_access_tokens_for_itself_only_while_they_live() {
    // Before any credential exists: a fresh machine's pip may take minutes.
    ensure_python_packages(
        "mcp, authlib, joserfc, jwt, httpx, httpx2, uvicorn",
        "tests/python/requirements-oauth.txt",
    );
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let config = format!(
        r#"
[oauth]
bind = "127.0.0.1:0"
cert_file = "{}"
key_file = "{}"
access_token_ttl = "{ACCESS_TOKEN_TTL_SECS}s"
"#,
        cert.display(),
        key.display()
    );
    let setup = TaskSetup::start(&policy(), &config, WORKLOAD, &[AGENT_ID]);
    let server = &setup.server;
    let agent = setup.agent();

    let metadata = wait_for("the OAuth endpoint's metadata", PROMPT, || {
        let out = server.cli(&["oauth", "show", "--output", "json"]);
        out.success.then_some(out.stdout)
    });
    let as_metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
    let issuer = as_metadata["issuer"].as_str().unwrap().to_owned();
    let resource_metadata = server
        .cli(&[
            "oauth",
            "resource-metadata",
            "--resource",
            RESOURCE,
            "--scope",
            "tools:read",
            "--name",
            "lanyard test tools",
        ])
        .ok()
        .to_owned();

    let (_, live_task) = begin_task(agent);
    let (task_to_end, task_to_end_token) = begin_task(agent);
    let input = dir.path().join("input.json");
    let args = json!({
        "issuer": issuer,
        "ca_file": ca,
        "resource": RESOURCE,
        "other_resource": OTHER_RESOURCE,
        "workload": WORKLOAD,
        "as_metadata_cli": metadata,
        "resource_metadata": resource_metadata,
        "svid_issuer": jwt_svid(agent, &issuer),
        "svid_token_endpoint": jwt_svid(agent, &format!("{issuer}/oauth/token")),
        "svid_other_audience": jwt_svid(agent, "https://elsewhere.lanyard.test"),
        "task_token": live_task,
        "task_token_to_end": task_to_end_token,
        "task_to_end_id": task_to_end,
        "access_token_ttl": ACCESS_TOKEN_TTL_SECS,
    });
    std::fs::write(&input, args.to_string()).unwrap();

    let mut python = Running::spawn(
        Command::new("python3")
            .arg(repo_root().join("tests/python/oauth_mcp.py"))
            .arg(&input),
        SCRIPT_TIMEOUT,
    );
    let mut seen = Vec::new();
    // The script holds an access token exchanged from this task, and has seen it accepted.
    python.wait_for_line("end-task ", &mut seen);
    assert_eq!(
        seen.last().unwrap(),
        &format!("end-task {task_to_end}"),
        "{}",
        seen.join("\n")
    );
    agent.cli(&["task", "end", "--id", &task_to_end]).ok();
    // If the script is gone already, finish says why.
    let _ = python.send("ended\n");
    let (ok, output) = python.finish(seen);
    assert!(
        ok,
        "oauth_mcp.py failed:\n{output}\n--- server log (tail):\n{}",
        log_tail(&server.log())
    );
    println!("{output}");

    // Refusals are in the audit log with their RFC 6749 error (the first ones of the script's
    // burst: one peer's refusals are recorded at a bounded rate, the rest counted in the next
    // record); every token issued is a grant there, and a task the administrator sees.
    let records = |kind: &str| {
        server
            .cli(&["audit", "list", "--kind", kind, "--output", "json"])
            .json()["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let refused: Vec<String> = records("oauth.refused")
        .iter()
        .map(|r| {
            r["details"]["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for error in [
        "unsupported_grant_type",
        "invalid_grant",
        "invalid_client",
        "invalid_target",
        "invalid_request",
    ] {
        assert!(
            refused.iter().any(|e| e == error),
            "{error} not recorded: {refused:?}"
        );
    }
    let granted = records("oauth.granted");
    assert!(!granted.is_empty());
    let tasks = server.cli(&["task", "list", "--output", "json"]).json();
    for grant in &granted {
        let id = grant["subject"].as_str().unwrap();
        assert!(
            tasks["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == id),
            "the token of grant {grant} is no task"
        );
    }
}
