//! Clients in other languages against a real `lanyard dev` process: OpenSSL (`s_server` and
//! `s_client` with the PEM files `lanyard x509 fetch --write` writes) and Python `grpcio` (gRPC
//! C-core) on the agent's socket without an authority override.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lanyard_e2e::lanyard_bin;
use lanyard_e2e::python::{ensure_python_packages, repo_root};
use lanyard_e2e::running::Running;
use lanyard_e2e::workload::{Dev, free_port, lanyard_at, output_within};

/// How long one external program (openssl, python) may run.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

// === OpenSSL ===

const SERVER_ID: &str = "spiffe://example.org/openssl/server";

/// `openssl s_server` on a free loopback port with the files in `dir`, requiring a client
/// certificate that verifies against `dir/bundle.pem`, for one connection. Returns once it
/// accepts.
fn s_server(dir: &Path) -> (Running, u16) {
    let port = free_port();
    let server = Running::spawn(
        Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(dir.join("svid.pem"))
            .arg("-key")
            .arg(dir.join("svid.key"))
            .arg("-CAfile")
            .arg(dir.join("bundle.pem"))
            .args(["-Verify", "1", "-verify_return_error", "-naccept", "1"]),
        PROGRAM_TIMEOUT,
    );
    let mut seen = Vec::new();
    server.wait_for_line("ACCEPT", &mut seen);
    (server, port)
}

/// `openssl s_client` to `port`, sending one line; `args` name its certificate, key and CA file.
fn s_client(port: u16, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut client = Running::spawn(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-verify_return_error", "-showcerts"])
            .args(args),
        PROGRAM_TIMEOUT,
    );
    // s_client may be gone already (a refused handshake): finish reports that.
    let _ = client.send("hello from s_client\n");
    client.finish(Vec::new())
}

fn file_args(dir: &Path, with_cert: bool) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if with_cert {
        args.extend(["-cert".into(), dir.join("svid.pem").into()]);
        args.extend(["-key".into(), dir.join("svid.key").into()]);
    }
    args.extend(["-CAfile".into(), dir.join("bundle.pem").into()]);
    args
}

/// The URI SAN of the first certificate `s_client -showcerts` printed: the server's leaf.
fn first_cert_uri(s_client_output: &str) -> String {
    let start = s_client_output
        .find("-----BEGIN CERTIFICATE-----")
        .expect("s_client printed no certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&s_client_output.as_bytes()[start..]).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN");
    san.value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .expect("a URI SAN")
}

