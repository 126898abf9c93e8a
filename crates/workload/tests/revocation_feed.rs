//! The task service's `WatchRevocations` against the real server on a temporary socket: the same
//! rules as the other task calls (security header, an identity), the whole list at once and on
//! every change, nothing while the source has not heard the list, an end on shutdown; and the
//! client feeding a service's local check.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use lanyard_core::{RevocationList, verify_jwt_svid};
use lanyard_proto::task::tasks_client::TasksClient;
use lanyard_proto::task::{WatchRevocationsRequest, WatchRevocationsResponse};
use lanyard_workload::{Revocations, Snapshot};
use tonic::Code;
use tonic::transport::Channel;

/// Expiry of every listed token (2100-01-01): the fake source never prunes, and nothing here
/// depends on the clock.
const EXP: i64 = 4_102_444_800;

fn known(jtis: &[&str]) -> Revocations {
    Revocations::Known(Arc::new(RevocationList::from_unix_seconds(
        jtis.iter().map(|jti| ((*jti).to_owned(), EXP)),
    )))
}

fn snapshot(world: &World, revocations: Revocations) -> Snapshot {
    world
        .snapshot(world.standard_identities())
        .with_revocations(revocations)
}

async fn serve(world: &World, revocations: Revocations) -> Harness {
    Harness::start_with_tasks(world, snapshot(world, revocations), caller()).await
}

/// The generated task client with no security header: tests add (or omit) it themselves.
async fn raw(harness: &Harness) -> TasksClient<Channel> {
    TasksClient::new(
        lanyard_workload::connect_channel(&harness.socket)
            .await
            .unwrap(),
    )
}

async fn watch(harness: &Harness) -> tonic::Streaming<WatchRevocationsResponse> {
    raw(harness)
        .await
        .watch_revocations(with_header(WatchRevocationsRequest {}))
        .await
        .unwrap()
        .into_inner()
}

/// The token ids of a message, which must all carry [`EXP`].
fn ids(message: &WatchRevocationsResponse) -> Vec<&str> {
    assert!(message.revoked.iter().all(|r| r.expires_at == EXP));
    message
        .revoked
        .iter()
        .map(|r| r.token_id.as_str())
        .collect()
}

fn assert_status(status: &tonic::Status, code: Code, message: &str) {
    assert_eq!((status.code(), status.message()), (code, message));
}

#[tokio::test]
async fn the_whole_list_comes_at_once_and_again_on_every_change_never_repeated() {
    let world = World::new();
    let harness = serve(&world, known(&["b", "a"])).await;
    let mut stream = watch(&harness).await;
    let first = prompt(stream.message()).await.unwrap().unwrap();
    assert_eq!(ids(&first), ["a", "b"], "ordered by token id");

    // Changes the list does not see (identities, an identical list) send nothing: the next
    // message is the next list.
    let fewer = world.snapshot(world.standard_identities()[..2].to_vec());
    harness
        .source
        .publish(fewer.with_revocations(known(&["a", "b"])));
    harness.source.publish(snapshot(&world, known(&["a", "b"])));
    harness
        .source
        .publish(snapshot(&world, known(&["a", "b", "c"])));
    let second = prompt(stream.message()).await.unwrap().unwrap();
    assert_eq!(ids(&second), ["a", "b", "c"]);

    // Emptied: an empty list, which says nothing is revoked.
    harness.source.publish(snapshot(&world, known(&[])));
    let third = prompt(stream.message()).await.unwrap().unwrap();
    assert!(third.revoked.is_empty());
}

#[tokio::test]
async fn nothing_is_sent_while_the_list_is_pending_then_the_list_once_known() {
    let world = World::new();
    let harness = serve(&world, Revocations::Pending).await;
    // The call itself is answered: the stream is open and waits.
    let mut stream = watch(&harness).await;
    // Snapshots without the list (an identity removed, then back) send nothing; had anything been
    // sent for them, it would arrive before the list.
    let fewer = world.snapshot(world.standard_identities()[..2].to_vec());
    harness
        .source
        .publish(fewer.with_revocations(Revocations::Pending));
    harness
        .source
        .publish(snapshot(&world, Revocations::Pending));
    harness.source.publish(snapshot(&world, known(&["a"])));
    let first = prompt(stream.message()).await.unwrap().unwrap();
    assert_eq!(ids(&first), ["a"]);

    // Not heard again (a source may restart): the stream keeps quiet rather than say "empty".
    harness
        .source
        .publish(snapshot(&world, Revocations::Pending));
    harness.source.publish(snapshot(&world, known(&["a", "b"])));
    let second = prompt(stream.message()).await.unwrap().unwrap();
    assert_eq!(ids(&second), ["a", "b"]);

    // A stream opened while known gets the list at once.
    let mut late = watch(&harness).await;
    let first = prompt(late.message()).await.unwrap().unwrap();
    assert_eq!(ids(&first), ["a", "b"]);
}

