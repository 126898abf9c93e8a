//! Entry sync, SVID minting and renewal, outages: the agent against the fake node server over TLS,
//! seen through the Workload API.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use lanyard_core::{BundleSet, Clock as _};
use lanyard_workload::WorkloadClient;

/// An agent attested and serving `entries`; returns the env, the agent and the first context.
async fn started(
    entries: Vec<lanyard_proto::node::Entry>,
) -> (Env, RunningAgent, lanyard_workload::X509Context) {
    started_with(entries, Duration::from_secs(3600)).await
}

async fn started_with(
    entries: Vec<lanyard_proto::node::Entry>,
    agent_ttl: Duration,
) -> (Env, RunningAgent, lanyard_workload::X509Context) {
    let env = Env::new().await;
    env.server.state().agent_ttl = agent_ttl;
    let expected = entries
        .iter()
        .filter(|e| e.selectors[0] == SELECTOR)
        .count();
    for e in entries {
        env.server.put_entry(e);
    }
    let token = env.server.add_token();
    let agent = env.spawn(env.config(Some(&token)));
    let ctx = wait_for_x509(&env.socket(), |c| c.svids.len() == expected).await;
    (env, agent, ctx)
}

#[tokio::test(start_paused = true)]
async fn full_set_in_chunks_then_deltas_and_removal() {
    let (env, agent, ctx) = started(vec![
        entry("e1", "/web", SELECTOR),
        entry("e2", "/db", SELECTOR),
        entry("e3", "/api", SELECTOR),
        entry("other", "/not-mine", "unix:uid:2000"),
    ])
    .await;
    assert_eq!(
        ids(&ctx),
        [
            "spiffe://example.org/api",
            "spiffe://example.org/db",
            "spiffe://example.org/web"
        ]
    );
    // Four entries in chunks of two: one full set, three messages.
    assert_eq!(env.server.state().full_syncs, 1);
    // Every SVID verifies against the bundle served with it.
    for svid in &ctx.svids {
        let bundles: BundleSet = std::iter::once(svid.bundle.clone()).collect();
        lanyard_core::verify_x509_svid(&svid.chain, &bundles, env.clock.now()).unwrap();
    }

    env.server.put_entry(entry("e4", "/cache", SELECTOR));
    wait_for_x509(&env.socket(), |c| c.svids.len() == 4).await;
    env.server.remove_entry("e2");
    let ctx = wait_for_x509(&env.socket(), |c| c.svids.len() == 3).await;
    assert_eq!(
        ids(&ctx),
        [
            "spiffe://example.org/api",
            "spiffe://example.org/cache",
            "spiffe://example.org/web"
        ]
    );

    // A change to what the certificate says is re-minted at once.
    let old = leaf(&ctx, "/web").to_vec();
    let mut changed = entry("e1", "/web", SELECTOR);
    changed.dns_names = vec!["web.example.org".into()];
    env.server.put_entry(changed);
    let ctx = wait_for_x509(&env.socket(), |c| {
        c.svids.len() == 3 && leaf(c, "/web") != old.as_slice()
    })
    .await;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf(&ctx, "/web")).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value).contains("web.example.org"));

    // Every entry sent is minted (the agent does not know which callers will come), then only
    // what changed: 4 first + e4 + the changed e1.
    assert_eq!(env.server.state().minted, 6);
    assert_eq!(env.server.state().sync_requests, [0]);
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn resumes_from_its_revision_after_the_stream_drops() {
    let (mut env, agent, _) = started(vec![entry("e1", "/web", SELECTOR)]).await;
    let revision = env.server.state().revision;

    env.server.stop().await;
    env.server.put_entry(entry("e2", "/db", SELECTOR));
    env.server.restart().await;
    let ctx = wait_for_x509(&env.socket(), |c| c.svids.len() == 2).await;
    assert_eq!(
        ids(&ctx),
        ["spiffe://example.org/db", "spiffe://example.org/web"]
    );
    let (requests, full_syncs) = {
        let state = env.server.state();
        (state.sync_requests.clone(), state.full_syncs)
    };
    assert_eq!(requests, [0, revision]);
    assert_eq!(full_syncs, 1, "the reconnect got a delta, not the full set");
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn renews_svids_at_half_life_without_a_gap() {
    let (env, agent, ctx) = started(vec![entry("e1", "/web", SELECTOR)]).await;
    let first = leaf(&ctx, "/web").to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&first).unwrap();
    let not_before = std::time::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_before.timestamp()).unwrap());
    let expiry = not_after(&first);
    // The agent counts the lifetime from receipt, not from the NotBefore the CA backdated.
    let life = expiry.duration_since(not_before).unwrap() - lanyard_ca::DEFAULT_BACKDATE;

    let mut client = WorkloadClient::connect(env.socket()).await.unwrap();
    let mut updates = client.watch_x509_context().await.unwrap();
    let renewed = tokio::time::timeout(WAIT, async {
        loop {
            let ctx = updates.next().await.unwrap();
            if leaf(&ctx, "/web") != first.as_slice() {
                return ctx;
            }
        }
    })
    .await
    .unwrap();
    // When the renewal was minted (its `notBefore`, backdated as the first one was), not when it
    // reached this client: with the clock paused, delivering it over real sockets may let the
    // runtime move the clock on, and a loaded machine would then see it late.
    let renewed_leaf = leaf(&renewed, "/web").to_vec();
    let (_, renewed_cert) = x509_parser::parse_x509_certificate(&renewed_leaf).unwrap();
    let renewed_not_before = std::time::UNIX_EPOCH
        + Duration::from_secs(
            u64::try_from(renewed_cert.validity().not_before.timestamp()).unwrap(),
        );
    let at = renewed_not_before.duration_since(not_before).unwrap();
    // Half the lifetime ±10% of it (a second of slack for the clock's granularity).
    assert!(
        at >= life.mul_f64(0.45) - Duration::from_secs(1),
        "{at:?} of {life:?}"
    );
    assert!(
        at <= life.mul_f64(0.55) + Duration::from_secs(1),
        "{at:?} of {life:?}"
    );
    assert!(not_after(leaf(&renewed, "/web")) > expiry);

    // The agent's own SVID (1 h) was renewed by then too, and persisted.
    let renewals = tokio::time::timeout(WAIT, async {
        loop {
            let n = env.server.state().renewals;
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
    .unwrap();
    assert!(renewals >= 1);
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn serves_cached_svids_while_the_server_is_down_and_catches_up() {
    // The agent's own SVID outlives the outages here; its expiry is another test's.
    let (mut env, agent, ctx) = started_with(
        vec![entry("e1", "/web", SELECTOR)],
        Duration::from_secs(8 * 3600),
    )
    .await;
    let first = leaf(&ctx, "/web").to_vec();
    let expiry = not_after(&first);

    env.server.stop().await;
    // Past the renewal time, before expiry: the cached SVID is still served.
    tokio::time::advance(Duration::from_secs(40 * 60)).await;
    let mut client = WorkloadClient::connect(env.socket()).await.unwrap();
    let ctx = client.fetch_x509_context().await.unwrap();
    assert_eq!(leaf(&ctx, "/web"), first.as_slice());

    // Back: renewed promptly.
    let minted = env.server.state().minted;
    env.server.restart().await;
    let ctx = wait_for_x509(&env.socket(), |c| {
        !c.svids.is_empty() && leaf(c, "/web") != first.as_slice()
    })
    .await;
    assert!(env.clock.now() < expiry);
    assert!(not_after(leaf(&ctx, "/web")) > expiry);
    assert_eq!(env.server.state().minted, minted + 1);

    // Down past expiry: the expired SVID is no longer served.
    env.server.stop().await;
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    let result = tokio::time::timeout(WAIT, async {
        loop {
            match client.fetch_x509_context().await {
                Err(e) => return e,
                Ok(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(&result, lanyard_workload::Error::Status(s) if s.code() == tonic::Code::PermissionDenied),
        "{result:?}"
    );

    // Back again: minted at once.
    env.server.restart().await;
    wait_for_x509(&env.socket(), |c| !c.svids.is_empty()).await;
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_removed_ca_is_replaced_at_once() {
    let (env, agent, ctx) = started(vec![entry("e1", "/web", SELECTOR)]).await;
    let first = leaf(&ctx, "/web").to_vec();
    let old = env.server.ca.authorities()[0].id.clone();
    let _ = env.server.ca.taint(&old).unwrap();
    env.server.renew_server_svid();
    let _ = env.server.ca.revoke(&old).unwrap();
    env.server.publish_bundle();

    let ctx = wait_for_x509(&env.socket(), |c| {
        !c.svids.is_empty() && leaf(c, "/web") != first.as_slice()
    })
    .await;
    let svid = &ctx.svids[0];
    assert_eq!(
        svid.bundle.x509_authorities(),
        env.server.ca.bundle().x509_authorities()
    );
    let bundles: BundleSet = std::iter::once(svid.bundle.clone()).collect();
    lanyard_core::verify_x509_svid(&svid.chain, &bundles, env.clock.now()).unwrap();
    // The new bundle is persisted for the next start.
    let persisted = std::fs::read(env.data_dir().join("bundle.json")).unwrap();
    let persisted = lanyard_core::Bundle::parse_json(td(), &persisted).unwrap();
    assert_eq!(
        persisted.x509_authorities(),
        env.server.ca.bundle().x509_authorities()
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn jwt_svids_come_from_the_server_and_are_cached() {
    let (env, agent, _) = started(vec![entry("e1", "/web", SELECTOR)]).await;
    let mut client = WorkloadClient::connect(env.socket()).await.unwrap();
    let audience = vec!["tool".to_owned()];
    let first = client.fetch_jwt_svids(&audience, None).await.unwrap();
    let second = client.fetch_jwt_svids(&audience, None).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first[0].spiffe_id, id("/web"));
    assert_eq!(env.server.state().jwt_minted, 1);
    let validated = client
        .validate_jwt_svid("tool", &first[0].token)
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id, id("/web"));
    agent.shutdown().await.unwrap();
}
