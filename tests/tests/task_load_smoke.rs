//! Runs the `task-load` benchmark tool with tiny numbers against the debug build, so that it
//! keeps building and working. Its figures are not looked at: benchmarks are not tests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};

use lanyard_e2e::lanyard_bin;

#[test]
fn task_load_runs_and_prints_every_figure() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_task-load"));
    command.arg("--lanyard").arg(lanyard_bin()).args([
        "--policies",
        "1,20",
        "--clients",
        "3",
        "--seconds",
        "0.2",
        "--records",
        "20",
        "--revocations",
        "3",
        "--max-seconds",
        "120",
    ]);
    let postgres = std::env::var("LANYARD_TEST_POSTGRES").ok();
    if let Some(url) = &postgres {
        command.args(["--postgres", url]);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("run task-load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "task-load failed ({:?}):\n{}\n{stdout}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rows = vec![
        "| bare task JWT-SVID minting (lanyard-ca, ES256, 1 thread) |",
        "| audit appends, SQLite, durable, 1 writer / 3 writers |",
        "| grant latency, 1 policies, 1 caller: p50 / p99 |",
        "| **grants, 1 policies, 3 callers**: p50 / p99; rate; CPU |",
        "| grant latency, 20 policies, 1 caller: p50 / p99 |",
        "| **grants, 20 policies, 3 callers**: p50 / p99; rate; CPU |",
        "| **revocation: EndTask returned at agent A → agent B refuses the token**, one server, 3 tasks: p50 / p99 / max |",
    ];
    if postgres.is_some() {
        rows.push("| audit appends, PostgreSQL, durable, 1 writer / 3 writers |");
        rows.push("| **revocation: EndTask returned at agent A → agent B refuses the token**, two servers on one PostgreSQL (A on one, B on the other), 3 tasks: p50 / p99 / max |");
    }
    for row in rows {
        assert!(stdout.contains(row), "no row `{row}` in:\n{stdout}");
    }
}

#[test]
fn task_load_refuses_a_bad_command_line() {
    for args in [
        &["--clients", "many"][..],
        &["--policies", "0"],
        &["--seconds", "-1"],
        &["--revocations", "some"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_task-load"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run task-load");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
