//! The mTLS echo examples against a real `lanyard dev`: with 10-second SVIDs, a client that makes
//! a new connection every half second keeps succeeding across several rotations, and a client
//! that requires another server ID is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lanyard_e2e::{lanyard, lanyard_bin, wait_for};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn entry(admin: &Path, spiffe_id: &str, exe: &str) {
    lanyard([
        "entry",
        "create",
        "--parent-id",
        "spiffe://example.org/lanyard/agent/dev",
        "--spiffe-id",
        spiffe_id,
        "--selector",
        &format!("unix:path:{exe}"),
        "--x509-ttl",
        "10s",
        "--admin-socket",
        admin.to_str().unwrap(),
    ])
    .ok();
}

#[test]
fn echo_client_and_server_keep_talking_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = state.join("agent.sock");
    let admin = state.join("admin.sock");
    let _dev = Killed(
        Command::new(lanyard_bin())
            .args(["dev", "--dir"])
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("lanyard dev", Duration::from_secs(60), || {
        lanyard([
            "server",
            "healthcheck",
            "--admin-socket",
            admin.to_str().unwrap(),
        ])
        .success
        .then_some(())
    });
    let server_exe = env!("CARGO_BIN_EXE_mtls-echo-server");
    let client_exe = env!("CARGO_BIN_EXE_mtls-echo-client");
    entry(&admin, "spiffe://example.org/echo-server", server_exe);
    entry(&admin, "spiffe://example.org/echo-client", client_exe);

    // The agent learns the entries by push; the server waits for its SVID on its own.
    let mut server = Killed(
        Command::new(server_exe)
            .args([
                "--socket",
                socket.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--allow", "spiffe://example.org/echo-client"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first_line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    assert!(
        first_line.contains("as spiffe://example.org/echo-server"),
        "{first_line}"
    );
    let addr = first_line.split_whitespace().nth(2).unwrap().to_owned();

    // 24 connections, one every 500 ms: 12 s, more than one SVID lifetime and two renewals.
    let out = Command::new(client_exe)
        .args(["--socket", socket.to_str().unwrap(), "--connect", &addr])
        .args([
            "--server-id",
            "spiffe://example.org/echo-server",
            "--count",
            "24",
            "--interval-ms",
            "500",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies = String::from_utf8_lossy(&out.stdout);
    assert_eq!(replies.lines().count(), 24, "{replies}");
    for (i, line) in replies.lines().enumerate() {
        assert_eq!(
            line,
            format!(
                "spiffe://example.org/echo-client: hello #{} from spiffe://example.org/echo-client",
                i + 1
            )
        );
    }

    // A client that requires a different server ID refuses this one.
    let out = Command::new(client_exe)
        .args(["--socket", socket.to_str().unwrap(), "--connect", &addr])
        .args(["--server-id", "spiffe://example.org/someone-else"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the server is not spiffe://example.org/someone-else")
    );
}
