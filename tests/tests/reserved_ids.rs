//! IDs under `spiffe://<td>/lanyard/` belong to lanyard's own server and agents: agents trust the
//! server by `…/lanyard/server`, the server trusts agents by `…/lanyard/agent/…`. No entry, join
//! token or admin-minted SVID may carry one (docs/threat-model.md), and an entry with one that
//! is already in the datastore (written by an older version, or by hand) is never served.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, SystemTime};

use lanyard_core::{EntryId, EntrySpec, RegistrationEntry, Selector, SelectorSet, SpiffeId};
use lanyard_e2e::Server;
use lanyard_e2e::bench::{admin_client, connect_admin};
use lanyard_e2e::node_client::{SimAgent, key_and_csr, parse_bundle};
use lanyard_proto::{admin as admin_pb, node as pb};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

const RESERVED: [&str; 4] = [
    "spiffe://example.org/lanyard/server",
    "spiffe://example.org/lanyard/agent/x",
    "spiffe://example.org/lanyard/agent/join_token/0123456789abcdef",
    "spiffe://example.org/lanyard",
];

fn entry_args<'a>(parent: &'a str, spiffe_id: &'a str) -> Vec<&'a str> {
    vec![
        "--parent-id",
        parent,
        "--spiffe-id",
        spiffe_id,
        "--selector",
        "unix:uid:1000",
    ]
}

/// Asserts that the CLI call failed because `field` is reserved, in one line on stderr.
#[track_caller]
fn assert_reserved(out: &lanyard_e2e::CliOutput, field: &str, id: &str) {
    let line = out.err();
    assert!(
        line.contains(field) && line.contains("reserved") && line.contains(id),
        "{id}: {line}"
    );
    assert_eq!(line.lines().count(), 1, "{line}");
}

