//! The worked agent example against a real `lanyard dev` (whose example policy lets the user's
//! processes read and list `tickets`): `task-tool` serves, `task-orchestrator` runs the whole
//! story, and every step prints what the example promises.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{BufRead as _, BufReader};
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

#[test]
fn an_orchestrator_delegates_calls_a_tool_and_ends_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = state.join("agent.sock");
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
    wait_for(
        "lanyard dev to serve an identity",
        Duration::from_secs(60),
        || {
            let out = lanyard([
                "x509".as_ref(),
                "fetch".as_ref(),
                "--socket".as_ref(),
                socket.as_os_str(),
            ]);
            out.success.then_some(())
        },
    );

    let mut tool = Killed(
        Command::new(env!("CARGO_BIN_EXE_task-tool"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--audience",
                "tickets",
                "--socket",
            ])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(tool.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let out = Command::new(env!("CARGO_BIN_EXE_task-orchestrator"))
        .args(["--tool", &addr, "--on-behalf-of", "user:alice", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = printed.lines().collect();
    let expect = [
        "orchestrator: began task ",
        "orchestrator: GET /tickets -> 200 ok: read",
        "helper: began sub-task ",
        "helper: GET /tickets -> 200 ok: read",
        "helper: POST /tickets -> 403 refused: operation \"write\" was not granted",
        "orchestrator: ended task ",
        "after the end: orchestrator's token -> 401 invalid token: token has been revoked",
        "after the end: helper's token -> 401 invalid token: token has been revoked",
    ];
    assert_eq!(lines.len(), expect.len(), "{printed}");
    for (line, start) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(start),
            "{line:?} does not start with {start:?}\n{printed}"
        );
    }
}
