//! What the task-credential end-to-end tests share: a server deciding with given Cedar policies,
//! its agents, and an entry that gives this test process's uid a workload identity under the
//! first agent; and a look inside a token.

use std::path::Path;
use std::time::Duration;

use crate::agent_process::Agent;
use crate::{Server, wait_for};

/// A server with policies, agents, and this process's workload identity.
#[derive(Debug)]
pub struct TaskSetup {
    pub server: Server,
    /// In the order of the ids given to [`TaskSetup::start`]; the workload runs under the first.
    pub agents: Vec<Agent>,
    _dir: tempfile::TempDir,
}

impl TaskSetup {
    /// Starts a server whose policy directory holds `policy` (and whose config file is
    /// `server_toml`, unless empty), registers `workload` for this uid under `agent_ids[0]`,
    /// starts one agent per id, and waits until the first serves the workload.
    pub fn start(policy: &str, server_toml: &str, workload: &str, agent_ids: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).expect("policy dir");
        std::fs::write(policies.join("p.cedar"), policy).expect("policy");
        let mut args = vec!["--policy-dir".to_owned(), policies.display().to_string()];
        if !server_toml.is_empty() {
            let config = dir.path().join("server.toml");
            std::fs::write(&config, server_toml).expect("config");
            args.extend(["--config".to_owned(), config.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_with(&args);
        let uid = rustix::process::getuid().as_raw();
        server
            .cli(&[
                "entry",
                "create",
                "--parent-id",
                agent_ids[0],
                "--spiffe-id",
                workload,
                "--selector",
                &format!("unix:uid:{uid}"),
            ])
            .ok();
        let agents: Vec<Agent> = agent_ids
            .iter()
            .map(|id| Agent::start(&server, id))
            .collect();
        wait_for(
            "the workload's identity at the first agent",
            Duration::from_secs(30),
            || {
                let out = agents[0].cli(&["x509", "fetch", "--output", "json"]);
                (out.success && out.json()["svids"][0]["spiffe_id"] == workload).then_some(())
            },
        );
        Self {
            server,
            agents,
            _dir: dir,
        }
    }

    /// The agent the workload runs under.
    pub fn agent(&self) -> &Agent {
        &self.agents[0]
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.agents[0].socket
    }
}

/// The claims of a JWT, decoded without checking anything (to look at what a token carries).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in payload.bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64url payload");
        bits = (bits << 6) | u32::try_from(v).expect("small");
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).expect("a byte"));
        }
    }
    serde_json::from_slice(&out).expect("JSON claims")
}
