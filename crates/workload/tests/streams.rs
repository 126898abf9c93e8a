//! The streaming RPCs: full state at once, again on every change that matters to the caller,
//! never an identical repeat, `PermissionDenied` when the caller loses everything, and an end
//! when the server shuts down.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use lanyard_core::X509Authority;
use lanyard_proto::workload::{JwtBundlesRequest, X509BundlesRequest, X509svidRequest};
use tonic::Code;

async fn harness() -> (World, Harness) {
    let world = World::new();
    let snapshot = world.snapshot(world.standard_identities());
    let harness = Harness::start(&world, snapshot, caller()).await;
    (world, harness)
}

#[tokio::test]
async fn first_x509_message_is_the_full_state() {
    let (world, harness) = harness().await;
    let mut raw = harness.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = prompt(stream.message()).await.unwrap().unwrap();
    let ids: Vec<_> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [WEB, DB], "svids[0] is the first matching identity");
    let snapshot = harness.source.current();
    for (svid, identity) in first.svids.iter().zip(snapshot.identities()) {
        assert_eq!(svid.x509_svid, identity.x509_chain().concat());
        assert_eq!(svid.x509_svid_key, identity.key().as_pkcs8_der());
        assert_eq!(svid.bundle, world.own.ca_der);
        assert_eq!(svid.hint, identity.hint());
    }
    let keys: Vec<_> = first.federated_bundles.keys().cloned().collect();
    assert_eq!(keys, ["spiffe://other.org"]);
    assert_eq!(
        first.federated_bundles["spiffe://other.org"],
        world.foreign.ca_der
    );
}

#[tokio::test]
async fn x509_stream_follows_changes_and_suppresses_repeats() {
    let (world, harness) = harness().await;
    let mut client = harness.client().await;
    let mut updates = client.watch_x509_context().await.unwrap();
    let first = prompt(updates.next()).await.unwrap();
    assert_eq!(first.svids.len(), 2);

    // Identical content, and a change only another caller can see: nothing is sent for either,
    // so the next message is the rotation that follows them.
    let current = harness.source.current();
    harness.source.publish((*current).clone());
    harness
        .source
        .publish(world.snapshot(current.identities()[..2].to_vec()));
    let mut rotated = current.identities().to_vec();
    rotated[0] = world
        .own
        .identity(WEB, &["unix:uid:1000"])
        .with_hint("web")
        .with_federates_with([td(FOREIGN_TD)]);
    harness.source.publish(world.snapshot(rotated.clone()));

    let second = prompt(updates.next()).await.unwrap();
    assert_eq!(second.svids[0].chain, rotated[0].x509_chain());
    assert_ne!(second.svids[0].chain, first.svids[0].chain);
    assert_eq!(second.svids[1], first.svids[1]);

    // A new identity for the caller is another message, with all three.
    let mut added = rotated;
    added.push(
        world
            .own
            .identity("spiffe://example.org/new", &["unix:user:alice"]),
    );
    harness.source.publish(world.snapshot(added));
    let third = prompt(updates.next()).await.unwrap();
    let ids: Vec<_> = third.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [WEB, DB, "spiffe://example.org/new"]);
}

#[tokio::test]
async fn losing_every_identity_ends_the_stream_with_permission_denied() {
    let (world, harness) = harness().await;
    let mut client = harness.client().await;
    let mut updates = client.watch_x509_context().await.unwrap();
    prompt(updates.next()).await.unwrap();
    let mut bundles = client.watch_x509_bundles().await.unwrap();
    prompt(bundles.next()).await.unwrap();

    harness
        .source
        .publish(world.snapshot(vec![world.own.identity(ADMIN, &["unix:uid:0"])]));
    for err in [
        prompt(updates.next()).await.unwrap_err(),
        prompt(bundles.next()).await.unwrap_err(),
    ] {
        let status = err.status().unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::PermissionDenied, "no identity issued")
        );
    }
}

