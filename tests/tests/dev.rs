//! `lanyard dev`: one command brings up a server, an agent and an identity for the current user,
//! and `lanyard x509 fetch` in another process then shows that identity.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use lanyard_e2e::{lanyard, lanyard_bin, wait_for};

#[test]
fn dev_serves_an_identity_for_the_current_user_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = state.join("agent.sock");
    let uid = rustix::process::getuid().as_raw();

    for round in 0..2 {
        let mut dev = Command::new(lanyard_bin())
            .args(["dev", "--dir"])
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let fetched = wait_for(
            "an identity from lanyard dev",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = dev.try_wait() {
                    panic!("lanyard dev exited with {status} in round {round}");
                }
                let out = lanyard([
                    "x509",
                    "fetch",
                    "--output",
                    "json",
                    "--socket",
                    socket.to_str().unwrap(),
                ]);
                out.success.then(|| out.json())
            },
        );
        let id = fetched["svids"][0]["spiffe_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(id.starts_with("spiffe://example.org/user/"), "{id}");

        // The files it writes verify with openssl against the bundle it writes.
        let out = dir.path().join(format!("out{round}"));
        lanyard([
            "x509",
            "fetch",
            "--socket",
            socket.to_str().unwrap(),
            "--write",
            out.to_str().unwrap(),
        ])
        .ok();
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(out.join("bundle.pem"))
            .arg(out.join("svid.pem"))
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );

        // The unix:uid entry was made for this user.
        let entries = lanyard([
            "entry",
            "list",
            "--output",
            "json",
            "--admin-socket",
            state.join("admin.sock").to_str().unwrap(),
        ])
        .json();
        let entries = entries.as_array().unwrap();
        assert_eq!(
            entries.len(),
            1,
            "a restart must not register the user twice"
        );
        assert_eq!(entries[0]["selectors"][0], format!("unix:uid:{uid}"));

        // SIGTERM stops it cleanly; it prints how to use it.
        Command::new("kill")
            .arg("-TERM")
            .arg(dev.id().to_string())
            .status()
            .unwrap();
        assert!(dev.wait().unwrap().success());
        let mut printed = String::new();
        dev.stdout
            .take()
            .unwrap()
            .read_to_string(&mut printed)
            .unwrap();
        assert!(
            printed.contains("export SPIFFE_ENDPOINT_SOCKET=unix://"),
            "{printed}"
        );
        // It says it installed the example grant policy, and where.
        assert!(
            printed.contains("example policy in") && printed.contains("dev-example.cedar"),
            "{printed}"
        );
        assert!(state.join("policies/dev-example.cedar").is_file());
        assert!(
            !socket.exists(),
            "the Workload API socket is removed on exit"
        );
    }
}
