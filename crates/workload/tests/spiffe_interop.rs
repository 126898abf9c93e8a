//! The `spiffe` crate (0.19), a Workload API client nobody here wrote, against the real server.
//! It validates what it receives (X509-SVID profile, key match, bundles, JWT-SVID claims).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use spiffe::{JwtSvid, WorkloadApiClient, X509Source};

async fn harness() -> (World, Harness) {
    let world = World::new();
    let snapshot = world.snapshot(world.standard_identities());
    let harness = Harness::start(&world, snapshot, caller()).await;
    (world, harness)
}

fn spiffe_td(name: &str) -> spiffe::TrustDomain {
    spiffe::TrustDomain::new(name).unwrap()
}

#[tokio::test]
async fn workload_api_client_fetches_x509_material() {
    let (world, harness) = harness().await;
    let client = WorkloadApiClient::connect_to(harness.endpoint())
        .await
        .unwrap();

    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WEB);
    assert_eq!(svid.hint(), Some("web"));
    let snapshot = harness.source.current();
    assert_eq!(
        svid.leaf().as_bytes(),
        snapshot.identities()[0].x509_chain()[0]
    );

    let all = client.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, [WEB, DB]);

    let bundles = client.fetch_x509_bundles().await.unwrap();
    let own = bundles.get(&spiffe_td(TD)).unwrap();
    assert_eq!(own.authorities()[0].as_bytes(), world.own.ca_der);
    let foreign = bundles.get(&spiffe_td(FOREIGN_TD)).unwrap();
    assert_eq!(foreign.authorities()[0].as_bytes(), world.foreign.ca_der);

    let context = client.fetch_x509_context().await.unwrap();
    assert_eq!(context.svids().len(), 2);
    assert!(context.bundle_set().get(&spiffe_td(FOREIGN_TD)).is_some());
}

#[tokio::test]
async fn workload_api_client_fetches_and_validates_jwts() {
    let (world, harness) = harness().await;
    let client = WorkloadApiClient::connect_to(harness.endpoint())
        .await
        .unwrap();

    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let own = bundles.get(&spiffe_td(TD)).unwrap();
    assert!(own.find_jwt_authority(&world.own.signer.kid).is_some());

    let svid = client.fetch_jwt_svid(["tool"], None).await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WEB);
    assert_eq!(svid.audience(), ["tool"]);
    let db = spiffe::SpiffeId::new(DB).unwrap();
    let svid_db = client.fetch_jwt_svid(["tool"], Some(&db)).await.unwrap();
    assert_eq!(svid_db.spiffe_id().to_string(), DB);

    // Verified locally by the spiffe crate against the bundles we served…
    let local = JwtSvid::parse_and_validate(svid.token(), &bundles, &["tool"]).unwrap();
    assert_eq!(local.spiffe_id().to_string(), WEB);
    // …and by the server.
    let validated = client
        .validate_jwt_token("tool", svid.token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), WEB);
    assert!(
        client
            .validate_jwt_token("other", svid.token())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn x509_source_sees_a_rotation() {
    let (world, harness) = harness().await;
    let source = X509Source::builder()
        .endpoint(harness.endpoint())
        .build()
        .await
        .unwrap();
    let first = source.svid().unwrap();
    assert_eq!(first.spiffe_id().to_string(), WEB);
    let mut updates = source.updated();

    let mut identities = harness.source.current().identities().to_vec();
    identities[0] = world
        .own
        .identity(WEB, &["unix:uid:1000"])
        .with_hint("web")
        .with_federates_with([td(FOREIGN_TD)]);
    let new_leaf = identities[0].x509_chain()[0].clone();
    harness.source.publish(world.snapshot(identities));

    prompt(updates.changed()).await.unwrap();
    let rotated = source.svid().unwrap();
    assert_eq!(rotated.leaf().as_bytes(), new_leaf);
    assert_ne!(rotated.leaf().as_bytes(), first.leaf().as_bytes());
    tokio::time::timeout(Duration::from_secs(10), source.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn jwt_source_fetches_tokens_and_bundles() {
    let (world, harness) = harness().await;
    let source = spiffe::JwtSource::builder()
        .endpoint(harness.endpoint())
        .build()
        .await
        .unwrap();
    let bundles = source.bundle_set().unwrap();
    assert!(
        bundles
            .get(&spiffe_td(TD))
            .unwrap()
            .find_jwt_authority(&world.own.signer.kid)
            .is_some()
    );
    let svid = source.fetch_jwt_svid(["api"]).await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WEB);
    tokio::time::timeout(Duration::from_secs(10), source.shutdown())
        .await
        .unwrap();
}
