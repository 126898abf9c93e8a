//! The node API's boundary against a hostile network and stolen credentials, probed on a real
//! `lanyard server run`: agent SVIDs bound to the agent's record, limits on the unauthenticated
//! attestation call, and what refusals cost the server.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use lanyard_e2e::Server;
use lanyard_e2e::node_client::{SimAgent, connect, key_and_csr};
use lanyard_proto::node as pb;
use tonic::Code;

/// Renews `agent`'s SVID through RenewAgent; returns the agent holding the new SVID.
async fn renew(agent: &SimAgent) -> Result<SimAgent, tonic::Status> {
    let (key, csr) = key_and_csr().unwrap();
    let svid = agent
        .client()
        .await
        .unwrap()
        .renew_agent(pb::RenewAgentRequest { csr })
        .await?
        .into_inner()
        .svid
        .unwrap();
    SimAgent::from_svid(agent.addr, &agent.bundle, svid, &key)
}

/// Whether the server serves `agent` an entry stream.
async fn sync_code(agent: &SimAgent) -> Code {
    let mut client = agent.client().await.unwrap();
    match client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_svid_works_only_while_it_is_the_records_current_one() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();
    let first = SimAgent::attest(addr, &bundle, &server.join_token(&[]))
        .await
        .unwrap();

    // Renewal: until the agent uses its new SVID, the old one still works (a lost answer must not
    // lock the agent out); the first call with the new one retires the old.
    let second = renew(&first).await.unwrap();
    assert_eq!(sync_code(&first).await, Code::Ok);
    assert_eq!(sync_code(&second).await, Code::Ok);
    assert_eq!(sync_code(&first).await, Code::PermissionDenied);
    assert_eq!(
        renew(&first).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // A renewal whose answer was lost: the agent renews again from its current SVID, and only
    // the newest renewed SVID is accepted.
    let lost = renew(&second).await.unwrap();
    let third = renew(&second).await.unwrap();
    assert_eq!(sync_code(&third).await, Code::Ok);
    assert_eq!(sync_code(&lost).await, Code::PermissionDenied);
    assert_eq!(sync_code(&second).await, Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_svid_from_before_a_reattestation_or_eviction_is_refused() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();
    let id = "spiffe://example.org/lanyard/agent/join_token/node-1";
    let before = SimAgent::attest(addr, &bundle, &server.join_token(&["--spiffe-id", id]))
        .await
        .unwrap();
    assert_eq!(before.spiffe_id.as_str(), id);

    // The same node attests again: the SVID it held before is dead, the new one works.
    let again = SimAgent::attest(addr, &bundle, &server.join_token(&["--spiffe-id", id]))
        .await
        .unwrap();
    assert_eq!(sync_code(&before).await, Code::PermissionDenied);
    assert_eq!(sync_code(&again).await, Code::Ok);

    // Evicted, then attested again: neither earlier SVID comes back to life.
    server.cli(&["agent", "evict", "--spiffe-id", id]).ok();
    let after = SimAgent::attest(addr, &bundle, &server.join_token(&["--spiffe-id", id]))
        .await
        .unwrap();
    assert_eq!(sync_code(&again).await, Code::PermissionDenied);
    assert_eq!(sync_code(&before).await, Code::PermissionDenied);
    assert_eq!(sync_code(&after).await, Code::Ok);
}

/// The bytes of every file under `dir`.
fn tree_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                tree_size(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// One hostile attestation: 1 MiB where the server expects a few hundred bytes.
fn hostile_attestation(i: usize) -> pb::AttestAgentRequest {
    let huge = vec![b'a'; 1024 * 1024];
    let (attestor, payload) = match i % 3 {
        // A 1 MiB join token.
        0 => ("join_token".to_owned(), huge),
        // A 1 MiB "certificate chain".
        1 => ("x509pop".to_owned(), huge),
        // A 1 MiB attestor name, which a careless server echoes into its logs and events.
        _ => (String::from_utf8(huge).unwrap(), b"token".to_vec()),
    };
    pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::AttestationParams {
                attestor,
                payload,
                csr: key_and_csr().unwrap().1,
            },
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_hostile_attestations_cost_the_datastore_almost_nothing() {
    let ca = write_x509pop_ca();
    let server = Server::start_with(&["--x509pop-ca", ca.path().to_str().unwrap()]);
    let addr = server.node_addr();
    let bundle = server.bundle();
    let data = server.dir.join("data");
    let before = tree_size(&data);

    // 1,000 refused attestations of 1 MiB each, from 4 connections at once.
    let mut callers = Vec::new();
    for caller in 0..4 {
        let bundle = bundle.clone();
        callers.push(tokio::spawn(async move {
            let mut client = connect(addr, &bundle, None).await.unwrap();
            let mut codes = Vec::new();
            for i in 0..250 {
                let request = hostile_attestation(caller * 250 + i);
                let code = match client.attest_agent(tokio_stream::iter([request])).await {
                    Ok(response) => match response.into_inner().message().await {
                        Ok(_) => Code::Ok,
                        Err(status) => status.code(),
                    },
                    Err(status) => status.code(),
                };
                codes.push(code);
            }
            codes
        }));
    }
    for caller in callers {
        for code in caller.await.unwrap() {
            assert_eq!(code, Code::ResourceExhausted);
        }
    }

    let grown = tree_size(&data).saturating_sub(before);
    eprintln!("1,000 refused 1 MiB attestations grew the data dir by {grown} bytes");
    assert!(grown < 1024 * 1024, "the data dir grew by {grown} bytes");
    // The server still serves agents.
    let agent = SimAgent::attest(addr, &bundle, &server.join_token(&[]))
        .await
        .unwrap();
    assert_eq!(sync_code(&agent).await, Code::Ok);
}

/// A self-signed CA certificate in a PEM file, so the server runs its x509pop attestor.
fn write_x509pop_ca() -> tempfile::NamedTempFile {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), cert.pem()).unwrap();
    file
}

/// A `server run --config` file holding `toml`.
fn config_file(toml: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attestation_that_never_sends_its_parameters_is_cut_off() {
    let config = config_file("[node_api]\nattestation_timeout = \"1s\"\n");
    let server = Server::start_with(&["--config", config.path().to_str().unwrap()]);
    let mut client = connect(server.node_addr(), &server.bundle(), None)
        .await
        .unwrap();
    // A stream that stays open and silent.
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AttestAgentRequest>(1);
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.attest_agent(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("the server must give up on a silent attestation")
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("params"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_csr_does_not_use_up_the_join_token() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();
    let token = server.join_token(&[]);
    let status =
        lanyard_e2e::node_client::attest_join_token(addr, &bundle, &token, b"junk".to_vec())
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("CSR"), "{status:?}");
    // The token still works once, with a good CSR.
    SimAgent::attest(addr, &bundle, &token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_are_closed_until_one_goes() {
    let config = config_file("[node_api]\nmax_connections = 3\n");
    let server = Server::start_with(&["--config", config.path().to_str().unwrap()]);
    let addr = server.node_addr();
    let bundle = server.bundle();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(addr, &bundle, None).await.unwrap());
    }
    assert!(connect(addr, &bundle, None).await.is_err());
    // Once one goes, a new connection is served.
    drop(held.pop());
    lanyard_e2e::wait_for(
        "a connection slot to free up",
        std::time::Duration::from_secs(20),
        || {
            let bundle = bundle.clone();
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(connect(addr, &bundle, None))
                    .ok()
                    .map(drop)
            })
            .join()
            .unwrap()
        },
    );
}

/// Rows of `table` in the server's SQLite datastore, read behind its back.
fn rows(server: &Server, table: &str) -> i64 {
    let url = format!(
        "sqlite://{}?mode=ro",
        server.dir.join("data/datastore.sqlite3").display()
    );
    let table = table.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            n
        })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn used_tokens_and_tombstones_are_pruned_on_schedule_and_the_audit_log_is_kept() {
    let config = config_file(
        "[retention]\nused_join_tokens = \"1s\"\nentry_tombstones = \"1s\"\n\
         prune_interval = \"1s\"\n",
    );
    let server = Server::start_with(&["--config", config.path().to_str().unwrap()]);
    let addr = server.node_addr();
    let bundle = server.bundle();
    // An attestation (an audit record, a used token) and a deleted entry (a tombstone).
    SimAgent::attest(addr, &bundle, &server.join_token(&[]))
        .await
        .unwrap();
    let id = server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            "spiffe://example.org/node",
            "--spiffe-id",
            "spiffe://example.org/gone",
            "--selector",
            "unix:uid:1",
            "--output",
            "json",
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.cli(&["entry", "delete", "--id", &id]).ok();
    assert!(rows(&server, "entry_tombstones") >= 1);

    let audit_records = rows(&server, "audit_log");
    assert!(audit_records >= 4, "{audit_records}");
    lanyard_e2e::wait_for(
        "used join tokens and tombstones to be pruned",
        std::time::Duration::from_secs(30),
        || {
            let left = rows(&server, "join_tokens") + rows(&server, "entry_tombstones");
            (left == 0).then_some(())
        },
    );
    // The audit log is the record: pruning never touches it.
    assert!(rows(&server, "audit_log") >= audit_records);
    // A token that is neither used nor expired stays.
    server.join_token(&[]);
    assert_eq!(rows(&server, "join_tokens"), 1);
}
