//! Runs the `workload-load` benchmark tool with tiny numbers against the debug build, so that it
//! keeps building and working. Its figures are not looked at: benchmarks are not tests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};

use lanyard_e2e::lanyard_bin;

#[test]
fn workload_load_runs_and_prints_every_figure() {
    let output = Command::new(env!("CARGO_BIN_EXE_workload-load"))
        .arg("--lanyard")
        .arg(lanyard_bin())
        .args([
            "--clients",
            "20",
            "--samples",
            "5",
            "--rounds",
            "2",
            "--entries",
            "20",
            "--max-seconds",
            "120",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run workload-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "workload-load failed ({:?}):\n{}\n{stdout}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    for row in [
        "| first FetchX509SVID message (new connection + attestation), 1 client |",
        "| FetchJWTSVID (cached), 1 client |",
        "| lanyard dev (server + agent in one process) RSS before → with 20 clients holding open streams |",
        "| first FetchX509SVID message, 1 client timed while 20 others hold open streams |",
        "| FetchJWTSVID (cached), 1 client timed while 20 others hold open streams |",
        "| FetchJWTSVID (cached), 20 clients at once × 2 calls each (",
        "| first FetchX509SVID message, 20 new clients at once × 2 each (",
        "| agent RSS, attested, no entries |",
        "| 20 entries created → all 20 SVIDs served by the agent |",
        "| **agent RSS with 20 cached SVIDs** / peak |",
    ] {
        assert!(stdout.contains(row), "no row `{row}` in:\n{stdout}");
    }
}

#[test]
fn workload_load_refuses_a_bad_command_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_workload-load"))
        .args(["--clients", "many"])
        .stdin(Stdio::null())
        .output()
        .expect("run workload-load");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a number"), "{stderr}");
}
