//! Runs the `admin-load` benchmark tool with tiny numbers against the debug server, so that it
//! keeps building and working. Its figures are not looked at: benchmarks are not tests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};

use lanyard_e2e::lanyard_bin;

fn run_admin_load(extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_admin-load"))
        .arg("--lanyard")
        .arg(lanyard_bin())
        .args([
            "--entries",
            "200",
            "--batch",
            "50",
            "--page-size",
            "100",
            "--samples",
            "3",
            "--full-lists",
            "1",
            "--max-seconds",
            "120",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run admin-load");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "admin-load failed ({:?}):\n{}\n{stdout}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every figure the tool prints has a row in its table.
fn assert_complete(table: &str) {
    for row in [
        "| server RSS idle after start |",
        "| create 200 entries (4 × BatchCreateEntries of 50",
        "| ListEntries: all 200 entries in pages of 100 (2 calls)",
        "| ListEntries by spiffe_id (1 match)",
        "| ListEntries by parent_id",
        "| ListEntries by selector, exact",
        "| server RSS with 200 entries",
        "| raw datastore (no server, no gRPC): create 200",
    ] {
        assert!(table.contains(row), "no row `{row}` in:\n{table}");
    }
}

#[test]
fn sqlite() {
    assert_complete(&run_admin_load(&["--datastore", "sqlite"]));
}

#[test]
fn postgres() {
    let Ok(url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    assert_complete(&run_admin_load(&[
        "--datastore",
        "postgres",
        "--postgres-url",
        &url,
    ]));
}

#[test]
fn refuses_a_postgres_server_elsewhere() {
    let output = Command::new(env!("CARGO_BIN_EXE_admin-load"))
        .args([
            "--datastore",
            "postgres",
            "--postgres-url",
            "postgres://postgres@192.0.2.1:5432/postgres",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run admin-load");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not loopback"), "{stderr}");
}