#[tokio::test]
async fn a_source_that_does_not_track_revocations_revokes_nothing() {
    let world = World::new();
    let harness = serve(&world, Revocations::NotTracked).await;
    let mut stream = watch(&harness).await;
    let first = prompt(stream.message()).await.unwrap().unwrap();
    assert!(first.revoked.is_empty());
}

#[tokio::test]
async fn the_security_header_is_required() {
    let world = World::new();
    let harness = serve(&world, known(&["a"])).await;
    let mut client = raw(&harness).await;
    let mut wrong = tonic::Request::new(WatchRevocationsRequest {});
    wrong
        .metadata_mut()
        .insert("workload.spiffe.io", "True".parse().unwrap());
    let mut twice = tonic::Request::new(WatchRevocationsRequest {});
    for _ in 0..2 {
        twice
            .metadata_mut()
            .append("workload.spiffe.io", "true".parse().unwrap());
    }
    let missing = tonic::Request::new(WatchRevocationsRequest {});
    for request in [missing, wrong, twice] {
        let status = client.watch_revocations(request).await.unwrap_err();
        assert_status(
            &status,
            Code::InvalidArgument,
            "security header missing from request",
        );
    }
}

#[tokio::test]
async fn a_caller_without_an_identity_is_refused_and_one_that_loses_it_is_cut_off() {
    let world = World::new();
    for revocations in [known(&["a"]), Revocations::Pending] {
        let harness = Harness::start_with_tasks(
            &world,
            snapshot(&world, revocations),
            selectors(&["unix:uid:4242"]),
        )
        .await;
        let status = raw(&harness)
            .await
            .watch_revocations(with_header(WatchRevocationsRequest {}))
            .await
            .unwrap_err();
        assert_status(&status, Code::PermissionDenied, "no identity issued");
    }

    let harness = serve(&world, known(&["a"])).await;
    let mut stream = watch(&harness).await;
    prompt(stream.message()).await.unwrap().unwrap();
    let admin_only = world.snapshot(vec![world.own.identity(ADMIN, &["unix:uid:0"])]);
    harness
        .source
        .publish(admin_only.with_revocations(known(&["a", "b"])));
    let status = prompt(stream.message()).await.unwrap_err();
    assert_status(&status, Code::PermissionDenied, "no identity issued");
}

#[tokio::test]
async fn shutdown_ends_streams_that_follow_and_streams_that_wait() {
    let world = World::new();
    let mut harness = serve(&world, known(&["a"])).await;
    let mut following = watch(&harness).await;
    prompt(following.message()).await.unwrap().unwrap();
    harness
        .source
        .publish(snapshot(&world, Revocations::Pending));
    let mut waiting = watch(&harness).await;
    harness.stop().await.unwrap();
    for stream in [&mut following, &mut waiting] {
        match prompt(stream.message()).await {
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
            Ok(message) => assert!(message.is_none(), "{message:?}"),
        }
    }
}

#[tokio::test]
async fn a_service_validates_locally_with_the_bundles_and_the_feed() {
    let world = World::new();
    let harness = serve(&world, known(&["jti-ended"])).await;
    let audience = ["tickets".to_owned()];
    let ended = world.own.jwt_with_id(WEB, &audience, "jti-ended");
    let live = world.own.jwt_with_id(WEB, &audience, "jti-live");

    let mut client = harness.client().await;
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let mut feed = client.watch_revocations().await.unwrap();
    let accepts = |revoked: &RevocationList, token: &str| {
        let verified = verify_jwt_svid(token, "tickets", &bundles, SystemTime::now()).unwrap();
        revoked.check(&verified).is_ok()
    };
    let revoked = prompt(feed.next()).await.unwrap();
    assert!(!accepts(&revoked, &ended));
    assert!(accepts(&revoked, &live));

    harness
        .source
        .publish(snapshot(&world, known(&["jti-ended", "jti-live"])));
    let revoked = prompt(feed.next()).await.unwrap();
    assert_eq!(revoked.len(), 2);
    assert!(!accepts(&revoked, &live));
}

#[tokio::test]
async fn a_server_without_the_task_service_has_no_feed() {
    let world = World::new();
    let harness = Harness::start(&world, snapshot(&world, known(&["a"])), caller()).await;
    let err = harness
        .client()
        .await
        .watch_revocations()
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::Unimplemented);
}
