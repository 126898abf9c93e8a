//! Runs the `ha-load` benchmark tool with tiny numbers against the debug server, so that it keeps
//! building and working. Its figures are not looked at: benchmarks are not tests. Runs when
//! LANYARD_TEST_POSTGRES names a server (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};

use lanyard_e2e::lanyard_bin;

#[test]
fn ha_load_runs_every_phase() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let output = Command::new(env!("CARGO_BIN_EXE_ha-load"))
        .arg("--lanyard")
        .arg(lanyard_bin())
        .args(["--postgres", &admin_url])
        .args(["--entries", "5", "--burst", "20", "--evictions", "3"])
        // The backstop poll practically off: the figures are the notices'.
        .args(["--poll-interval", "1h", "--max-seconds", "120"])
        .stdin(Stdio::null())
        .output()
        .expect("run ha-load");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "ha-load failed ({:?}):\n{}\n{stdout}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    for row in [
        "| **entry: A's ack → on B's stream**, 5 entries: p50 / p99 / max |",
        "| entry: A's ack → on A's stream (the writing server), 5 entries |",
        "| burst: one BatchCreateEntries of 20, A's ack → all on B's stream (on A's) |",
        "| **eviction: EvictAgent's ack at A → B ends the agent's stream**, 3 agents: p50 / p99 / max |",
    ] {
        assert!(stdout.contains(row), "no row `{row}` in:\n{stdout}");
    }
}
