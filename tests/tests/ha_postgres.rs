//! Two servers side by side on one PostgreSQL database: they share one trust bundle holding both
//! CAs, and an entry written through either reaches an agent attested to the other.
//! Runs when LANYARD_TEST_POSTGRES names a server (CI sets it).
//!
//! The servers run with `datastore_poll_interval = "1h"`: what reaches one server from the other
//! within a test travelled by the database's change notice (or by the catch-up after the notice
//! connection was lost), not by the backstop poll.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, SystemTime};

use lanyard_core::BundleSet;
use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::node_client::{SimAgent, key_and_csr, parse_bundle};
use lanyard_e2e::postgres::FreshDatabase;
use lanyard_e2e::{Server, wait_for};
use lanyard_proto::node as pb;

/// Starts two servers on `database` with the backstop poll turned practically off, and waits until
/// both publish both roots. The returned directory holds their configuration file.
fn start_pair(database: &str, extra_args: &[&str]) -> (tempfile::TempDir, Server, Server) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "datastore_poll_interval = \"1h\"\n").unwrap();
    let mut args = vec![
        "--datastore",
        database,
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra_args);
    let a = Server::start_with(&args);
    let b = Server::start_with(&args);
    // Each server keeps its own CA; the bundle both publish holds both roots. The server that
    // started first learns of the second one's root by notice.
    wait_for(
        "both servers to publish both roots",
        Duration::from_secs(30),
        || (roots(&a) == 2 && roots(&b) == 2).then_some(()),
    );
    (dir, a, b)
}

/// An agent attested through server `a` whose entry stream is open on server `b`, with the
/// stream's first message (the full set) read.
async fn attested_on_a_streaming_from_b(
    a: &Server,
    b: &Server,
) -> (
    SimAgent,
    tonic::Streaming<pb::SyncEntriesResponse>,
    pb::SyncEntriesResponse,
) {
    let on_a = SimAgent::attest(a.node_addr(), &a.bundle(), &a.join_token(&[]))
        .await
        .unwrap();
    let on_b = SimAgent {
        addr: b.node_addr(),
        ..on_a.clone()
    };
    let mut stream = on_b
        .client()
        .await
        .unwrap()
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (on_a, stream, first)
}

fn roots(server: &Server) -> usize {
    let json = server
        .cli(&["bundle", "show", "--format", "spiffe"])
        .ok()
        .to_owned();
    parse_bundle("example.org", &json)
        .unwrap()
        .x509_authorities()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_one_bundle_and_one_set_of_entries() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let db = FreshDatabase::create(&admin_url, "lanyard_ha")
        .await
        .unwrap();
    let (_config, a, b) = start_pair(&db.url, &[]);

    // An agent attested to server A, with a token made through server B.
    let token = b.cli(&["token", "generate", "--output", "json"]).json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bundle_a = parse_bundle(
        "example.org",
        a.cli(&["bundle", "show", "--format", "spiffe"]).ok(),
    )
    .unwrap();
    let agent = SimAgent::attest(a.node_addr(), &bundle_a, &token)
        .await
        .unwrap();
    let mut client = agent.client().await.unwrap();
    let mut stream = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.entries.is_empty());

    // An entry written through B reaches the agent on A.
    let created = b
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            agent.spiffe_id.as_str(),
            "--spiffe-id",
            "spiffe://example.org/via-b",
            "--selector",
            "unix:uid:1",
            "--output",
            "json",
        ])
        .json();
    let pushed = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pushed.entries[0].spiffe_id, "spiffe://example.org/via-b");

    // An SVID minted by A and one minted by B both verify against either server's bundle.
    let entry_id = created["id"].as_str().unwrap().to_owned();
    let (_, csr) = key_and_csr().unwrap();
    let from_a = client
        .batch_new_x509_svid(pb::BatchNewX509SvidRequest {
            params: vec![pb::X509SvidParams { entry_id, csr }],
        })
        .await
        .unwrap()
        .into_inner();
    let out = b.dir.join("from-b");
    b.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/batch",
        "--write",
        out.to_str().unwrap(),
    ])
    .ok();
    let pem = std::fs::read(out.join("svid.pem")).unwrap();
    use rustls_pki_types::pem::PemObject as _;
    let from_b: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.unwrap().to_vec())
        .collect();
    for server in [&a, &b] {
        let json = server
            .cli(&["bundle", "show", "--format", "spiffe"])
            .ok()
            .to_owned();
        let set: BundleSet = [parse_bundle("example.org", &json).unwrap()]
            .into_iter()
            .collect();
        lanyard_core::x509::verify_x509_svid(
            &from_a.results[0].cert_chain,
            &set,
            SystemTime::now(),
        )
        .unwrap();
        lanyard_core::x509::verify_x509_svid(&from_b, &set, SystemTime::now()).unwrap();
    }
    drop((a, b));
    drop(db);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_evicted_through_one_server_loses_its_stream_on_every_server() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let db = FreshDatabase::create(&admin_url, "lanyard_ha")
        .await
        .unwrap();
    let (_config, a, b) = start_pair(&db.url, &[]);
    let (on_a, mut stream, _) = attested_on_a_streaming_from_b(&a, &b).await;

    a.cli(&["agent", "evict", "--spiffe-id", on_a.spiffe_id.as_str()])
        .ok();
    let ended = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("server B must end the evicted agent's stream");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    drop((a, b));
    drop(db);
}

