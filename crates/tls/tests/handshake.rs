//! Real TLS handshakes over loopback TCP with SVIDs from a real lanyard CA.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use lanyard_ca::{Ca, CaConfig, KeyType, MemoryKeyManager, PrivateKey, X509SvidRequest};
use lanyard_core::{BundleSet, SpiffeId, SystemClock, TrustDomain};
use lanyard_tls::{
    Authorizer, BundleHandle, SpiffeClientVerifier, SpiffeServerVerifier, SvidHandle,
    client_config, peer_spiffe_id, server_config,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

struct Domain {
    ca: Ca,
    td: TrustDomain,
}

impl Domain {
    fn new(name: &str) -> Self {
        let td = TrustDomain::new(name).unwrap();
        let ca = Ca::new(
            CaConfig::new(td.clone()),
            Arc::new(MemoryKeyManager::new()),
            Arc::new(SystemClock),
        )
        .unwrap();
        Self { ca, td }
    }

    fn id(&self, path: &str) -> SpiffeId {
        self.td.id_with_path(path).unwrap()
    }

    fn svid(&self, path: &str) -> SvidHandle {
        let (key, pkcs8) = PrivateKey::generate(KeyType::EcP256).unwrap();
        let svid = self
            .ca
            .mint_x509_svid(key.public_key_der(), &X509SvidRequest::new(self.id(path)))
            .unwrap();
        SvidHandle::new(&svid.cert_chain, pkcs8.as_bytes()).unwrap()
    }

    fn bundles(&self) -> BundleHandle {
        BundleHandle::new([self.ca.bundle()].into_iter().collect::<BundleSet>())
    }
}

/// Runs one handshake plus an echo; returns what each side saw of the other, or the client's error.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> Result<(Option<SpiffeId>, Option<SpiffeId>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let client_id = tls.get_ref().1.peer_certificates().and_then(peer_spiffe_id);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<_, String>(client_id)
    });
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_result = async {
        let mut tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let server_id = tls.get_ref().1.peer_certificates().and_then(peer_spiffe_id);
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        Ok::<_, String>(server_id)
    }
    .await;
    let server_result = server_task.await.unwrap();
    let server_id = client_result?;
    let client_id = server_result?;
    Ok((server_id, client_id))
}

#[tokio::test]
async fn mutual_tls_authenticates_both_spiffe_ids() {
    let domain = Domain::new("example.org");
    let server = server_config(
        domain.svid("/server"),
        Some(SpiffeClientVerifier::new(
            domain.bundles(),
            Authorizer::MemberOf(domain.td.clone()),
        )),
    )
    .unwrap();
    let client = client_config(
        SpiffeServerVerifier::new(domain.bundles(), Authorizer::Exact(domain.id("/server"))),
        Some(domain.svid("/client")),
    )
    .unwrap();
    let (server_id, client_id) = handshake(server, client).await.unwrap();
    assert_eq!(server_id, Some(domain.id("/server")));
    assert_eq!(client_id, Some(domain.id("/client")));
}

#[tokio::test]
async fn a_server_with_the_wrong_id_is_refused() {
    let domain = Domain::new("example.org");
    let server = server_config(domain.svid("/impostor"), None).unwrap();
    let client = client_config(
        SpiffeServerVerifier::new(domain.bundles(), Authorizer::Exact(domain.id("/server"))),
        None,
    )
    .unwrap();
    let err = handshake(server, client).await.unwrap_err();
    assert!(err.contains("not authorized"), "{err}");
}

#[tokio::test]
async fn a_client_of_another_trust_domain_is_refused() {
    let ours = Domain::new("example.org");
    let theirs = Domain::new("other.org");
    // The server trusts both bundles but authorizes only its own trust domain.
    let both: BundleSet = [ours.ca.bundle(), theirs.ca.bundle()].into_iter().collect();
    let server = server_config(
        ours.svid("/server"),
        Some(SpiffeClientVerifier::new(
            BundleHandle::new(both),
            Authorizer::MemberOf(ours.td.clone()),
        )),
    )
    .unwrap();
    let client = client_config(
        SpiffeServerVerifier::new(ours.bundles(), Authorizer::Exact(ours.id("/server"))),
        Some(theirs.svid("/client")),
    )
    .unwrap();
    assert!(handshake(server, client).await.is_err());
}

#[tokio::test]
async fn a_chain_signed_by_an_untrusted_ca_is_refused() {
    let ours = Domain::new("example.org");
    let forger = Domain::new("example.org"); // same name, different keys
    let server = server_config(forger.svid("/server"), None).unwrap();
    let client = client_config(
        SpiffeServerVerifier::new(ours.bundles(), Authorizer::Exact(ours.id("/server"))),
        None,
    )
    .unwrap();
    let err = handshake(server, client).await.unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn optional_client_auth_lets_certificate_less_clients_in() {
    let domain = Domain::new("example.org");
    let verifier =
        || SpiffeClientVerifier::new(domain.bundles(), Authorizer::MemberOf(domain.td.clone()));
    let client = || {
        client_config(
            SpiffeServerVerifier::new(domain.bundles(), Authorizer::Exact(domain.id("/server"))),
            None,
        )
        .unwrap()
    };
    let optional = server_config(domain.svid("/server"), Some(verifier().optional())).unwrap();
    let (_, client_id) = handshake(optional, client()).await.unwrap();
    assert_eq!(client_id, None);
    let mandatory = server_config(domain.svid("/server"), Some(verifier())).unwrap();
    assert!(handshake(mandatory, client()).await.is_err());
}

#[tokio::test]
async fn new_handshakes_use_the_newest_svid() {
    let domain = Domain::new("example.org");
    let svid = domain.svid("/server");
    let client = || {
        client_config(
            SpiffeServerVerifier::new(domain.bundles(), Authorizer::MemberOf(domain.td.clone())),
            None,
        )
        .unwrap()
    };
    let config = server_config(svid.clone(), None).unwrap();
    let (first, _) = handshake(config.clone(), client()).await.unwrap();
    assert_eq!(first, Some(domain.id("/server")));

    let (key, pkcs8) = PrivateKey::generate(KeyType::EcP256).unwrap();
    let rotated = domain
        .ca
        .mint_x509_svid(
            key.public_key_der(),
            &X509SvidRequest::new(domain.id("/server-v2")),
        )
        .unwrap();
    svid.set(&rotated.cert_chain, pkcs8.as_bytes()).unwrap();
    let (second, _) = handshake(config, client()).await.unwrap();
    assert_eq!(second, Some(domain.id("/server-v2")));
}

#[test]
fn bad_keys_and_empty_chains_are_refused() {
    assert!(matches!(
        SvidHandle::new(&[], b"whatever"),
        Err(lanyard_tls::TlsError::EmptyChain)
    ));
    assert!(matches!(
        SvidHandle::new(&[vec![0x30, 0x00]], b"not a key"),
        Err(lanyard_tls::TlsError::Key(_))
    ));
}
