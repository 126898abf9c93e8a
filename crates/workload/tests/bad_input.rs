//! Hostile and broken clients do not stop the server answering a well-behaved one; the socket is
//! bound with the documented permissions.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use lanyard_proto::workload::ValidateJwtsvidRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::Code;

async fn harness() -> (World, Harness) {
    let world = World::new();
    let snapshot = world.snapshot(world.standard_identities());
    let harness = Harness::start(&world, snapshot, caller()).await;
    (world, harness)
}

/// A well-behaved client still gets its SVIDs.
async fn assert_serving(harness: &Harness) {
    let mut client = harness.client().await;
    let context = prompt(client.fetch_x509_context()).await.unwrap();
    assert_eq!(context.svids[0].spiffe_id.as_str(), WEB);
}

/// Writes `bytes` and reads until the server closes the connection.
async fn send_and_wait_for_close(harness: &Harness, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(&harness.socket).await.unwrap();
    // The server may close before reading everything; a failed write is fine.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = prompt(stream.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test]
async fn garbage_bytes_are_refused_and_others_still_served() {
    let (_world, harness) = harness().await;
    // Deterministic noise (an LCG); no HTTP/2 preface.
    let mut state = 0x2545_f491_u32;
    let garbage: Vec<u8> = (0..65_536)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        })
        .collect();
    send_and_wait_for_close(&harness, &garbage).await;
    assert_serving(&harness).await;
}

#[tokio::test]
async fn http1_request_is_refused_and_others_still_served() {
    let (_world, harness) = harness().await;
    send_and_wait_for_close(
        &harness,
        b"POST /SpiffeWorkloadAPI/FetchX509SVID HTTP/1.1\r\nHost: localhost\r\n\
          workload.spiffe.io: true\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_serving(&harness).await;
}

#[tokio::test]
async fn corrupt_http2_header_block_closes_only_that_connection() {
    let (_world, harness) = harness().await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // empty SETTINGS
    // HEADERS, END_HEADERS, stream 1: an index far beyond any table.
    bytes.extend([0, 0, 3, 0x1, 0x4, 0, 0, 0, 1, 0xff, 0xff, 0x7f]);
    send_and_wait_for_close(&harness, &bytes).await;
    assert_serving(&harness).await;
}

#[tokio::test]
async fn oversized_message_is_refused_and_others_still_served() {
    let (_world, harness) = harness().await;
    let mut raw = harness.raw().await;
    let status = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x".repeat(lanyard_workload::DEFAULT_MAX_MESSAGE_SIZE + 1),
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert_serving(&harness).await;
}

#[tokio::test]
async fn hundreds_of_idle_connections_do_not_block_service_or_shutdown() {
    let (_world, mut harness) = harness().await;
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut stream = UnixStream::connect(&harness.socket).await.unwrap();
        // A third say nothing, a third stop after the preface, a third mid-frame.
        match i % 3 {
            0 => {}
            1 => stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap(),
            _ => stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x10\x01")
                .await
                .unwrap(),
        }
        idle.push(stream);
    }
    assert_serving(&harness).await;
    harness.stop().await.unwrap();
    drop(idle);
}

#[tokio::test]
async fn bind_sets_permissions_and_refuses_to_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("lanyard").join("api.sock");
    let listener = lanyard_workload::bind(&socket).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(socket.parent().unwrap()), 0o755);
    assert_eq!(mode(&socket), 0o777);

    // A live socket is refused…
    let err = lanyard_workload::bind(&socket).unwrap_err();
    assert!(
        matches!(
            err,
            lanyard_workload::Error::Socket {
                source: lanyard_fs::Error::SocketInUse { .. },
                ..
            }
        ),
        "{err}"
    );
    // …a stale one (its listener gone) is replaced…
    drop(listener);
    let listener = lanyard_workload::bind(&socket).unwrap();
    drop(listener);
    // …and any other file is left alone.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let err = lanyard_workload::bind(&file).unwrap_err();
    assert!(
        matches!(
            err,
            lanyard_workload::Error::Socket {
                source: lanyard_fs::Error::NotASocket { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // A directory others can write into is refused: they could replace the socket.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = lanyard_workload::bind(&open.join("api.sock")).unwrap_err();
    assert!(
        matches!(
            err,
            lanyard_workload::Error::Socket {
                source: lanyard_fs::Error::Writable { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(!open.join("api.sock").exists());
}
