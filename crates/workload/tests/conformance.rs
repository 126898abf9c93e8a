//! SPIFFE.md §9: the statuses a Workload API server answers with, against the real server on a
//! temporary socket.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use common::*;
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, WitBundlesRequest, WitsvidRequest,
    X509BundlesRequest, X509svidRequest,
};
use lanyard_workload::Revocations;
use tonic::Code;

async fn harness() -> (World, Harness) {
    let world = World::new();
    let snapshot = world.snapshot(world.standard_identities());
    let harness = Harness::start(&world, snapshot, caller()).await;
    (world, harness)
}

/// How a request's security header is (mis)set.
#[derive(Debug, Clone, Copy)]
enum Header {
    Missing,
    Wrong,
    Duplicated,
}

fn request<T>(message: T, header: Header) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    match header {
        Header::Missing => {}
        Header::Wrong => {
            metadata.insert("workload.spiffe.io", "True".parse().unwrap());
        }
        Header::Duplicated => {
            metadata.append("workload.spiffe.io", "true".parse().unwrap());
            metadata.append("workload.spiffe.io", "true".parse().unwrap());
        }
    }
    request
}

fn assert_status(status: &tonic::Status, code: Code, message: &str) {
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

#[tokio::test]
async fn every_rpc_without_exactly_one_true_header_is_invalid_argument() {
    let (_world, harness) = harness().await;
    let mut raw = harness.raw().await;
    let expected = "security header missing from request";
    for header in [Header::Missing, Header::Wrong, Header::Duplicated] {
        let statuses = [
            raw.fetch_x509svid(request(X509svidRequest {}, header))
                .await
                .err(),
            raw.fetch_x509_bundles(request(X509BundlesRequest {}, header))
                .await
                .err(),
            raw.fetch_jwt_bundles(request(JwtBundlesRequest {}, header))
                .await
                .err(),
            raw.fetch_jwtsvid(request(
                JwtsvidRequest {
                    audience: vec!["a".into()],
                    spiffe_id: String::new(),
                },
                header,
            ))
            .await
            .err(),
            raw.validate_jwtsvid(request(
                ValidateJwtsvidRequest {
                    audience: "a".into(),
                    svid: "x.y.z".into(),
                },
                header,
            ))
            .await
            .err(),
            raw.fetch_witsvid(request(WitsvidRequest::default(), header))
                .await
                .err(),
            raw.fetch_wit_bundles(request(WitBundlesRequest {}, header))
                .await
                .err(),
        ];
        for (rpc, status) in statuses.into_iter().enumerate() {
            let status = status.unwrap_or_else(|| panic!("rpc {rpc} with {header:?} succeeded"));
            assert_status(&status, Code::InvalidArgument, expected);
        }
    }
    // The header is checked before attestation: nobody was attested.
    assert!(harness.attestor.seen().is_empty());
}

#[tokio::test]
async fn caller_with_no_identity_is_permission_denied_everywhere() {
    let (_world, harness) = harness().await;
    harness
        .attestor
        .set_selectors(selectors(&["unix:uid:4242"]));
    let mut raw = harness.raw().await;
    let statuses = [
        raw.fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .err(),
        raw.fetch_x509_bundles(with_header(X509BundlesRequest {}))
            .await
            .err(),
        raw.fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
            .await
            .err(),
        raw.fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .err(),
    ];
    for status in statuses {
        assert_status(
            &status.unwrap(),
            Code::PermissionDenied,
            "no identity issued",
        );
    }
}

#[tokio::test]
async fn failed_attestation_is_unavailable() {
    let (_world, harness) = harness().await;
    harness.attestor.fail();
    let mut raw = harness.raw().await;
    let status = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_status(&status, Code::Unavailable, "workload attestation failed");
    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_status(&status, Code::Unavailable, "workload attestation failed");
}

#[tokio::test]
async fn peer_credentials_read_at_accept_reach_the_attestor() {
    let (_world, harness) = harness().await;
    let mut client = harness.client().await;
    client.fetch_x509_context().await.unwrap();
    let seen = harness.attestor.seen();
    // Files this process creates are owned by its effective uid and gid.
    let meta = std::fs::metadata(harness.socket.parent().unwrap()).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].pid, Some(std::process::id() as i32));
    assert_eq!((seen[0].uid, seen[0].gid), (meta.uid(), meta.gid()));
}

