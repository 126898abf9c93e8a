//! `lanyard server run` driven only through the `lanyard` CLI: entries, tokens, bundles, minting.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::Command;

use lanyard_e2e::{Server, lanyard};
use serde_json::Value;

const AGENT: &str = "spiffe://example.org/agent/a";

fn create(server: &Server, spiffe_id: &str, selectors: &[&str]) -> Value {
    let mut args = vec![
        "entry",
        "create",
        "--parent-id",
        AGENT,
        "--spiffe-id",
        spiffe_id,
    ];
    for selector in selectors {
        args.extend(["--selector", selector]);
    }
    args.extend(["--output", "json"]);
    server.cli(&args).json()
}

fn listed_ids(server: &Server, filter: &[&str]) -> Vec<String> {
    let mut args = vec!["entry", "list", "--output", "json"];
    args.extend_from_slice(filter);
    let mut ids: Vec<String> = server
        .cli(&args)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["spiffe_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn entries_can_be_created_listed_filtered_updated_and_deleted() {
    let server = Server::start();
    let web = create(&server, "spiffe://example.org/web", &["unix:uid:1000"]);
    let db = create(
        &server,
        "spiffe://example.org/db",
        &["unix:uid:1000", "unix:gid:50"],
    );
    create(&server, "spiffe://example.org/cache", &["unix:uid:2000"]);
    assert_eq!(web["x509_svid_ttl_seconds"], 3600, "default X509-SVID TTL");
    assert_eq!(web["jwt_svid_ttl_seconds"], 300, "default JWT-SVID TTL");
    assert!(db["revision"].as_u64().unwrap() > web["revision"].as_u64().unwrap());

    assert_eq!(listed_ids(&server, &[]).len(), 3);
    assert_eq!(
        listed_ids(&server, &["--spiffe-id", "spiffe://example.org/db"]),
        ["spiffe://example.org/db"]
    );
    assert_eq!(
        listed_ids(&server, &["--parent-id", "spiffe://example.org/other"]),
        Vec::<String>::new()
    );
    let uid1000 = ["spiffe://example.org/db", "spiffe://example.org/web"];
    assert_eq!(
        listed_ids(&server, &["--selector", "unix:uid:1000"]),
        uid1000,
        "superset is the default"
    );
    assert_eq!(
        listed_ids(
            &server,
            &["--selector", "unix:uid:1000", "--match", "exact"]
        ),
        ["spiffe://example.org/web"]
    );
    assert_eq!(
        listed_ids(
            &server,
            &[
                "--selector",
                "unix:uid:1000",
                "--selector",
                "unix:gid:50",
                "--match",
                "subset"
            ]
        ),
        uid1000
    );
    assert_eq!(
        listed_ids(
            &server,
            &[
                "--selector",
                "unix:gid:50",
                "--selector",
                "unix:uid:2000",
                "--match",
                "any"
            ]
        ),
        ["spiffe://example.org/cache", "spiffe://example.org/db"]
    );

    // The text table is aligned and names every entry.
    let table = server.cli(&["entry", "list"]).ok().to_owned();
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    let id = web["id"].as_str().unwrap();
    let shown = server
        .cli(&["entry", "show", "--id", id, "--output", "json"])
        .json();
    assert_eq!(shown, web);

    let updated = server
        .cli(&[
            "entry",
            "update",
            "--id",
            id,
            "--parent-id",
            AGENT,
            "--spiffe-id",
            "spiffe://example.org/web2",
            "--selector",
            "unix:uid:1001",
            "--x509-ttl",
            "30m",
            "--dns",
            "web.example.org",
            "--hint",
            "blue",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(updated["spiffe_id"], "spiffe://example.org/web2");
    assert_eq!(updated["x509_svid_ttl_seconds"], 1800);
    assert_eq!(updated["dns_names"][0], "web.example.org");
    assert_eq!(updated["hint"], "blue");
    assert!(updated["revision"].as_u64().unwrap() > db["revision"].as_u64().unwrap());

    server.cli(&["entry", "delete", "--id", id]).ok();
    let err = server.cli(&["entry", "show", "--id", id]).err().to_owned();
    assert!(err.contains("NotFound"), "{err}");
    let err = server
        .cli(&["entry", "delete", "--id", id])
        .err()
        .to_owned();
    assert!(err.contains("not found"), "{err}");
    assert_eq!(listed_ids(&server, &[]).len(), 2);
}

#[test]
fn a_duplicate_entry_is_refused() {
    let server = Server::start();
    create(
        &server,
        "spiffe://example.org/web",
        &["unix:uid:1000", "unix:gid:1"],
    );
    let out = server.cli(&[
        "entry",
        "create",
        "--parent-id",
        AGENT,
        "--spiffe-id",
        "spiffe://example.org/web",
        "--selector",
        "unix:gid:1",
        "--selector",
        "unix:uid:1000",
    ]);
    let err = out.err();
    assert!(err.contains("AlreadyExists"), "{err}");
    assert_eq!(out.code, Some(1));
}

#[test]
fn join_tokens_are_generated() {
    let server = Server::start();
    let token = server
        .cli(&["token", "generate", "--ttl", "1m", "--output", "json"])
        .json();
    let secret = token["token"].as_str().unwrap();
    assert_eq!(secret.len(), 32);
    assert!(token["expires_at"].as_i64().unwrap() > 0);
    let other = server
        .cli(&["token", "generate", "--output", "json"])
        .json();
    assert_ne!(other["token"], token["token"]);
    let bound = server
        .cli(&[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://example.org/lanyard/agent/node/1",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(
        bound["spiffe_id"],
        "spiffe://example.org/lanyard/agent/node/1"
    );
    assert_eq!(bound["alias_entry_id"], "");
    // Any other ID of the trust domain is a node alias for the agent (tests/join_token_alias.rs).
    let aliased = server
        .cli(&[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://example.org/web",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(aliased["spiffe_id"], "spiffe://example.org/web");
    assert_ne!(aliased["alias_entry_id"], "");
    let err = server
        .cli(&[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://other.org/lanyard/agent/x",
        ])
        .err()
        .to_owned();
    assert!(
        err.contains("is not in trust domain `example.org`"),
        "{err}"
    );
}

#[test]
fn minted_svids_verify_with_openssl_against_the_bundle() {
    let server = Server::start();
    let bundle_pem = server
        .cli(&["bundle", "show", "--format", "pem"])
        .ok()
        .to_owned();
    let bundle_path = server.dir.join("bundle.pem");
    std::fs::write(&bundle_path, &bundle_pem).unwrap();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&bundle_path)
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("URI:spiffe://example.org\n"), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");

    let out_dir = server.dir.join("svid");
    let out = server.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/batch",
        "--dns",
        "batch.example.org",
        "--ttl",
        "10m",
        "--write",
        out_dir.to_str().unwrap(),
    ]);
    out.ok();
    for purpose in ["sslclient", "sslserver"] {
        let verify = Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(&bundle_path)
            .arg(out_dir.join("svid.pem"))
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{purpose}: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    // The key file is private and matches the certificate.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out_dir.join("svid.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let pubkey = |args: &[&str], file: &str| {
        let out = Command::new("openssl")
            .args(args)
            .arg(out_dir.join(file))
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in"], "svid.pem"),
        pubkey(&["pkey", "-pubout", "-in"], "svid.key")
    );

    let spiffe = server
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();
    let doc: Value = serde_json::from_str(&spiffe).unwrap();
    let uses: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["use"].as_str().unwrap())
        .collect();
    assert!(
        uses.contains(&"x509-svid") && uses.contains(&"jwt-svid"),
        "{spiffe}"
    );
    assert!(doc["spiffe_sequence"].as_u64().unwrap() >= 1);

    let token = server
        .cli(&[
            "jwt",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/batch",
            "--audience",
            "db",
        ])
        .ok()
        .trim()
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
}

#[test]
fn federated_bundles_can_be_set_listed_and_deleted() {
    let server = Server::start();
    let foreign = Server::start_in_trust_domain("other.org");
    let foreign_json = foreign
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();
    let path = server.dir.join("other.json");
    std::fs::write(&path, &foreign_json).unwrap();

    let set = server
        .cli(&[
            "bundle",
            "set",
            "--trust-domain",
            "other.org",
            "--path",
            path.to_str().unwrap(),
            "--output",
            "json",
        ])
        .json();
    assert_eq!(set[0]["trust_domain"], "other.org");
    let listed = server.cli(&["bundle", "list", "--output", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["trust_domain"], "other.org");

    let err = server
        .cli(&[
            "bundle",
            "set",
            "--trust-domain",
            "example.org",
            "--path",
            path.to_str().unwrap(),
        ])
        .err()
        .to_owned();
    assert!(err.contains("own trust domain"), "{err}");
    std::fs::write(&path, "{\"not\": \"a bundle\"}").unwrap();
    let err = server
        .cli(&[
            "bundle",
            "set",
            "--trust-domain",
            "third.org",
            "--path",
            path.to_str().unwrap(),
        ])
        .err()
        .to_owned();
    assert!(err.contains("spiffe_json"), "{err}");

    server
        .cli(&["bundle", "delete", "--trust-domain", "other.org"])
        .ok();
    assert_eq!(
        server
            .cli(&["bundle", "list", "--output", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn sigterm_stops_the_server_cleanly_and_removes_the_socket() {
    let mut server = Server::start();
    assert!(server.admin_socket.exists());
    assert!(server.terminate(), "clean exit:\n{}", server.log());
    assert!(!server.admin_socket.exists());
}

#[test]
fn the_usage_is_printed_without_arguments() {
    let out = lanyard(Vec::<&str>::new());
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("Usage: lanyard <COMMAND>"),
        "{}",
        out.stderr
    );
    for command in ["server", "entry", "token", "agent", "bundle", "x509", "jwt"] {
        assert!(out.stderr.contains(command), "{command}");
    }
}
