//! The node API of a real `lanyard server run`, probed by a simulated agent: attestation, the
//! pushed entry stream, SVID minting, and the checks that keep agents in their lane.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, SystemTime};

use lanyard_core::{BundleSet, SpiffeId};
use lanyard_e2e::Server;
use lanyard_e2e::node_client::{SimAgent, attest_join_token, connect, key_and_csr};
use lanyard_proto::node as pb;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

fn create_entry(server: &Server, parent: &str, spiffe_id: &str, selectors: &[&str]) -> String {
    let mut args = vec![
        "entry",
        "create",
        "--parent-id",
        parent,
        "--spiffe-id",
        spiffe_id,
        "--output",
        "json",
    ];
    for s in selectors {
        args.extend(["--selector", s]);
    }
    server.cli(&args).json()["id"].as_str().unwrap().to_owned()
}

/// The next message on a sync stream, within [`WAIT`].
async fn next(
    stream: &mut tonic::Streaming<pb::SyncEntriesResponse>,
) -> Result<pb::SyncEntriesResponse, tonic::Status> {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(tonic::Status::aborted("stream ended")),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no sync message within {WAIT:?}"),
    }
}

fn ids(message: &pb::SyncEntriesResponse) -> Vec<String> {
    message
        .entries
        .iter()
        .map(|e| e.spiffe_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_attests_syncs_and_mints_only_what_it_may() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();

    let agent = SimAgent::attest(addr, &bundle, &server.join_token(&[]))
        .await
        .unwrap();
    assert!(
        agent
            .spiffe_id
            .path()
            .starts_with("/lanyard/agent/join_token/"),
        "{}",
        agent.spiffe_id
    );
    let chain: Vec<Vec<u8>> = agent.chain.clone();
    let bundles: BundleSet = [bundle.clone()].into_iter().collect();
    let verified =
        lanyard_core::x509::verify_x509_svid(&chain, &bundles, SystemTime::now()).unwrap();
    assert_eq!(verified.spiffe_id(), &agent.spiffe_id);

    // The admin sees the agent.
    let listed = server.cli(&["agent", "list", "--output", "json"]).json();
    assert_eq!(listed[0]["spiffe_id"], agent.spiffe_id.as_str());
    assert_eq!(listed[0]["attestation_type"], "join_token");

    let mine = create_entry(
        &server,
        agent.spiffe_id.as_str(),
        "spiffe://example.org/web",
        &["unix:uid:1000"],
    );
    let theirs = create_entry(
        &server,
        "spiffe://example.org/lanyard/agent/join_token/other",
        "spiffe://example.org/db",
        &["unix:uid:1"],
    );

    // The first message is the full set, with the bundle.
    let mut client = agent.client().await.unwrap();
    let mut stream = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.unwrap();
    assert!(first.full_sync);
    assert!(!first.more);
    assert_eq!(ids(&first), ["spiffe://example.org/web"]);
    assert!(!first.bundle_json.is_empty());
    let mut revision = first.revision;
    assert!(revision > 0);

    // A new entry is pushed as soon as it is committed.
    let api = create_entry(
        &server,
        agent.spiffe_id.as_str(),
        "spiffe://example.org/api",
        &["unix:uid:1001"],
    );
    let pushed = next(&mut stream).await.unwrap();
    assert!(!pushed.full_sync);
    assert_eq!(ids(&pushed), ["spiffe://example.org/api"]);
    assert!(pushed.revision > revision);
    revision = pushed.revision;

    // A deletion is pushed as a removal.
    server.cli(&["entry", "delete", "--id", &api]).ok();
    let removed = next(&mut stream).await.unwrap();
    assert_eq!(removed.removed_entry_ids, std::slice::from_ref(&api));
    assert!(removed.revision > revision);

    // Someone else's entry is never pushed to this agent: the next message is about ours.
    create_entry(
        &server,
        "spiffe://example.org/lanyard/agent/join_token/other",
        "spiffe://example.org/cache",
        &["a:b"],
    );
    create_entry(
        &server,
        agent.spiffe_id.as_str(),
        "spiffe://example.org/late",
        &["a:c"],
    );
    assert_eq!(
        ids(&next(&mut stream).await.unwrap()),
        ["spiffe://example.org/late"]
    );

    // Minting: our entry yes, theirs no.
    let (_, csr) = key_and_csr().unwrap();
    let response = client
        .batch_new_x509_svid(pb::BatchNewX509SvidRequest {
            params: vec![
                pb::X509SvidParams {
                    entry_id: mine.clone(),
                    csr: csr.clone(),
                },
                pb::X509SvidParams {
                    entry_id: theirs.clone(),
                    csr: csr.clone(),
                },
                pb::X509SvidParams {
                    entry_id: "no-such-entry".into(),
                    csr: csr.clone(),
                },
                pb::X509SvidParams {
                    entry_id: mine.clone(),
                    csr: b"not a csr".to_vec(),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<i32> = response.results.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [
            0,
            Code::PermissionDenied as i32,
            Code::PermissionDenied as i32,
            Code::InvalidArgument as i32
        ]
    );
    let svid = lanyard_core::x509::verify_x509_svid(
        &response.results[0].cert_chain,
        &bundles,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(svid.spiffe_id().as_str(), "spiffe://example.org/web");

    let jwt = client
        .new_jwt_svid(pb::NewJwtSvidRequest {
            entry_id: mine.clone(),
            audience: vec!["db".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let own_bundle = lanyard_core::Bundle::parse_json(
        bundle.trust_domain().clone(),
        first.bundle_json.as_bytes(),
    )
    .unwrap();
    let jwt_bundles: BundleSet = [own_bundle].into_iter().collect();
    let claims =
        lanyard_core::jwt::verify_jwt_svid(&jwt.token, "db", &jwt_bundles, SystemTime::now())
            .unwrap();
    assert_eq!(claims.spiffe_id().as_str(), "spiffe://example.org/web");
    let status = client
        .new_jwt_svid(pb::NewJwtSvidRequest {
            entry_id: theirs,
            audience: vec!["db".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Renewal gives a new SVID for the same ID.
    let (_, csr) = key_and_csr().unwrap();
    let renewed = client
        .renew_agent(pb::RenewAgentRequest { csr })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(renewed.spiffe_id, agent.spiffe_id.as_str());
    assert_ne!(renewed.cert_chain[0], agent.chain[0]);

    // Banning closes the stream and locks the agent out.
    server
        .cli(&["agent", "ban", "--spiffe-id", agent.spiffe_id.as_str()])
        .ok();
    let status = loop {
        match next(&mut stream).await {
            Ok(_) => continue, // changes that were already in flight
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn attestation_refuses_used_unknown_and_expired_tokens() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();
    let good = server.join_token(&[]);
    SimAgent::attest(addr, &bundle, &good).await.unwrap();

    let (_, csr) = key_and_csr().unwrap();
    let used = attest_join_token(addr, &bundle, &good, csr.clone())
        .await
        .unwrap_err();
    assert_eq!(used.code(), Code::PermissionDenied);
    assert!(used.message().contains("already been used"), "{used:?}");

    let unknown = attest_join_token(
        addr,
        &bundle,
        "0123456789abcdef0123456789abcdef",
        csr.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied);
    assert!(unknown.message().contains("not known"), "{unknown:?}");

    let expiring = server.join_token(&["--ttl", "1s"]);
    let made = SystemTime::now();
    // The event to wait for is the clock passing the token's expiry (with a second of margin).
    lanyard_e2e::wait_for("the token to expire", Duration::from_secs(10), || {
        (made.elapsed().unwrap_or_default() >= Duration::from_secs(2)).then_some(())
    });
    let expired = attest_join_token(addr, &bundle, &expiring, csr.clone())
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::PermissionDenied);
    assert!(expired.message().contains("expired"), "{expired:?}");

    let bad_csr = attest_join_token(addr, &bundle, &server.join_token(&[]), b"junk".to_vec())
        .await
        .unwrap_err();
    assert_eq!(bad_csr.code(), Code::InvalidArgument);

    // A token made for a given ID gives that ID.
    let named = server.join_token(&[
        "--spiffe-id",
        "spiffe://example.org/lanyard/agent/rack1/node7",
    ]);
    let agent = SimAgent::attest(addr, &bundle, &named).await.unwrap();
    assert_eq!(
        agent.spiffe_id,
        SpiffeId::parse("spiffe://example.org/lanyard/agent/rack1/node7").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_methods_need_an_agent_svid() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();
    let mut anonymous = connect(addr, &bundle, None).await.unwrap();
    let status = anonymous
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let (_, csr) = key_and_csr().unwrap();
    let status = anonymous
        .renew_agent(pb::RenewAgentRequest { csr })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // An evicted agent must attest again.
    let agent = SimAgent::attest(addr, &bundle, &server.join_token(&[]))
        .await
        .unwrap();
    let mut client = agent.client().await.unwrap();
    client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap();
    server
        .cli(&["agent", "evict", "--spiffe-id", agent.spiffe_id.as_str()])
        .ok();
    let status = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("attest again"), "{status:?}");

    // A client that trusts another server's bundle refuses this server.
    let stranger = Server::start();
    let err = connect(addr, &stranger.bundle(), None).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("refused") || format!("{err:?}").contains("certificate"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_stream_gets_only_what_changed_and_foreign_aliases_stay_out() {
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();
    let agent = SimAgent::attest(addr, &bundle, &server.join_token(&[]))
        .await
        .unwrap();
    create_entry(
        &server,
        agent.spiffe_id.as_str(),
        "spiffe://example.org/one",
        &["k:1"],
    );
    let mut client = agent.client().await.unwrap();
    let mut stream = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.unwrap();
    drop(stream);

    create_entry(
        &server,
        agent.spiffe_id.as_str(),
        "spiffe://example.org/two",
        &["k:2"],
    );
    let mut resumed = client
        .sync_entries(pb::SyncEntriesRequest {
            since_revision: first.revision,
        })
        .await
        .unwrap()
        .into_inner();
    let delta = next(&mut resumed).await.unwrap();
    assert!(!delta.full_sync);
    assert_eq!(ids(&delta), ["spiffe://example.org/two"]);

    // A node alias groups agents by selectors; a join-token agent has only
    // `join_token:<token-id>`, so an alias with other selectors never brings its entries to it.
    let alias = "spiffe://example.org/cluster/a";
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            "spiffe://example.org/lanyard/server",
            "--spiffe-id",
            alias,
            "--selector",
            "never:matches",
        ])
        .ok();
    create_entry(&server, alias, "spiffe://example.org/via-alias", &["k:3"]);
    // The alias does not apply and nothing about it arrives; an entry of its own still does.
    create_entry(
        &server,
        agent.spiffe_id.as_str(),
        "spiffe://example.org/three",
        &["k:4"],
    );
    let mut seen = Vec::new();
    while !seen.contains(&"spiffe://example.org/three".to_owned()) {
        seen.extend(ids(&next(&mut resumed).await.unwrap()));
    }
    assert!(
        !seen.contains(&"spiffe://example.org/via-alias".to_owned()),
        "{seen:?}"
    );
}

/// A full set larger than one message arrives in several, each small enough for the stream's
/// 4 KiB encode buffer (a larger one would grow it for as long as the stream is open), with the
/// bundle in the last and every entry exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_full_set_arrives_in_small_messages_with_the_bundle_last() {
    use prost::Message as _;
    let server = Server::start();
    let addr = server.node_addr();
    let bundle = server.bundle();
    let agent = SimAgent::attest(addr, &bundle, &server.join_token(&[]))
        .await
        .unwrap();
    let expected: Vec<String> = (0..40)
        .map(|i| format!("spiffe://example.org/workloads/namespace-{i:02}/service-account-{i:02}"))
        .collect();
    for (i, id) in expected.iter().enumerate() {
        create_entry(
            &server,
            agent.spiffe_id.as_str(),
            id,
            &[&format!("unix:uid:{i}")],
        );
    }

    let mut client = agent.client().await.unwrap();
    let mut stream = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    loop {
        let message = next(&mut stream).await.unwrap();
        let more = message.more;
        messages.push(message);
        if !more {
            break;
        }
    }
    assert!(messages.len() > 1, "40 entries fit one message");
    assert!(messages[0].full_sync);
    for message in &messages {
        assert!(
            message.encoded_len() <= 4 * 1024 - 5,
            "{}",
            message.encoded_len()
        );
    }
    let (last, rest) = messages.split_last().unwrap();
    assert!(!last.bundle_json.is_empty());
    assert!(last.revision > 0);
    assert!(
        rest.iter()
            .all(|m| m.bundle_json.is_empty() && m.revision == 0)
    );
    let mut got: Vec<String> = messages.iter().flat_map(ids).collect();
    got.sort();
    assert_eq!(got, expected);
}