#[test]
fn openssl_s_server_and_s_client_do_mtls_with_fetched_files() {
    let dev = Dev::start();
    let me = dev.fetched_ids(&lanyard_bin(), None).unwrap();
    assert_eq!(me.len(), 1, "{me:?}");
    // A second identity: `lanyard` at another path, registered by that path. Its default SVID is
    // the first by SPIFFE ID, `…/openssl/server`.
    let server_exe = lanyard_at(&dev.scratch().join("bin"), "lanyard");
    dev.create_entry(
        SERVER_ID,
        &[&format!("unix:path:{}", server_exe.display())],
        &[],
    );
    dev.wait_for_ids(&server_exe, None, &[SERVER_ID, &me[0]]);

    let write = |program: &PathBuf, dir: &Path| {
        dev.workload_cli(
            program,
            None,
            &["x509", "fetch", "--write", dir.to_str().unwrap()],
        )
        .ok();
        let mode = std::fs::metadata(dir.join("svid.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "svid.key must be 0600");
    };
    let server_dir = dev.scratch().join("server-files");
    let client_dir = dev.scratch().join("client-files");
    write(&server_exe, &server_dir);
    write(&lanyard_bin(), &client_dir);

    // The handshake completes both ways verified, and the line arrives.
    let (server, port) = s_server(&server_dir);
    let client_args = file_args(&client_dir, true);
    let args: Vec<&std::ffi::OsStr> = client_args.iter().map(|a| a.as_os_str()).collect();
    let (client_ok, client_out) = s_client(port, &args);
    let (server_ok, server_out) = server.finish(Vec::new());
    assert!(
        client_ok,
        "s_client failed:\n{client_out}\ns_server:\n{server_out}"
    );
    assert!(
        client_out.contains("Verify return code: 0 (ok)"),
        "{client_out}"
    );
    assert_eq!(first_cert_uri(&client_out), SERVER_ID);
    assert!(server_ok, "s_server failed:\n{server_out}");
    assert!(
        server_out.contains("hello from s_client"),
        "s_server did not receive the line:\n{server_out}"
    );

    // Without a client certificate the server refuses (-Verify 1 -verify_return_error)…
    let (server, port) = s_server(&server_dir);
    let no_cert = file_args(&client_dir, false);
    let args: Vec<&std::ffi::OsStr> = no_cert.iter().map(|a| a.as_os_str()).collect();
    let (_, client_out) = s_client(port, &args);
    let (_, server_out) = server.finish(Vec::new());
    assert!(
        !server_out.contains("hello from s_client"),
        "a client without a certificate got through:\n{server_out}\n{client_out}"
    );

    // …and a client that trusts only its own leaf (not a CA) refuses the server.
    let (server, port) = s_server(&server_dir);
    let wrong_ca: Vec<std::ffi::OsString> = vec![
        "-cert".into(),
        client_dir.join("svid.pem").into(),
        "-key".into(),
        client_dir.join("svid.key").into(),
        "-CAfile".into(),
        client_dir.join("svid.pem").into(),
    ];
    let args: Vec<&std::ffi::OsStr> = wrong_ca.iter().map(|a| a.as_os_str()).collect();
    let (client_ok, client_out) = s_client(port, &args);
    drop(server);
    assert!(
        !client_ok,
        "s_client accepted an unverifiable server:\n{client_out}"
    );
}

// === Python grpcio ===

/// Makes sure `grpc` and `grpc_tools` import (pip installs the workload crate's pinned
/// requirements on a fresh machine).
fn ensure_grpcio() {
    ensure_python_packages(
        "grpc, grpc_tools",
        "crates/workload/tests/python/requirements.txt",
    );
}

/// Generates `workload_pb2*.py` from the project's proto into `out`.
fn generate_stubs(out: &Path) {
    let proto = repo_root().join("proto");
    let output = output_within(
        Command::new("python3")
            .args(["-m", "grpc_tools.protoc"])
            .arg(format!("-I{}", proto.display()))
            .arg(format!("--python_out={}", out.display()))
            .arg(format!("--grpc_python_out={}", out.display()))
            .arg(proto.join("workload.proto")),
        PROGRAM_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json_line(python: &Running, seen: &mut Vec<String>, marker: &str) -> serde_json::Value {
    python.wait_for_line(marker, seen);
    serde_json::from_str(seen.last().unwrap()).unwrap()
}

#[test]
fn python_grpcio_is_served_on_the_real_socket_without_an_authority_override() {
    ensure_grpcio();
    let dev = Dev::start();
    let stubs = dev.scratch().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    generate_stubs(&stubs);
    // python3 runs as this user: it holds the user's identity.
    let me = dev.fetched_ids(&lanyard_bin(), None).unwrap();

    let python = Running::spawn(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/workload_agent.py"))
            .arg(&dev.socket)
            .arg(&stubs),
        PROGRAM_TIMEOUT,
    );
    let mut seen = Vec::new();
    let result = json_line(&python, &mut seen, "\"many_calls\"");
    assert_eq!(result["jwt_ids"], serde_json::json!(me));
    assert_eq!(result["validated_id"], me[0]);
    assert_eq!(result["validated_aud"], serde_json::json!(["python"]));
    assert_eq!(
        result["x509_bundle_keys"],
        serde_json::json!(["spiffe://example.org"])
    );
    assert_eq!(
        result["jwt_bundle_keys"],
        serde_json::json!(["spiffe://example.org"])
    );
    assert_eq!(result["no_header"], "INVALID_ARGUMENT");
    assert_eq!(result["many_calls_ok"], result["many_calls"]);

    let first = json_line(&python, &mut seen, "\"phase\": \"first\"");
    assert_eq!(first["ids"], serde_json::json!(me));
    assert!(first["key_len"].as_u64().unwrap() > 0);
    assert!(first["bundle_len"].as_u64().unwrap() > 0);

    // A new entry for this user reaches the open stream as a new full message.
    let uid = rustix::process::getuid().as_raw();
    let extra = "spiffe://example.org/python/extra";
    dev.create_entry(extra, &[&format!("unix:uid:{uid}")], &[]);
    let update = json_line(&python, &mut seen, "\"phase\": \"update\"");
    assert_eq!(update["ids"], serde_json::json!([extra, me[0].as_str()]));
    let (ok, output) = python.finish(seen);
    assert!(ok, "python failed:\n{output}");
}
