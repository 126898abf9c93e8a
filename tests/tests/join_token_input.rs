//! The agent takes its join token from `--join-token`, `--join-token-file PATH`, the environment
//! variable `LANYARD_JOIN_TOKEN`, or the config file (`join_token`, `join_token_file`): exactly
//! one of them. The token never appears in an error or in `--help`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::{CliOutput, Server, lanyard_bin, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A fresh token and its agent ID.
fn token(server: &Server) -> (String, String) {
    let generated = server
        .cli(&["token", "generate", "--output", "json"])
        .json();
    (
        generated["token"].as_str().unwrap().to_owned(),
        format!(
            "spiffe://example.org/lanyard/agent/join_token/{}",
            generated["token_id"].as_str().unwrap()
        ),
    )
}

fn wait_attested(server: &Server, agent_id: &str) {
    wait_for(&format!("{agent_id} to attest"), WAIT, || {
        let agents = server.cli(&["agent", "list", "--output", "json"]).json();
        agents
            .as_array()?
            .iter()
            .any(|a| a["spiffe_id"] == agent_id)
            .then_some(())
    });
}

#[test]
fn an_agent_attests_with_a_token_from_a_file_or_the_environment() {
    let server = Server::start();

    let (secret, agent_id) = token(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    // As `echo $TOKEN > file` writes it: the trailing newline is not part of the token.
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let _from_file =
        Agent::start_with(&server, &["--join-token-file", file.to_str().unwrap()], &[]);
    wait_attested(&server, &agent_id);

    let (secret, agent_id) = token(&server);
    let from_env = Agent::start_with(&server, &[], &[("LANYARD_JOIN_TOKEN", &secret)]);
    wait_attested(&server, &agent_id);
    assert!(!from_env.log().contains(&secret), "{}", from_env.log());
}

/// Runs `lanyard agent run` with `args` and `env`, which must fail before it contacts anything
/// (the server address is unreachable anyway), and returns its output.
fn agent_run_fails(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut child = Command::new(lanyard_bin())
        .args([
            "agent",
            "run",
            "--trust-domain",
            "example.org",
            "--server",
            "127.0.0.1:1",
            "--insecure-bootstrap",
            "--socket",
        ])
        .arg(dir.join("agent.sock"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .env_remove("LANYARD_JOIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{args:?} {env:?}: the agent did not refuse its configuration within {WAIT:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let out = CliOutput {
        success: exited.success(),
        code: exited.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(!out.success, "{args:?} should have failed: {}", out.stderr);
    out
}

#[test]
fn two_token_sources_at_once_are_refused_without_printing_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flag = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
    let env = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
    let in_file = "ccccccccccccccccccccccccccccccc3";
    let in_config = "ddddddddddddddddddddddddddddddd4";
    let file = dir.join("token");
    std::fs::write(&file, format!("{in_file}\n")).unwrap();
    let file = file.to_str().unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(&config, format!("join_token = \"{in_config}\"\n")).unwrap();
    let config = config.to_str().unwrap();
    let secrets = [flag, env, in_file, in_config];

    // (arguments, environment, the two sources the error must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, [&'a str; 2]);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["--join-token", flag],
            vec![("LANYARD_JOIN_TOKEN", env)],
            ["--join-token", "LANYARD_JOIN_TOKEN"],
        ),
        (
            vec!["--join-token-file", file],
            vec![("LANYARD_JOIN_TOKEN", env)],
            ["--join-token-file", "LANYARD_JOIN_TOKEN"],
        ),
        (
            vec!["--join-token", flag, "--join-token-file", file],
            vec![],
            ["--join-token", "--join-token-file"],
        ),
        (
            vec!["--config", config, "--join-token", flag],
            vec![],
            ["--join-token", "join_token"],
        ),
    ];
    for (args, env, named) in cases {
        let out = agent_run_fails(dir, &args, &env);
        let line = out.err();
        assert!(
            line.contains("more than one") && named.iter().all(|n| line.contains(n)),
            "{args:?} {env:?}: {line}"
        );
        for secret in secrets {
            assert!(!out.stderr.contains(secret), "{args:?}: {}", out.stderr);
            assert!(!out.stdout.contains(secret), "{args:?}: {}", out.stdout);
        }
    }
}

#[test]
fn a_bad_token_file_is_refused_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let write = |name: &str, content: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let secret = "s3cr3t-with a space";
    let cases = [
        (write("empty", b"\n  \n"), "is empty".to_owned()),
        (
            write("big", "x".repeat(5000).as_bytes()),
            "bytes".to_owned(),
        ),
        (
            write("bad", format!("{secret}\n").as_bytes()),
            "characters".to_owned(),
        ),
        (
            dir.join("missing").to_str().unwrap().to_owned(),
            "cannot read".to_owned(),
        ),
    ];
    for (path, why) in cases {
        let out = agent_run_fails(dir, &["--join-token-file", &path], &[]);
        let line = out.err();
        assert!(
            line.contains(&path) && line.contains(&why),
            "{path}: {line}"
        );
        assert!(
            !out.stderr.contains("s3cr3t") && !out.stderr.contains("xxxxxxxx"),
            "{line}"
        );
    }
    // The environment variable is checked the same way, and not echoed either.
    let out = agent_run_fails(dir, &[], &[("LANYARD_JOIN_TOKEN", secret)]);
    let line = out.err();
    assert!(line.contains("LANYARD_JOIN_TOKEN"), "{line}");
    assert!(!out.stderr.contains("s3cr3t"), "{line}");
}

#[test]
fn help_names_the_variable_but_not_its_value() {
    let secret = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeee5";
    let output = Command::new(lanyard_bin())
        .args(["agent", "run", "--help"])
        .env("LANYARD_JOIN_TOKEN", secret)
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("LANYARD_JOIN_TOKEN"), "{help}");
    assert!(help.contains("--join-token-file"), "{help}");
    assert!(!help.contains(secret), "{help}");
}
