//! A `lanyard agent run` process attached to a [`Server`](crate::Server) (or to several servers
//! on one datastore), with its own data directory and Workload API socket.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{CliOutput, Server, lanyard, lanyard_bin, wait_for};

/// A running agent. Dropping it kills the process.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    args: Vec<String>,
    /// Environment variables set for the agent process (all others are inherited, except
    /// `LANYARD_JOIN_TOKEN`).
    env: Vec<(String, String)>,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent for `server`, attesting with a fresh join token for `agent_id` (a path
    /// under /lanyard/agent/), and waits until its Workload API socket exists.
    pub fn start(server: &Server, agent_id: &str) -> Self {
        let token = server
            .cli(&[
                "token",
                "generate",
                "--spiffe-id",
                agent_id,
                "--output",
                "json",
            ])
            .json()["token"]
            .as_str()
            .expect("token")
            .to_owned();
        Self::start_with_token(server, &token)
    }

    /// Starts an agent that attests with `token`, passed with `--join-token`.
    pub fn start_with_token(server: &Server, token: &str) -> Self {
        Self::start_attesting(server, &["--join-token", token])
    }

    /// Starts an agent that attests with x509pop, proving the key of `cert` (PEM files).
    pub fn start_x509pop(server: &Server, cert: &std::path::Path, key: &std::path::Path) -> Self {
        let cert = cert.display().to_string();
        let key = key.display().to_string();
        Self::start_attesting(server, &["--x509pop-cert", &cert, "--x509pop-key", &key])
    }

    fn start_attesting(server: &Server, attestor_args: &[&str]) -> Self {
        Self::start_with(server, attestor_args, &[])
    }

    /// Starts an agent given every server of `servers` (`--server a,b,c`; they share one
    /// datastore), attesting with a fresh join token for `agent_id` made through the first, and
    /// waits until its Workload API socket exists.
    pub fn start_for_servers(servers: &[&Server], agent_id: &str) -> Self {
        let first = servers.first().expect("at least one server");
        let token = first.join_token(&["--spiffe-id", agent_id]);
        Self::start_full(servers, &["--join-token", &token], &[])
    }

    /// Starts an agent with `attestor_args` added to `agent run` and `env` set, and waits until
    /// its Workload API socket exists.
    pub fn start_with(server: &Server, attestor_args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(&[server], attestor_args, env)
    }

    fn start_full(servers: &[&Server], attestor_args: &[&str], env: &[(&str, &str)]) -> Self {
        let server = servers.first().expect("at least one server");
        let addresses: Vec<String> = servers.iter().map(|s| s.node_addr().to_string()).collect();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let bundle = dir.join("bundle.json");
        std::fs::write(
            &bundle,
            server.cli(&["bundle", "show", "--format", "spiffe"]).ok(),
        )
        .expect("bundle");
        let socket = dir.join("agent.sock");
        let mut args = vec![
            "agent".to_owned(),
            "run".to_owned(),
            "--trust-domain".to_owned(),
            server.trust_domain.clone(),
            "--server".to_owned(),
            addresses.join(","),
            "--socket".to_owned(),
            socket.display().to_string(),
            "--data-dir".to_owned(),
            dir.join("data").display().to_string(),
            "--trust-bundle".to_owned(),
            bundle.display().to_string(),
        ];
        args.extend(attestor_args.iter().map(|a| (*a).to_owned()));
        let mut agent = Self {
            child: None,
            log: dir.join("agent.log"),
            dir,
            socket,
            args,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _tmp: tmp,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new(lanyard_bin())
            .args(&self.args)
            .env_remove("LANYARD_JOIN_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start lanyard agent");
        self.child = Some(child);
        let socket = self.socket.clone();
        let child = self.child.as_mut().expect("running");
        let log = self.log.clone();
        wait_for(
            "the agent's Workload API socket",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "agent exited with {status}:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                socket.exists().then_some(())
            },
        );
    }

    /// Kills the agent with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again on the same data directory, without a join token: it must resume
    /// from its persisted SVID.
    pub fn restart_without_token(&mut self) {
        self.kill();
        if let Some(i) = self
            .args
            .iter()
            .position(|a| a == "--join-token" || a == "--join-token-file")
        {
            self.args.drain(i..i + 2);
        }
        self.env.retain(|(k, _)| k != "LANYARD_JOIN_TOKEN");
        // The killed agent's socket file stays behind; remove it so that waiting for the socket
        // waits for the new agent.
        let _ = std::fs::remove_file(&self.socket);
        self.spawn();
    }

    /// `lanyard <args> --socket <agent socket>`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.push("--socket".to_owned());
        all.push(self.socket.display().to_string());
        lanyard(all)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node-API address the agent last connected to, from its log (`connected to the server`).
    pub fn connected_to(&self) -> Option<std::net::SocketAddr> {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("connected to the server"))?;
        line.split(" addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