#[tokio::test]
async fn fetch_jwt_svid_request_checks() {
    let (_world, harness) = harness().await;
    let mut raw = harness.raw().await;
    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest::default()))
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "audience must be specified");

    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["foo".into()],
            spiffe_id: "<invalid>".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("invalid requested SPIFFE ID: scheme is missing or invalid"),
        "{status:?}"
    );

    let status = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["foo".into()],
            spiffe_id: ADMIN.into(),
        }))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "no identity issued");
}

#[tokio::test]
async fn fetch_jwt_svid_returns_one_token_per_entitled_id_or_the_requested_one() {
    let (world, harness) = harness().await;
    let mut client = harness.client().await;
    let audiences = vec!["spiffe://example.org/tool".to_owned(), "second".to_owned()];
    let all = client.fetch_jwt_svids(&audiences, None).await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [WEB, DB]);
    assert_eq!(all[0].hint, "web");
    // Each token is for its ID and carries exactly the requested audiences.
    let bundles = world.bundles();
    for svid in &all {
        let verified = lanyard_core::verify_jwt_svid(
            &svid.token,
            "second",
            &bundles,
            std::time::SystemTime::now(),
        )
        .unwrap();
        assert_eq!(verified.spiffe_id(), &svid.spiffe_id);
        assert_eq!(verified.audience(), audiences.as_slice());
    }
    let only = client
        .fetch_jwt_svids(&audiences, Some(&id(DB)))
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].spiffe_id.as_str(), DB);
}

#[tokio::test]
async fn validate_jwt_svid_request_checks_and_failures() {
    let (world, harness) = harness().await;
    let mut raw = harness.raw().await;
    let status = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: String::new(),
            svid: "a.b.c".into(),
        }))
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "audience must be specified");
    let status = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: String::new(),
        }))
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, "svid must be specified");

    let mut client = harness.client().await;
    let err = client
        .validate_jwt_svid("a", "not-a-jwt")
        .await
        .unwrap_err();
    let status = err.status().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("three parts"), "{status:?}");

    // A trust domain the agent has no bundle for.
    let stranger = Authority::new("domain2.test");
    let token = stranger.jwt(
        "spiffe://domain2.test/x",
        &["a".to_owned()],
        Duration::from_secs(60),
    );
    let status = client.validate_jwt_svid("a", &token).await.unwrap_err();
    let status = status.status().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("domain2.test"), "{status:?}");

    // Wrong audience, and a token signed by another trust domain's key claiming ours.
    let token = world
        .own
        .jwt(WEB, &["b".to_owned()], Duration::from_secs(60));
    let status = client.validate_jwt_svid("a", &token).await.unwrap_err();
    assert_eq!(status.status().unwrap().code(), Code::InvalidArgument);
    let forged = world
        .foreign
        .jwt(WEB, &["a".to_owned()], Duration::from_secs(60));
    let status = client.validate_jwt_svid("a", &forged).await.unwrap_err();
    assert_eq!(status.status().unwrap().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn validate_jwt_svid_of_own_trust_domain_returns_all_claims() {
    let (world, harness) = harness().await;
    let mut client = harness.client().await;
    let token = world
        .own
        .jwt(DB, &["a".to_owned()], Duration::from_secs(60));
    let validated = client.validate_jwt_svid("a", &token).await.unwrap();
    assert_eq!(validated.spiffe_id.as_str(), DB);
    let claims = &validated.claims;
    assert_eq!(claims["sub"], DB);
    assert_eq!(claims["aud"], serde_json::json!(["a"]));
    assert!(
        claims["exp"].is_i64() && claims["iat"].is_i64(),
        "{claims:?}"
    );
    assert_eq!(claims["extra"], "private claim");
}

#[tokio::test]
async fn validate_jwt_svid_of_federated_trust_domain_filters_claims() {
    let (world, harness) = harness().await;
    let mut client = harness.client().await;
    let token = world.foreign.jwt(
        "spiffe://other.org/svc",
        &["a".to_owned()],
        Duration::from_secs(60),
    );
    let validated = client.validate_jwt_svid("a", &token).await.unwrap();
    assert_eq!(validated.spiffe_id.as_str(), "spiffe://other.org/svc");
    let mut names: Vec<_> = validated.claims.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["aud", "exp", "sub"]);
}