/// A task ended through one server is refused by an agent of the other: the other server reads
/// the `task.revoked` record from the shared audit log and pushes the list to its agents.
#[test]
fn a_task_revoked_through_one_server_is_refused_by_the_agents_of_another() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime
        .block_on(FreshDatabase::create(&admin_url, "lanyard_ha"))
        .unwrap();
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(
        policies.path().join("p.cedar"),
        r#"permit(principal, action == Action::"read", resource == Tool::"tickets");"#,
    )
    .unwrap();
    let (_config, a, b) = start_pair(
        &db.url,
        &["--policy-dir", policies.path().to_str().unwrap()],
    );
    let uid = rustix::process::getuid().as_raw();
    let workload = "spiffe://example.org/agents/summarizer";
    a.cli(&[
        "entry",
        "create",
        "--parent-id",
        "spiffe://example.org/lanyard/agent/on-a",
        "--spiffe-id",
        workload,
        "--selector",
        &format!("unix:uid:{uid}"),
    ])
    .ok();
    let on_a = Agent::start(&a, "spiffe://example.org/lanyard/agent/on-a");
    let on_b = Agent::start(&b, "spiffe://example.org/lanyard/agent/on-b");
    let granted = wait_for("a task at the agent on A", Duration::from_secs(30), || {
        let out = on_a.cli(&[
            "task",
            "begin",
            "--audience",
            "tickets",
            "--op",
            "read",
            "--output",
            "json",
        ]);
        out.success.then(|| out.json())
    });
    let token = granted["token"].as_str().unwrap().to_owned();
    let validate = || {
        on_b.cli(&[
            "jwt",
            "validate",
            "--audience",
            "tickets",
            "--token",
            &token,
        ])
    };
    wait_for(
        "the agent on B to accept the token",
        Duration::from_secs(30),
        || validate().success.then_some(()),
    );

    a.cli(&[
        "task",
        "revoke",
        "--id",
        granted["task"]["id"].as_str().unwrap(),
    ])
    .ok();
    wait_for(
        "the agent on B to refuse the revoked token",
        Duration::from_secs(30),
        || {
            let out = validate();
            (!out.success && out.stderr.contains("revoked")).then_some(())
        },
    );
    drop((on_a, on_b, a, b));
    drop(db);
}

/// Runs a statement on the test's database, behind the servers' backs.
async fn execute(url: &str, statement: &'static str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// The number a `SELECT COUNT(…)` on the test's database returns.
async fn count(url: &str, query: &'static str) -> i64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(query)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

const LISTENERS: &str = "SELECT COUNT(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND application_name = 'lanyard change feed'";

/// A server whose notice connection drops catches up as soon as it has subscribed again: an
/// entry written while it could not have been told (the notice trigger is off, and its connection
/// is then killed) still reaches its agents, and later writes arrive by notice again.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_catches_up_after_its_notice_connection_drops() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let db = FreshDatabase::create(&admin_url, "lanyard_ha")
        .await
        .unwrap();
    let (_config, a, b) = start_pair(&db.url, &[]);
    let (agent, mut stream, first) = attested_on_a_streaming_from_b(&a, &b).await;
    assert!(first.entries.is_empty());
    // Both servers listen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut pause = Duration::from_millis(5);
    while count(&db.url, LISTENERS).await != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both servers must hold a notice connection"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }

    // An entry written with the notice trigger off: B is not told of it.
    execute(
        &db.url,
        "ALTER TABLE entries DISABLE TRIGGER entries_notify",
    )
    .await;
    let create = |spiffe_id: &str| {
        a.cli(&[
            "entry",
            "create",
            "--parent-id",
            agent.spiffe_id.as_str(),
            "--spiffe-id",
            spiffe_id,
            "--selector",
            "unix:uid:1",
        ])
        .ok()
        .to_owned()
    };
    create("spiffe://example.org/unnoticed");
    // Kill the notice connections: B subscribes again, then catches up by revision.
    let killed = count(
        &db.url,
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'lanyard change feed'",
    )
    .await;
    assert_eq!(killed, 2);
    let caught_up = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("server B must catch up after subscribing again")
        .unwrap()
        .unwrap();
    assert_eq!(
        caught_up.entries[0].spiffe_id,
        "spiffe://example.org/unnoticed"
    );

    // With the trigger back on, the next write arrives by notice on the new connection.
    execute(&db.url, "ALTER TABLE entries ENABLE TRIGGER entries_notify").await;
    create("spiffe://example.org/noticed");
    let pushed = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("server B must be told of the write")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.entries[0].spiffe_id, "spiffe://example.org/noticed");
    assert!(
        b.log().contains("lost the datastore's change notices"),
        "{}",
        b.log()
    );
    drop((a, b));
    drop(db);
}
