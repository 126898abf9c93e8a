//! Runs the `node-load` benchmark tool with tiny numbers against the debug server, so that it
//! keeps building and working. Its figures are not looked at: benchmarks are not tests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};

use lanyard_e2e::lanyard_bin;

/// Runs node-load with tiny numbers and `extra` flags; returns its table.
fn run_node_load(extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_node-load"))
        .arg("--lanyard")
        .arg(lanyard_bin())
        .args([
            "--propagation",
            "5",
            "--sign-clients",
            "2",
            "--sign-batch",
            "10",
            "--sign-batches",
            "2",
            "--sign-rounds",
            "2",
            "--storm-batches",
            "2",
            "--bare-seconds",
            "0.05",
            "--agents",
            "3",
            "--entries",
            "50",
            "--big",
            "20",
            "--idle-seconds",
            "1",
            "--full-syncs",
            "2",
            "--changes",
            "3",
            "--max-seconds",
            "120",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run node-load");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "node-load failed ({:?}):\n{}\n{stdout}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    for row in [
        "| server RSS idle after start |",
        "| **propagation: create returned → entry on the agent's stream** (t1 − t0)",
        "| **propagation: create returned → agent holds a verified SVID** (t2 − t0)",
        "| **`BatchNewX509Svid` over TLS**: 2 rounds × 2 connections × 2 calls × 10 CSRs = 80 SVIDs |",
        "| bare CA in this process: `Ca::mint_x509_svid_from_csr`",
        "| **over TLS ÷ bare CA**, paired per round",
        "| propagation while 2 connections call `BatchNewX509Svid`",
        "| scale: insert rate per tenth of the entries, first → last |",
        "| one change, 50 entries, only the propagation agent's stream open:",
        "| one `BatchCreateEntries` of 3 entries, only the propagation agent's stream open:",
        "| bare ECDSA P-256 sign (aws-lc-rs, ASN.1), 1 thread |",
        "| **server RSS with 50 entries and 3 open streams** |",
        "| **server CPU, nothing changing, 3 streams open, over 1 s** |",
        "| **server RSS with 50 entries and 3 open streams, after 3 s idle** |",
        "| **big agent full sync: 20 entries**",
        "| **one change with 3 streams open: create returned → on its agent's stream**",
        "| one `BatchCreateEntries` of 3 entries, one per agent, 3 streams open:",
    ] {
        assert!(stdout.contains(row), "no row `{row}` in:\n{stdout}");
    }
    stdout
}

#[test]
fn node_load_runs_every_phase() {
    let table = run_node_load(&[]);
    assert!(table.contains("propagation samples, SQLite"), "{table}");
}

/// The same on a fresh PostgreSQL database (`--postgres`); LANYARD_TEST_POSTGRES names a server
/// (CI sets it).
#[test]
fn node_load_runs_on_postgres() {
    let Ok(postgres) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let table = run_node_load(&["--postgres", &postgres]);
    assert!(table.contains("propagation samples, PostgreSQL"), "{table}");
}

#[test]
fn refuses_bad_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_node-load"))
        .args(["--agents", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run node-load");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--agents"), "{stderr}");
}
