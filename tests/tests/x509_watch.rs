//! `lanyard x509 watch --write DIR --exec CMD`: for software that reads only PEM files, the files
//! are rewritten on every rotation and the command runs after each rewrite.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::{Server, lanyard_bin, wait_for};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_rewrites_the_files_and_runs_the_command_on_every_rotation() {
    let server = Server::start();
    let uid = rustix::process::getuid().as_raw();
    let agent_id = "spiffe://example.org/lanyard/agent/watcher";
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            agent_id,
            "--spiffe-id",
            "spiffe://example.org/nginx",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--x509-ttl",
            "6s",
        ])
        .ok();
    let agent = Agent::start(&server, agent_id);
    let out = agent.dir.join("pem");
    let marker = agent.dir.join("reloads");
    let _watch = Killed(
        Command::new(lanyard_bin())
            .args([
                "x509",
                "watch",
                "--socket",
                agent.socket.to_str().unwrap(),
                "--write",
                out.to_str().unwrap(),
            ])
            .args(["--exec", &format!("echo reload >> {}", marker.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // A 6 s SVID renews about every 3 s: wait for three reloads.
    let reloads = || {
        std::fs::read_to_string(&marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let first_pem = wait_for("the first write", Duration::from_secs(30), || {
        std::fs::read_to_string(out.join("svid.pem")).ok()
    });
    wait_for("three reloads", Duration::from_secs(60), || {
        (reloads() >= 3).then_some(())
    });
    let later_pem = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    assert_ne!(
        first_pem, later_pem,
        "the certificate file is rewritten on rotation"
    );

    // Whatever moment a reader picks, the files verify together.
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
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(out.join("svid.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}
