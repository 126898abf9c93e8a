//! Operating the server: health and metrics over HTTP, and a CA under an upstream authority.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::Duration;

use lanyard_e2e::{Server, wait_for};

/// A plain HTTP/1.1 GET; returns (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn health_and_metrics_are_served_over_http() {
    let server = Server::start_with(&["--health-bind", "127.0.0.1:0"]);
    let addr = wait_for(
        "the health endpoint's address in the log",
        Duration::from_secs(30),
        || {
            let log = server.log();
            let line = log
                .lines()
                .find(|l| l.contains("health endpoint listening"))?;
            let addr = line
                .split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_owned();
            Some(addr)
        },
    );
    assert_eq!(get(&addr, "/live"), (200, "ok\n".to_owned()));
    assert_eq!(get(&addr, "/ready"), (200, "ready\n".to_owned()));
    assert_eq!(get(&addr, "/nope").0, 404);

    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            "spiffe://example.org/a",
            "--spiffe-id",
            "spiffe://example.org/b",
            "--selector",
            "k:v",
        ])
        .ok();
    server
        .cli(&["x509", "mint", "--spiffe-id", "spiffe://example.org/b"])
        .ok();
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    for expected in [
        "lanyard_server_rpc_requests_total{method=\"BatchCreateEntries\",code=\"Ok\"} 1",
        "lanyard_server_rpc_duration_seconds_count{method=\"MintX509Svid\"} 1",
        "lanyard_server_svids_signed_total{kind=\"x509\"} 1",
        "lanyard_server_entries 1",
        "lanyard_server_agents 0",
        "lanyard_server_ca_expires_at_seconds ",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_ca_under_an_upstream_authority_chains_to_the_upstream_root() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An upstream root made by openssl, nothing of ours.
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "up.key",
        ],
        d,
    );
    openssl(
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "up.key",
            "-out",
            "up.pem",
            "-days",
            "30",
            "-subj",
            "/O=Upstream/CN=root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        d,
    );
    let config = d.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream_authority]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            d.join("up.pem").display(),
            d.join("up.key").display()
        ),
    )
    .unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);

    // The bundle holds the upstream root, not our intermediate.
    let bundle = server.cli(&["bundle", "show"]).ok().to_owned();
    let upstream = std::fs::read_to_string(d.join("up.pem")).unwrap();
    assert_eq!(bundle.trim(), upstream.trim());

    let out = d.join("svid");
    server
        .cli(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/w",
            "--write",
            out.to_str().unwrap(),
        ])
        .ok();
    let chain = std::fs::read_to_string(out.join("svid.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and our intermediate"
    );
    openssl(
        &[
            "verify",
            "-CAfile",
            "up.pem",
            "-untrusted",
            "svid/svid.pem",
            "-purpose",
            "sslclient",
            "svid/svid.pem",
        ],
        d,
    );
}