#[test]
fn the_admin_api_refuses_reserved_ids_for_entries_mints_and_tokens() {
    let server = Server::start();

    for id in RESERVED {
        // entry create
        let mut args = vec!["entry", "create"];
        args.extend(entry_args("spiffe://example.org/lanyard/server", id));
        assert_reserved(&server.cli(&args), "spiffe_id", id);
        // x509 mint, jwt mint
        let out = server.cli(&["x509", "mint", "--spiffe-id", id]);
        assert_reserved(&out, "spiffe_id", id);
        let out = server.cli(&["jwt", "mint", "--spiffe-id", id, "--audience", "db"]);
        assert_reserved(&out, "spiffe_id", id);
    }
    // Nothing was written.
    let listed = server.cli(&["entry", "list", "--output", "json"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");

    // lanyard's IDs stay usable as parents: the server's makes a node alias, an agent's is the
    // usual parent.
    for parent in [
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard/agent/x",
    ] {
        let mut args = vec!["entry", "create"];
        args.extend(entry_args(parent, "spiffe://example.org/nodes/a"));
        server.cli(&args).ok();
    }

    // entry update may not move an entry onto a reserved ID.
    let mut args = vec!["entry", "create", "--output", "json"];
    args.extend(entry_args(
        "spiffe://example.org/lanyard/agent/x",
        "spiffe://example.org/web",
    ));
    let created = server.cli(&args).json();
    let entry_id = created["id"].as_str().unwrap().to_owned();
    for id in RESERVED {
        let mut args = vec!["entry", "update", "--id", &entry_id];
        args.extend(entry_args("spiffe://example.org/lanyard/agent/x", id));
        assert_reserved(&server.cli(&args), "spiffe_id", id);
    }
    let shown = server
        .cli(&["entry", "show", "--id", &entry_id, "--output", "json"])
        .json();
    assert_eq!(shown["spiffe_id"], "spiffe://example.org/web");

    // token generate: an agent's own ID under /lanyard/agent/ is fine; the rest of /lanyard is not.
    for id in [
        "spiffe://example.org/lanyard/server",
        "spiffe://example.org/lanyard",
        "spiffe://example.org/lanyard/other",
        "spiffe://example.org/lanyard/agent",
    ] {
        let out = server.cli(&["token", "generate", "--spiffe-id", id]);
        assert_reserved(&out, "spiffe_id", id);
    }
    let out = server.cli(&[
        "token",
        "generate",
        "--spiffe-id",
        "spiffe://other.org/node/n1",
    ]);
    let line = out.err();
    assert!(
        line.contains("spiffe_id") && line.contains("example.org"),
        "{line}"
    );
    server
        .cli(&[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://example.org/lanyard/agent/custom/n1",
        ])
        .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_create_refuses_only_its_reserved_entries() {
    let server = Server::start();
    let mut admin = admin_client(connect_admin(&server.admin_socket).await.unwrap());
    let entry = |spiffe_id: &str| admin_pb::Entry {
        spiffe_id: spiffe_id.to_owned(),
        parent_id: "spiffe://example.org/lanyard/server".to_owned(),
        selectors: vec!["k:v".to_owned()],
        ..Default::default()
    };
    let mut entries = vec![entry("spiffe://example.org/ok")];
    entries.extend(RESERVED.map(entry));
    let results = admin
        .batch_create_entries(admin_pb::BatchCreateEntriesRequest { entries })
        .await
        .unwrap()
        .into_inner()
        .results;
    let statuses: Vec<(i32, &str)> = results
        .iter()
        .map(|r| {
            let status = r.status.as_ref().unwrap();
            (status.code, status.message.as_str())
        })
        .collect();
    assert_eq!(statuses[0], (0, ""));
    for (status, id) in statuses[1..].iter().zip(RESERVED) {
        assert_eq!(status.0, Code::InvalidArgument as i32, "{id}: {status:?}");
        assert!(
            status.1.starts_with("spiffe_id") && status.1.contains("reserved"),
            "{id}: {status:?}"
        );
    }
    let listed = server.cli(&["entry", "list", "--output", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// An entry as a datastore row would hold it, with no check of who may have which ID.
fn row(entry_id: &str, parent: &str, spiffe_id: &str, selector: &str) -> RegistrationEntry {
    RegistrationEntry::new(EntrySpec {
        id: EntryId::new(entry_id).unwrap(),
        spiffe_id: id(spiffe_id),
        parent_id: id(parent),
        selectors: [selector.parse::<Selector>().unwrap()]
            .into_iter()
            .collect::<SelectorSet>(),
        x509_svid_ttl: Duration::from_secs(3600),
        jwt_svid_ttl: Duration::from_secs(300),
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        revision: 0,
    })
    .unwrap()
}

/// The next message on a sync stream, within [`WAIT`].
async fn next(stream: &mut tonic::Streaming<pb::SyncEntriesResponse>) -> pb::SyncEntriesResponse {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(message))) => message,
        other => panic!("no sync message within {WAIT:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_entries_already_in_the_datastore_are_never_served() {
    let mut server = Server::start();
    let agent_id = "spiffe://example.org/lanyard/agent/custom/victim";
    let token = server
        .cli(&[
            "token",
            "generate",
            "--spiffe-id",
            agent_id,
            "--output",
            "json",
        ])
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_selector = format!(
        "join_token:{}",
        token
            .parse::<lanyard_attestation::JoinToken>()
            .unwrap()
            .id()
    );

    // Rows an older version could have written: entries that hand this agent the server's or
    // another agent's identity, and a node alias that names another agent, so that this agent
    // would serve that agent's entries. Next to them, ordinary rows of each kind.
    server.kill();
    let url = format!(
        "sqlite://{}",
        server.dir.join("data/datastore.sqlite3").display()
    );
    let store = lanyard_store::open(lanyard_store::StoreConfig::new(url))
        .await
        .unwrap();
    let server_id = "spiffe://example.org/lanyard/server";
    let rows = vec![
        row("as-server", agent_id, server_id, "unix:uid:1"),
        row(
            "as-agent",
            agent_id,
            "spiffe://example.org/lanyard/agent/join_token/other",
            "unix:uid:1",
        ),
        row("web", agent_id, "spiffe://example.org/web", "unix:uid:1"),
        row(
            "bad-alias",
            server_id,
            "spiffe://example.org/lanyard/agent/custom/other",
            &token_selector,
        ),
        row(
            "others-db",
            "spiffe://example.org/lanyard/agent/custom/other",
            "spiffe://example.org/db",
            "unix:uid:1",
        ),
        row(
            "good-alias",
            server_id,
            "spiffe://example.org/nodes/victim",
            &token_selector,
        ),
        row(
            "via-alias",
            "spiffe://example.org/nodes/victim",
            "spiffe://example.org/cache",
            "unix:uid:1",
        ),
    ];
    for result in store.create_entries(rows).await.unwrap() {
        result.unwrap();
    }
    store.close().await;
    server.restart();

    let json = server
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();
    let bundle = parse_bundle("example.org", &json).unwrap();
    let agent = SimAgent::attest(server.node_addr(), &bundle, &token)
        .await
        .unwrap();
    assert_eq!(agent.spiffe_id.as_str(), agent_id);
    let mut client = agent.client().await.unwrap();

    // The agent is told of the ordinary entries only.
    let mut stream = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    let mut pushed: Vec<&str> = first.entries.iter().map(|e| e.id.as_str()).collect();
    pushed.sort_unstable();
    assert_eq!(pushed, ["via-alias", "web"]);

    // And may mint nothing else, X.509 or JWT.
    let (_, csr) = key_and_csr().unwrap();
    let ids = ["web", "via-alias", "as-server", "as-agent", "others-db"];
    let results = client
        .batch_new_x509_svid(pb::BatchNewX509SvidRequest {
            params: ids
                .iter()
                .map(|id| pb::X509SvidParams {
                    entry_id: (*id).to_owned(),
                    csr: csr.clone(),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    let denied = Code::PermissionDenied as i32;
    assert_eq!(codes, [0, 0, denied, denied, denied], "{results:?}");
    let bundles = [bundle.clone()].into_iter().collect();
    let minted =
        lanyard_core::x509::verify_x509_svid(&results[0].cert_chain, &bundles, SystemTime::now())
            .unwrap();
    assert_eq!(minted.spiffe_id().as_str(), "spiffe://example.org/web");
    for id in ids {
        let result = client
            .new_jwt_svid(pb::NewJwtSvidRequest {
                entry_id: id.to_owned(),
                audience: vec!["db".to_owned()],
            })
            .await;
        match id {
            "web" | "via-alias" => assert!(result.is_ok(), "{id}: {result:?}"),
            _ => assert_eq!(result.unwrap_err().code(), Code::PermissionDenied, "{id}"),
        }
    }

    // The admin still sees the rows, to delete them.
    let listed = server.cli(&["entry", "list", "--output", "json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 7);
}