#[tokio::test]
async fn hints_are_unique_and_the_first_wins() {
    let world = World::new();
    let identities = vec![
        world
            .own
            .identity(WEB, &["unix:uid:1000"])
            .with_hint("same"),
        world.own.identity(DB, &["unix:uid:1000"]).with_hint("same"),
        world
            .own
            .identity("spiffe://example.org/a", &["unix:uid:1000"]),
        world
            .own
            .identity("spiffe://example.org/b", &["unix:uid:1000"]),
    ];
    let harness = Harness::start(&world, world.snapshot(identities), caller()).await;
    let mut client = harness.client().await;
    let context = client.fetch_x509_context().await.unwrap();
    let got: Vec<_> = context
        .svids
        .iter()
        .map(|s| (s.spiffe_id.as_str(), s.hint.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (WEB, "same"),
            ("spiffe://example.org/a", ""),
            ("spiffe://example.org/b", "")
        ]
    );
    let jwts = client
        .fetch_jwt_svids(&["aud".to_owned()], None)
        .await
        .unwrap();
    let got: Vec<_> = jwts.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(
        got,
        [WEB, "spiffe://example.org/a", "spiffe://example.org/b"]
    );
}

#[tokio::test]
async fn bundle_streams_carry_own_and_federated_and_follow_changes() {
    let (world, harness) = harness().await;
    let mut raw = harness.raw().await;
    let mut x509 = raw
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut jwt = raw
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first_x509 = prompt(x509.message()).await.unwrap().unwrap();
    let first_jwt = prompt(jwt.message()).await.unwrap().unwrap();
    let mut keys: Vec<_> = first_x509.bundles.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["spiffe://example.org", "spiffe://other.org"]);
    assert_eq!(first_x509.bundles["spiffe://example.org"], world.own.ca_der);
    let mut keys: Vec<_> = first_jwt.bundles.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["spiffe://example.org", "spiffe://other.org"]);
    let jwks: serde_json::Value =
        serde_json::from_slice(&first_jwt.bundles["spiffe://example.org"]).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], world.own.signer.kid);
    assert!(jwks["keys"][0].get("x5c").is_none());

    // An identical snapshot is not sent; a new foreign root is, on the X.509 stream; the JWT
    // stream sees the change only when JWT keys change.
    let current = harness.source.current();
    harness.source.publish((*current).clone());
    let rotated_foreign = Authority::new(FOREIGN_TD);
    let mut bundles = world.bundles();
    let mut foreign = world.foreign.bundle();
    foreign.add_x509_authority(X509Authority::from_der(rotated_foreign.ca_der.clone()).unwrap());
    bundles.insert(foreign);
    let changed = lanyard_workload::Snapshot::new(td(TD), bundles, current.identities().to_vec());
    harness.source.publish(changed.clone());
    let second_x509 = prompt(x509.message()).await.unwrap().unwrap();
    assert_eq!(
        second_x509.bundles["spiffe://other.org"],
        [world.foreign.ca_der.clone(), rotated_foreign.ca_der.clone()].concat()
    );

    let mut jwt_changed = changed.bundles().clone();
    let mut own = world.own.bundle();
    own.remove_jwt_authority(&world.own.signer.kid);
    jwt_changed.insert(own);
    harness.source.publish(lanyard_workload::Snapshot::new(
        td(TD),
        jwt_changed,
        current.identities().to_vec(),
    ));
    let second_jwt = prompt(jwt.message()).await.unwrap().unwrap();
    assert_eq!(
        second_jwt.bundles["spiffe://example.org"],
        br#"{"keys":[]}"#.to_vec()
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_completes() {
    let (_world, mut harness) = harness().await;
    let mut client = harness.client().await;
    let mut svids = client.watch_x509_context().await.unwrap();
    let mut bundles = client.watch_jwt_bundles().await.unwrap();
    prompt(svids.next()).await.unwrap();
    prompt(bundles.next()).await.unwrap();
    harness.stop().await.unwrap();
    for err in [
        prompt(svids.next()).await.unwrap_err(),
        prompt(bundles.next()).await.unwrap_err(),
    ] {
        let code = err.status().map(tonic::Status::code);
        assert!(
            matches!(code, Some(Code::Unavailable) | None),
            "stream ended with {err:?}"
        );
    }
}
