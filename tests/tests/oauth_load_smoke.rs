//! Runs the `oauth-load` benchmark tool with tiny numbers against the debug build, so that it
//! keeps building and working. Its figures are not looked at: benchmarks are not tests; but every
//! request must have been answered with a token, or the tool fails.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};

use lanyard_e2e::lanyard_bin;

#[test]
fn oauth_load_runs_and_prints_every_figure() {
    let output = Command::new(env!("CARGO_BIN_EXE_oauth-load"))
        .arg("--lanyard")
        .arg(lanyard_bin())
        .args(["--clients", "3", "--seconds", "0.2", "--max-seconds", "120"])
        .stdin(Stdio::null())
        .output()
        .expect("run oauth-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "oauth-load failed ({:?}):\n{}\n{stdout}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    for row in [
        "| bare access token minting (`Ca::mint_access_token`, ES256, 1 thread) |",
        "| bare client assertion verification (`verify_jwt_svid`, ES256, 1 thread) |",
        "| token requests, 1 client: p50 / p99; rate; CPU |",
        "| **token requests, 3 clients**: p50 / p99; rate; CPU |",
        "| bare access token minting ÷ token endpoint (3 clients) |",
        "| failed requests (not 200 with an access_token) | 0 of ",
        "| load average (1, 5, 15 min) at start / at end |",
    ] {
        assert!(stdout.contains(row), "no row `{row}` in:\n{stdout}");
    }
}

#[test]
fn oauth_load_refuses_a_bad_command_line() {
    for args in [
        &["--clients", "many"][..],
        &["--clients", "0"],
        &["--seconds", "-1"],
        &["--max-seconds", "0"],
        &["--unknown", "1"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_oauth-load"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run oauth-load");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
