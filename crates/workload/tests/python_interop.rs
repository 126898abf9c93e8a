//! Python `grpcio` (gRPC C-core) against the real server. grpcio sends `:authority` made from the
//! socket path (`…%2Fapi.sock`), which h2 refuses unless the authority adapter rewrites it.
//!
//! Needs `python3`; installs `tests/python/requirements.txt` with pip when `import grpc` fails,
//! so a fresh machine (and CI on a clean clone) runs it too.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::Command;

const PYTHON_TIMEOUT: Duration = Duration::from_secs(300);

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

async fn run(command: &mut Command) -> std::process::Output {
    tokio::time::timeout(
        PYTHON_TIMEOUT,
        command.stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .expect("python timed out")
    .expect("cannot run python3")
}

/// Makes sure `grpc` and `grpc_tools` import, installing them if needed.
async fn ensure_grpcio() {
    let probe = || {
        let mut command = Command::new("python3");
        command.args(["-c", "import grpc, grpc_tools"]);
        command
    };
    if run(&mut probe()).await.status.success() {
        return;
    }
    // flock: the end-to-end Python test may be installing the same packages right now.
    let install = run(Command::new("flock")
        .args([
            "/tmp/lanyard-pip-install.lock",
            "python3",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(python_dir().join("requirements.txt")))
    .await;
    assert!(
        install.status.success(),
        "pip install failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let after = run(&mut probe()).await;
    assert!(
        after.status.success(),
        "grpcio still missing: {}",
        String::from_utf8_lossy(&after.stderr)
    );
}

/// Generates `workload_pb2*.py` from the project's proto into `out`.
async fn generate_stubs(out: &Path) {
    let proto = proto_dir();
    let output = run(Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg(proto.join("workload.proto")))
    .await;
    assert!(
        output.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn python_grpcio_is_served_without_an_authority_override() {
    ensure_grpcio().await;
    let stubs = tempfile::tempdir().unwrap();
    generate_stubs(stubs.path()).await;

    let world = World::new();
    let harness = Harness::start(
        &world,
        world.snapshot(world.standard_identities()),
        caller(),
    )
    .await;
    let output = run(Command::new("python3")
        .arg(python_dir().join("workload_client.py"))
        .arg(&harness.socket)
        .arg(stubs.path()))
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();

    assert_eq!(result["jwt_ids"], serde_json::json!([WEB, DB]));
    assert_eq!(result["validated_id"], WEB);
    assert_eq!(result["validated_sub"], WEB);
    assert_eq!(result["validated_aud"], serde_json::json!(["python"]));
    assert_eq!(result["x509_ids"], serde_json::json!([WEB, DB]));
    assert!(result["x509_key_len"].as_u64().unwrap() > 0);
    assert_eq!(
        result["federated"],
        serde_json::json!(["spiffe://other.org"])
    );
    assert_eq!(
        result["bundle_keys"],
        serde_json::json!(["spiffe://example.org", "spiffe://other.org"])
    );
    assert_eq!(result["no_header"], "INVALID_ARGUMENT");
    assert_eq!(
        result["no_header_message"],
        "security header missing from request"
    );
    assert_eq!(result["many_calls_ok"], result["many_calls"]);
}
