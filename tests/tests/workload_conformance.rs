//! SPIFFE.md §5, §6, §9 on a real agent's socket (`lanyard dev`): selectors isolate callers
//! (different executables, different uids through `setpriv`), the security header and request
//! checks come first on every RPC, WIT RPCs are unimplemented, and hostile input does not stop the
//! agent serving a well-behaved `lanyard x509 fetch`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::time::Duration;

use lanyard_e2e::lanyard_bin;
use lanyard_e2e::workload::{Dev, lanyard_at};
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitBundlesRequest, WitsvidRequest,
    X509BundlesRequest, X509svidRequest,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::Channel;

/// A uid with no entries of its own and no access to anything here but the agent's socket.
const NOBODY: u32 = 65534;
/// How long anything that should happen at once may take.
const PROMPT: Duration = Duration::from_secs(15);

async fn raw_client(dev: &Dev) -> SpiffeWorkloadApiClient<Channel> {
    let channel = lanyard_workload::connect_channel(&dev.socket)
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

/// How a request's security header is (mis)set.
#[derive(Debug, Clone, Copy)]
enum Header {
    Missing,
    Wrong,
    Right,
}

fn request<T>(message: T, header: Header) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = match header {
        Header::Missing => return request,
        Header::Wrong => "yes",
        Header::Right => "true",
    };
    request
        .metadata_mut()
        .insert("workload.spiffe.io", value.parse().unwrap());
    request
}

