//! Wrong, empty, absurd and hostile input gets a clear one-line error, and the server keeps running.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use lanyard_e2e::{Server, lanyard};

const PARENT: &str = "spiffe://example.org/agent";

/// Runs `args` against the server, expects a one-line error mentioning `expected`, with `code`.
#[track_caller]
fn refused(server: &Server, args: &[&str], expected: &str, code: i32) {
    let out = server.cli(args);
    let line = out.err();
    assert!(
        line.contains(expected),
        "{args:?}: expected {expected:?} in {line:?}"
    );
    assert_eq!(out.code, Some(code), "{args:?}: {line}");
    // clap adds a "For more information" hint after usage errors; the error itself is one line.
    let first = line.lines().next().unwrap();
    assert!(first.starts_with("error:"), "{first}");
}

#[test]
fn malformed_arguments_are_refused_at_the_door() {
    let server = Server::start();
    let create = |spiffe_id: &'static str, selector: &'static str| {
        vec![
            "entry",
            "create",
            "--parent-id",
            PARENT,
            "--spiffe-id",
            spiffe_id,
            "--selector",
            selector,
        ]
    };
    // Usage errors (exit 2), caught by the CLI before anything is sent.
    refused(
        &server,
        &create("spiffe://Example.org/web", "unix:uid:1"),
        "trust domain characters",
        2,
    );
    refused(
        &server,
        &create("http://example.org/web", "unix:uid:1"),
        "scheme",
        2,
    );
    refused(
        &server,
        &create("spiffe://example.org/a/../b", "unix:uid:1"),
        "dot segments",
        2,
    );
    refused(
        &server,
        &create("spiffe://example.org/web/", "unix:uid:1"),
        "trailing slash",
        2,
    );
    refused(&server, &create("", "unix:uid:1"), "SPIFFE ID is empty", 2);
    refused(
        &server,
        &create("spiffe://example.org/web", "nocolon"),
        "TYPE:VALUE",
        2,
    );
    refused(
        &server,
        &create("spiffe://example.org/web", ":value"),
        "selector type is empty",
        2,
    );
    refused(
        &server,
        &create("spiffe://example.org/web", "Unix:uid"),
        "selector type characters",
        2,
    );
    let mut negative = create("spiffe://example.org/web", "unix:uid:1");
    negative.push("--x509-ttl=-5m");
    refused(&server, &negative, "--x509-ttl", 2);
    let mut garbage = create("spiffe://example.org/web", "unix:uid:1");
    garbage.extend(["--jwt-ttl", "soon"]);
    refused(&server, &garbage, "not a duration", 2);
    let long = format!("spiffe://example.org/{}", "a".repeat(2100));
    let out = server.cli(&["entry", "show", "--id", &long]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);

    // Refused by the server (exit 1), with the field named.
    let mut absurd = create("spiffe://example.org/web", "unix:uid:1");
    absurd.extend(["--x509-ttl", "99999d"]);
    refused(&server, &absurd, "x509_svid_ttl", 1);
    refused(
        &server,
        &create("spiffe://other.org/web", "unix:uid:1"),
        "not in trust domain",
        1,
    );
    refused(
        &server,
        &create("spiffe://example.org", "unix:uid:1"),
        "needs a path",
        1,
    );
    refused(
        &server,
        &["entry", "show", "--id", "no such id!"],
        "entry id",
        1,
    );
    refused(
        &server,
        &["entry", "show", "--id", "missing"],
        "not found",
        1,
    );
    refused(
        &server,
        &["x509", "mint", "--spiffe-id", "spiffe://other.org/x"],
        "trust domain",
        1,
    );
    refused(
        &server,
        &[
            "jwt",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/x",
            "--audience",
            "",
        ],
        "audience",
        1,
    );
    refused(&server, &["token", "generate", "--ttl", "9999d"], "ttl", 1);

    // After all that, the server is still serving.
    server.cli(&["server", "healthcheck"]).ok();
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            PARENT,
            "--spiffe-id",
            "spiffe://example.org/ok",
            "--selector",
            "a:b",
        ])
        .ok();
}

#[test]
fn a_missing_socket_or_a_socket_of_something_else_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.sock");
    let out = lanyard(["entry", "list", "--admin-socket", missing.to_str().unwrap()]);
    let line = out.err();
    assert!(
        line.contains("no socket at") && line.contains("is the server running"),
        "{line}"
    );
    assert_eq!(out.code, Some(1));

    // A socket owned by something that is not a lanyard server: it accepts and hangs up.
    let other = dir.path().join("other.sock");
    let listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
    let acceptor = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            drop(stream);
        }
    });
    let out = lanyard(["entry", "list", "--admin-socket", other.to_str().unwrap()]);
    let line = out.err();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert_eq!(out.code, Some(1));
    drop(lanyard([
        "entry",
        "list",
        "--admin-socket",
        other.to_str().unwrap(),
    ]));
    acceptor.join().unwrap();

    // A path that is a plain file.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let out = lanyard(["entry", "list", "--admin-socket", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.err().lines().count(), 1);
}

#[test]
fn a_bad_config_or_datastore_stops_the_server_at_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["server", "run", "--admin-socket"];
        let socket = dir.path().join("admin.sock");
        let data = dir.path().join("data");
        args.push(socket.to_str().unwrap());
        args.extend(["--data-dir", data.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let out = lanyard(&args);
        assert!(!out.success, "{extra:?} should fail");
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{extra:?}: {}", out.stderr);
        errors[0].to_owned()
    };
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "trust_domain = [1, 2").unwrap();
    assert!(run(&["--config", config.to_str().unwrap()]).contains("config file"));
    std::fs::write(
        &config,
        "trust_domain = \"example.org\"\ncolour = \"blue\"\n",
    )
    .unwrap();
    assert!(run(&["--config", config.to_str().unwrap()]).contains("unknown field `colour`"));
    std::fs::write(&config, [0xff, 0xfe, 0x00]).unwrap();
    assert!(run(&["--config", config.to_str().unwrap()]).contains("config file"));
    assert!(run(&[]).contains("trust domain is required"));
    // Nothing listens on port 1.
    let line = run(&[
        "--trust-domain",
        "example.org",
        "--datastore",
        "postgres://postgres@127.0.0.1:1/nothing",
    ]);
    assert!(line.contains("cannot connect to the datastore"), "{line}");
    let line = run(&["--trust-domain", "example.org", "--datastore", "mysql://x"]);
    assert!(line.contains("datastore URL"), "{line}");
}

#[test]
fn a_second_server_cannot_take_a_live_admin_socket() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = lanyard([
        "server",
        "run",
        "--trust-domain",
        "example.org",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--admin-socket",
        server.admin_socket.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ]);
    let line = out.err();
    assert!(line.contains("in use"), "{line}");
    server.cli(&["server", "healthcheck"]).ok();
}
