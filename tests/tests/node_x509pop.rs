//! x509pop node attestation against a real server: agents prove a key certified by a CA the
//! server was told to trust, and their certificate's facts become selectors for node aliases.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use lanyard_e2e::Server;
use lanyard_e2e::node_client::{SimAgent, attest_x509pop, attest_x509pop_signed_by, key_and_csr};
use lanyard_proto::node as pb;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::Code;

struct NodeCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl NodeCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A node certificate with common name `cn`, signed by this CA, and its key.
    fn issue(&self, cn: &str) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        (params.signed_by(&key, &self.issuer).unwrap(), key)
    }

    /// A node certificate written as PEM files into `dir`; returns (certificate, key) paths.
    fn node_files(
        &self,
        cn: &str,
        dir: &std::path::Path,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = self.issue(cn);
        let (cert_path, key_path) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// A server that trusts this CA for x509pop, with more `server run` flags, keeping its files
    /// in `dir`.
    fn server(&self, dir: &std::path::Path, extra: &[&str]) -> Server {
        let ca_path = dir.join("nodes.pem");
        std::fs::write(&ca_path, &self.pem).unwrap();
        let mut args = vec!["--x509pop-ca", ca_path.to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::start_with(&args)
    }

    /// A node certificate; returns (chain DER, key PKCS#8 DER).
    fn node(&self, cn: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
        let (cert, key) = self.issue(cn);
        (vec![cert.der().to_vec()], key.serialize_der())
    }
}

async fn next(stream: &mut tonic::Streaming<pb::SyncEntriesResponse>) -> pb::SyncEntriesResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn x509pop_agents_attest_reattest_and_match_node_aliases() {
    let ca = NodeCa::new("node provisioning CA");
    let dir = tempfile::tempdir().unwrap();
    let server = ca.server(dir.path(), &[]);
    let addr = server.node_addr();
    let bundle = server.bundle();

    let (chain, key) = ca.node("node-1");
    let (_, csr) = key_and_csr().unwrap();
    let svid = attest_x509pop(addr, &bundle, chain.clone(), &key, csr)
        .await
        .unwrap();
    assert!(
        svid.spiffe_id
            .starts_with("spiffe://example.org/lanyard/agent/x509pop/"),
        "{}",
        svid.spiffe_id
    );
    assert!(
        svid.selectors
            .contains(&"x509pop:subject:cn:node-1".to_owned()),
        "{:?}",
        svid.selectors
    );

    // The same node may attest again and keeps its ID.
    let (_, csr) = key_and_csr().unwrap();
    let again = attest_x509pop(addr, &bundle, chain.clone(), &key, csr)
        .await
        .unwrap();
    assert_eq!(again.spiffe_id, svid.spiffe_id);

    // A node alias matching the certificate's CN brings its entries to the agent.
    let alias = "spiffe://example.org/nodes/cn-node-1";
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            "spiffe://example.org/lanyard/server",
            "--spiffe-id",
            alias,
            "--selector",
            "x509pop:subject:cn:node-1",
        ])
        .ok();
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            alias,
            "--spiffe-id",
            "spiffe://example.org/daemonset",
            "--selector",
            "unix:uid:0",
        ])
        .ok();
    let (agent_key, csr) = key_and_csr().unwrap();
    let third = attest_x509pop(addr, &bundle, chain.clone(), &key, csr)
        .await
        .unwrap();
    let agent = SimAgent::from_svid(addr, &bundle, third, &agent_key).unwrap();
    let mut client = agent.client().await.unwrap();
    let mut stream = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    let ids: Vec<&str> = first.entries.iter().map(|e| e.spiffe_id.as_str()).collect();
    assert_eq!(ids, ["spiffe://example.org/daemonset"]);

    // A later entry under the alias is pushed too.
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            alias,
            "--spiffe-id",
            "spiffe://example.org/logs",
            "--selector",
            "unix:uid:1",
        ])
        .ok();
    let pushed = next(&mut stream).await;
    assert_eq!(pushed.entries[0].spiffe_id, "spiffe://example.org/logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_x509pop_attempts_are_refused() {
    let ca = NodeCa::new("node provisioning CA");
    let dir = tempfile::tempdir().unwrap();
    let server = ca.server(dir.path(), &[]);
    let addr = server.node_addr();
    let bundle = server.bundle();

    // A certificate from a CA the server does not trust, even one with the same name.
    let impostor = NodeCa::new("node provisioning CA");
    let (chain, key) = impostor.node("node-1");
    let (_, csr) = key_and_csr().unwrap();
    let status = attest_x509pop(addr, &bundle, chain, &key, csr.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A trusted certificate, but the challenge signed with another node's key.
    let (chain, _) = ca.node("node-2");
    let (other_chain, other_key) = ca.node("node-3");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(other_key.into());
    let other = lanyard_attestation::X509PopClient::new(other_chain, &key).unwrap();
    let status = attest_x509pop_signed_by(addr, &bundle, chain, &other, csr.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Garbage instead of a chain.
    let status = attest_x509pop(
        addr,
        &bundle,
        vec![b"not a certificate".to_vec()],
        &key_and_csr().unwrap().0,
        csr.clone(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(status.code(), Code::InvalidArgument | Code::Internal),
        "{status:?}"
    );

    // A server without x509pop configured says so.
    let plain = Server::start();
    let plain_bundle = plain.bundle();
    let (chain, key) = ca.node("node-4");
    let status = attest_x509pop(plain.node_addr(), &plain_bundle, chain, &key, csr)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[test]
fn a_real_agent_attests_with_x509pop_and_serves_node_alias_entries() {
    let ca = NodeCa::new("node provisioning CA");
    let dir = tempfile::tempdir().unwrap();
    let server = ca.server(dir.path(), &[]);
    let alias = "spiffe://example.org/nodes/web-tier";
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            "spiffe://example.org/lanyard/server",
            "--spiffe-id",
            alias,
            "--selector",
            "x509pop:subject:cn:web-7",
        ])
        .ok();
    let uid = rustix::process::getuid().as_raw();
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            alias,
            "--spiffe-id",
            "spiffe://example.org/web",
            "--selector",
            &format!("unix:uid:{uid}"),
        ])
        .ok();

    let (cert, key) = ca.node_files("web-7", dir.path());
    let agent = lanyard_e2e::agent_process::Agent::start_x509pop(&server, &cert, &key);
    let fetched = lanyard_e2e::wait_for(
        "an SVID through the node alias",
        Duration::from_secs(60),
        || {
            let out = agent.cli(&["x509", "fetch", "--output", "json"]);
            out.success.then(|| out.json())
        },
    );
    assert_eq!(fetched["svids"][0]["spiffe_id"], "spiffe://example.org/web");
    let agents = server.cli(&["agent", "list", "--output", "json"]).json();
    assert_eq!(agents[0]["attestation_type"], "x509pop");
    assert!(
        agents[0]["spiffe_id"]
            .as_str()
            .unwrap()
            .starts_with("spiffe://example.org/lanyard/agent/x509pop/")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_x509pop_challenge_left_unanswered_is_cut_off() {
    let ca = NodeCa::new("node provisioning CA");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[node_api]\nattestation_timeout = \"1s\"\n").unwrap();
    let server = ca.server(dir.path(), &["--config", config.to_str().unwrap()]);
    let bundle = server.bundle();
    let mut client = lanyard_e2e::node_client::connect(server.node_addr(), &bundle, None)
        .await
        .unwrap();
    let (chain, _) = ca.node("node-1");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::AttestAgentRequest {
        step: Some(pb::attest_agent_request::Step::Params(
            pb::AttestationParams {
                attestor: "x509pop".to_owned(),
                payload: chain.concat(),
                csr: key_and_csr().unwrap().1,
            },
        )),
    })
    .await
    .unwrap();
    let mut responses = client
        .attest_agent(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let challenge = responses.message().await.unwrap().unwrap();
    assert!(matches!(
        challenge.step,
        Some(pb::attest_agent_response::Step::Challenge(_))
    ));
    // The challenge is never answered, and the stream stays open: the server ends it.
    let status = tokio::time::timeout(Duration::from_secs(20), responses.message())
        .await
        .expect("the server must give up on an unanswered challenge")
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_node_alias_stops_granting() {
    let ca = NodeCa::new("node provisioning CA");
    let dir = tempfile::tempdir().unwrap();
    let server = ca.server(dir.path(), &[]);
    let addr = server.node_addr();
    let bundle = server.bundle();

    // An alias that expires in a few seconds, and an entry under it.
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let alias = "spiffe://example.org/nodes/short-lived";
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            "spiffe://example.org/lanyard/server",
            "--spiffe-id",
            alias,
            "--selector",
            "x509pop:subject:cn:node-1",
            "--expires-at",
            &expires_at.to_string(),
        ])
        .ok();
    let entry_id = server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            alias,
            "--spiffe-id",
            "spiffe://example.org/daemonset",
            "--selector",
            "unix:uid:0",
            "--output",
            "json",
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (chain, key) = ca.node("node-1");
    let (agent_key, csr) = key_and_csr().unwrap();
    let svid = attest_x509pop(addr, &bundle, chain, &key, csr)
        .await
        .unwrap();
    let agent = SimAgent::from_svid(addr, &bundle, svid, &agent_key).unwrap();
    let mut client = agent.client().await.unwrap();
    let mut stream = client
        .sync_entries(pb::SyncEntriesRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.entries.len(), 1);

    // When the alias expires the stream sends a full set without its entries, unprompted.
    let after = next(&mut stream).await;
    assert!(after.full_sync, "{after:?}");
    assert!(after.entries.is_empty(), "{after:?}");
    let request = pb::BatchNewX509SvidRequest {
        params: vec![pb::X509SvidParams {
            entry_id,
            csr: key_and_csr().unwrap().1,
        }],
    };
    let minted = client
        .batch_new_x509_svid(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minted.results[0].code, Code::PermissionDenied as i32);
    // An agent resuming from before the expiry is not sent a delta that would keep the entry.
    let mut resumed = client
        .sync_entries(pb::SyncEntriesRequest {
            since_revision: first.revision,
        })
        .await
        .unwrap()
        .into_inner();
    let resync = next(&mut resumed).await;
    assert!(resync.full_sync && resync.entries.is_empty(), "{resync:?}");
}