/// The statuses of all seven RPCs (streams included) called with `header`; `None` for success.
async fn every_rpc(
    raw: &mut SpiffeWorkloadApiClient<Channel>,
    header: Header,
) -> Vec<(&'static str, Option<tonic::Status>)> {
    let jwt = || JwtsvidRequest {
        audience: vec!["a".into()],
        spiffe_id: String::new(),
    };
    vec![
        (
            "FetchX509SVID",
            raw.fetch_x509svid(request(X509svidRequest {}, header))
                .await
                .err(),
        ),
        (
            "FetchX509Bundles",
            raw.fetch_x509_bundles(request(X509BundlesRequest {}, header))
                .await
                .err(),
        ),
        (
            "FetchJWTBundles",
            raw.fetch_jwt_bundles(request(JwtBundlesRequest {}, header))
                .await
                .err(),
        ),
        (
            "FetchJWTSVID",
            raw.fetch_jwtsvid(request(jwt(), header)).await.err(),
        ),
        (
            "ValidateJWTSVID",
            raw.validate_jwtsvid(request(
                ValidateJwtsvidRequest {
                    audience: "a".into(),
                    svid: "x.y.z".into(),
                },
                header,
            ))
            .await
            .err(),
        ),
        (
            "FetchWITSVID",
            raw.fetch_witsvid(request(WitsvidRequest::default(), header))
                .await
                .err(),
        ),
        (
            "FetchWITBundles",
            raw.fetch_wit_bundles(request(WitBundlesRequest {}, header))
                .await
                .err(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_request_checks_on_the_real_socket() {
    let dev = Dev::start();
    let mut raw = raw_client(&dev).await;
    for header in [Header::Missing, Header::Wrong] {
        for (rpc, status) in every_rpc(&mut raw, header).await {
            let status = status.unwrap_or_else(|| panic!("{rpc} with {header:?} header succeeded"));
            assert_eq!(
                (status.code(), status.message()),
                (
                    Code::InvalidArgument,
                    "security header missing from request"
                ),
                "{rpc} with {header:?} header"
            );
        }
    }

    // With the header: everything but WIT answers; WIT is unimplemented.
    for (rpc, status) in every_rpc(&mut raw, Header::Right).await {
        match rpc {
            "FetchWITSVID" | "FetchWITBundles" => {
                assert_eq!(status.unwrap().code(), Code::Unimplemented, "{rpc}");
            }
            // "x.y.z" is not a JWT.
            "ValidateJWTSVID" => assert_eq!(status.unwrap().code(), Code::InvalidArgument),
            _ => assert!(status.is_none(), "{rpc}: {status:?}"),
        }
    }

    // Empty audiences and an empty token are the caller's mistake.
    let status = raw
        .fetch_jwtsvid(request(JwtsvidRequest::default(), Header::Right))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "audience must be specified")
    );
    let status = raw
        .fetch_jwtsvid(request(
            JwtsvidRequest {
                audience: vec![String::new()],
                spiffe_id: String::new(),
            },
            Header::Right,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = raw
        .validate_jwtsvid(request(
            ValidateJwtsvidRequest {
                audience: String::new(),
                svid: "a.b.c".into(),
            },
            Header::Right,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = raw
        .validate_jwtsvid(request(
            ValidateJwtsvidRequest {
                audience: "a".into(),
                svid: String::new(),
            },
            Header::Right,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A JWT-SVID for an ID this caller does not hold.
    let status = raw
        .fetch_jwtsvid(request(
            JwtsvidRequest {
                audience: vec!["a".into()],
                spiffe_id: "spiffe://example.org/not-mine".into(),
            },
            Header::Right,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[test]
fn selectors_give_each_process_only_its_own_svids() {
    let dev = Dev::start();
    let me = dev.fetched_ids(&lanyard_bin(), None).unwrap();
    assert_eq!(me.len(), 1, "{me:?}");
    let me = me[0].as_str();
    // Two more executables: `lanyard` at two other paths.
    let a = lanyard_at(&dev.scratch().join("a"), "lanyard");
    let b = lanyard_at(&dev.scratch().join("b"), "lanyard");
    dev.open_socket_to_other_users();

    // Another uid with no entry has no identity: PermissionDenied, on X.509 and JWT alike.
    let err = dev.fetched_ids(&a, Some(NOBODY)).unwrap_err();
    assert!(err.contains("no identity issued"), "{err}");
    let out = dev.workload_cli(&a, Some(NOBODY), &["jwt", "fetch", "--audience", "x"]);
    assert!(!out.success);
    assert!(out.stderr.contains("no identity issued"), "{}", out.stderr);

    let path = |exe: &Path| format!("unix:path:{}", exe.display());
    let nobody = format!("unix:uid:{NOBODY}");
    let (id_a, id_b) = ("spiffe://example.org/iso/a", "spiffe://example.org/iso/b");
    let id_a_nobody = "spiffe://example.org/iso/a-as-nobody";
    let id_nobody = "spiffe://example.org/iso/nobody";
    dev.create_entry(id_a, &[&path(&a)], &[]);
    dev.create_entry(id_b, &[&path(&b)], &[]);
    dev.create_entry(id_nobody, &[&nobody], &[]);
    // Both selectors must match.
    dev.create_entry(id_a_nobody, &[&path(&a), &nobody], &[]);

    dev.wait_for_ids(&a, None, &[id_a, me]);
    dev.wait_for_ids(&b, None, &[id_b, me]);
    dev.wait_for_ids(&a, Some(NOBODY), &[id_a, id_a_nobody, id_nobody]);
    dev.wait_for_ids(&b, Some(NOBODY), &[id_b, id_nobody]);
    dev.wait_for_ids(&lanyard_bin(), Some(NOBODY), &[id_nobody]);
    dev.wait_for_ids(&lanyard_bin(), None, &[me]);

    // JWT-SVIDs follow the same entitlements, and one for an ID of another process is refused.
    let out = dev.workload_cli(
        &b,
        Some(NOBODY),
        &["jwt", "fetch", "--audience", "x", "--output", "json"],
    );
    let ids: Vec<String> = out
        .json()
        .as_array()
        .expect("a list of JWT-SVIDs")
        .iter()
        .map(|s| s["spiffe_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [id_b, id_nobody]);
    let out = dev.workload_cli(
        &b,
        Some(NOBODY),
        &["jwt", "fetch", "--audience", "x", "--spiffe-id", id_a],
    );
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stderr.contains("no identity issued"), "{}", out.stderr);
}

/// `lanyard x509 fetch` (a well-behaved client, a separate process) still gets its SVID.
fn assert_serving(dev: &mut Dev, after: &str) {
    assert!(dev.is_running(), "lanyard dev died after {after}");
    let ids = dev
        .fetched_ids(&lanyard_bin(), None)
        .unwrap_or_else(|e| panic!("not served after {after}: {e}"));
    assert_eq!(ids.len(), 1, "after {after}: {ids:?}");
}

/// Writes `bytes` and reads until the agent closes the connection.
async fn send_and_wait_for_close(socket: &Path, bytes: &[u8]) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    // The agent may close before reading everything; a failed write is fine.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(PROMPT, stream.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the agent kept a broken connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_does_not_stop_the_agent_serving_others() {
    let mut dev = Dev::start();
    let socket = dev.socket.clone();

    // Deterministic noise (an LCG), no HTTP/2 preface.
    let mut state = 0x2545_f491_u32;
    let garbage: Vec<u8> = (0..65_536)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        })
        .collect();
    send_and_wait_for_close(&socket, &garbage).await;
    assert_serving(&mut dev, "garbage bytes");

    send_and_wait_for_close(
        &socket,
        b"POST /SpiffeWorkloadAPI/FetchX509SVID HTTP/1.1\r\nHost: localhost\r\n\
          workload.spiffe.io: true\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_serving(&mut dev, "an HTTP/1 request");

    // A corrupt HPACK block: an index far beyond any table.
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    bytes.extend([0, 0, 3, 0x1, 0x4, 0, 0, 0, 1, 0xff, 0xff, 0x7f]);
    send_and_wait_for_close(&socket, &bytes).await;
    assert_serving(&mut dev, "a corrupt HTTP/2 header block");

    // A message over the agent's 4 MiB limit.
    let mut raw = raw_client(&dev).await;
    let status = raw
        .validate_jwtsvid(request(
            ValidateJwtsvidRequest {
                audience: "a".into(),
                svid: "x".repeat(4 * 1024 * 1024 + 1),
            },
            Header::Right,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert_serving(&mut dev, "an oversized message");

    // 1,000 idle connections, held open while others are served: a third say nothing, a third
    // stop after the HTTP/2 preface, a third in the middle of a frame header.
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000 {
        let mut stream = UnixStream::connect(&socket).await.unwrap();
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
    assert_serving(&mut dev, "1,000 idle connections were opened");
    // The raw client's connection is still good too.
    let context = raw
        .fetch_x509svid(request(X509svidRequest {}, Header::Right))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.svids.len(), 1);
    drop(idle);
    assert_serving(&mut dev, "1,000 idle connections were dropped");
}