#[tokio::test]
async fn federated_tokens_validate_only_for_callers_whose_entries_federate() {
    // `web` federates with other.org, so its callers validate other.org tokens; a caller with no
    // such entry validates only tokens of its own trust domain.
    let (world, harness) = harness().await;
    let mut client = harness.client().await;
    let token = world.foreign.jwt(
        "spiffe://other.org/svc",
        &["a".to_owned()],
        Duration::from_secs(60),
    );
    assert!(client.validate_jwt_svid("a", &token).await.is_ok());
    harness
        .attestor
        .set_selectors(selectors(&["unix:uid:7", "unix:gid:50"]));
    let err = client.validate_jwt_svid("a", &token).await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::InvalidArgument);
    // Own-trust-domain tokens still validate for a caller with no identity.
    let own = world
        .own
        .jwt(WEB, &["a".to_owned()], Duration::from_secs(60));
    assert!(client.validate_jwt_svid("a", &own).await.is_ok());
}

#[tokio::test]
async fn wit_rpcs_are_unimplemented() {
    let (_world, harness) = harness().await;
    let mut raw = harness.raw().await;
    let status = raw
        .fetch_witsvid(with_header(WitsvidRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let status = raw
        .fetch_wit_bundles(with_header(WitBundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

/// Tokens of ended tasks are refused by id; a source that has not heard the list yet validates
/// nothing; one that does not track revocations checks only the token.
#[tokio::test]
async fn validate_jwt_svid_refuses_revoked_tokens_and_waits_for_the_list() {
    let (world, harness) = harness().await;
    let audience = ["tool".to_owned()];
    let revoked = world.own.jwt_with_id(WEB, &audience, "jti-revoked");
    let live = world.own.jwt_with_id(WEB, &audience, "jti-live");
    let mut client = harness.client().await;
    // Not tracked (the fake's default): both pass.
    client.validate_jwt_svid("tool", &revoked).await.unwrap();

    let known = world
        .snapshot(world.standard_identities())
        .with_revocations(Revocations::Known(std::sync::Arc::new(
            [(
                "jti-revoked".to_owned(),
                SystemTime::now() + Duration::from_secs(60),
            )]
            .into_iter()
            .collect(),
        )));
    harness.source.publish(known);
    let status = client
        .validate_jwt_svid("tool", &revoked)
        .await
        .unwrap_err();
    let status = status.status().unwrap();
    assert_status(
        status,
        Code::InvalidArgument,
        "token has been revoked (its task ended)",
    );
    client.validate_jwt_svid("tool", &live).await.unwrap();
    // A token without a jti cannot be named in the list, and passes.
    let plain = world.own.jwt(WEB, &audience, Duration::from_secs(60));
    client.validate_jwt_svid("tool", &plain).await.unwrap();

    let pending = world
        .snapshot(world.standard_identities())
        .with_revocations(Revocations::Pending);
    harness.source.publish(pending);
    for token in [&revoked, &live] {
        let status = client.validate_jwt_svid("tool", token).await.unwrap_err();
        let status = status.status().unwrap();
        assert_status(
            status,
            Code::Unavailable,
            "the agent has not received the list of revoked tokens from its server yet; retry shortly",
        );
    }
}
