//! Interop with SPIFFE libraries nobody here wrote, against a real `lanyard dev` process: the
//! `spiffe` crate (0.19: `WorkloadApiClient`, `X509Source`, `JwtSource`) and `spiffe-rustls`
//! (0.11) peers doing mTLS with lanyard-tls peers, all with SVIDs the real agent serves.
//!
//! The SVIDs are checked with code independent of lanyard: the chain with rustls-webpki against
//! the bundle the spiffe crate fetched, the key against the leaf with rcgen, JWTs with the spiffe
//! crate's own verifier.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_e2e::workload::Dev;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spiffe::{JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient, X509Source, X509Svid};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How long anything that should happen at once may take.
const PROMPT: Duration = Duration::from_secs(15);

fn this_exe() -> String {
    std::env::current_exe()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// Registers `id` for this test executable (`unix:path`), with 10-second X509-SVIDs.
fn register_this_exe(dev: &Dev, id: &str) {
    dev.create_entry(
        id,
        &[&format!("unix:path:{}", this_exe())],
        &["--x509-ttl", "10s"],
    );
}

/// Waits until this process is served every ID in `ids` (entries reach the agent by push; the
/// SVIDs are minted then).
async fn wait_until_served(client: &WorkloadApiClient, ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(10);
    loop {
        let got: Vec<String> = client
            .fetch_all_x509_svids()
            .await
            .map(|svids| svids.iter().map(|s| s.spiffe_id().to_string()).collect())
            .unwrap_or_default();
        if ids.iter().all(|id| got.iter().any(|g| g == id)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not served {ids:?} within 30 s; got {got:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Picks the SVID with one SPIFFE ID (a process can hold several).
#[derive(Debug)]
struct ById(String);

impl spiffe::x509_source::SvidPicker for ById {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids
            .iter()
            .position(|s| s.spiffe_id().to_string() == self.0)
    }
}

async fn source_for(dev: &Dev, id: &str) -> X509Source {
    tokio::time::timeout(
        PROMPT,
        X509Source::builder()
            .endpoint(dev.endpoint())
            .picker(ById(id.to_owned()))
            .build(),
    )
    .await
    .expect("X509Source did not start")
    .unwrap()
}

/// The leaf's serial number and `notAfter` (Unix seconds).
fn serial_and_expiry(svid: &X509Svid) -> (Vec<u8>, i64) {
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf().as_bytes()).unwrap();
    (
        leaf.raw_serial().to_vec(),
        leaf.validity().not_after.timestamp(),
    )
}

/// Asserts, independently of lanyard, that `svid` is usable now: its chain verifies against
/// `bundle` with rustls-webpki for both TLS roles, and its private key is the leaf's key.
fn assert_usable(svid: &X509Svid, bundle: &spiffe::X509Bundle) {
    let chain: Vec<CertificateDer<'_>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes()))
        .collect();
    let roots: Vec<CertificateDer<'_>> = bundle
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes()))
        .collect();
    let anchors: Vec<_> = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).unwrap())
        .collect();
    let leaf = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &chain[1..],
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{} does not verify: {e:?}", svid.spiffe_id()));
    }
    let key = rcgen::KeyPair::try_from(svid.private_key().as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(svid.leaf().as_bytes()).unwrap();
    assert_eq!(
        key.public_key_raw(),
        &parsed.public_key().subject_public_key.data[..],
        "the private key of {} is not its leaf's key",
        svid.spiffe_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_client_fetches_x509_and_jwt_material_that_verifies() {
    let dev = Dev::start();
    let client = WorkloadApiClient::connect_to(dev.endpoint()).await.unwrap();

    let svid = client.fetch_x509_svid().await.unwrap();
    let me = svid.spiffe_id().to_string();
    assert!(me.starts_with("spiffe://example.org/user/"), "{me}");
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let bundle = bundles.get(&td()).expect("a bundle for example.org");
    assert_usable(&svid, &bundle);

    // The same as one context, and as `lanyard bundle show` has it.
    let context = client.fetch_x509_context().await.unwrap();
    assert_eq!(context.svids().len(), 1);
    assert_eq!(context.svids()[0].leaf().as_bytes(), svid.leaf().as_bytes());
    let pem = dev.admin(&["bundle", "show", "--format", "pem"]);
    let admin_roots = pem.ok().matches("BEGIN CERTIFICATE").count();
    assert_eq!(bundle.authorities().len(), admin_roots);

    // JWT-SVIDs: minted for this caller, verified by the spiffe crate against the JWT bundles
    // the agent serves, and validated by the agent.
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    assert!(jwt_bundles.get(&td()).is_some());
    let jwt = client
        .fetch_jwt_svid(["interop-api", "second"], None)
        .await
        .unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), me);
    assert_eq!(jwt.audience(), ["interop-api", "second"]);
    let local = JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["interop-api"]).unwrap();
    assert_eq!(local.spiffe_id().to_string(), me);
    assert!(JwtSvid::parse_and_validate(jwt.token(), &jwt_bundles, &["elsewhere"]).is_err());
    let validated = client
        .validate_jwt_token("second", jwt.token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), me);
    assert!(
        client
            .validate_jwt_token("elsewhere", jwt.token())
            .await
            .is_err()
    );
    // Cached by (SPIFFE ID, audiences): the same request gets the same token.
    let again = client
        .fetch_jwt_svid(["interop-api", "second"], None)
        .await
        .unwrap();
    assert_eq!(again.token(), jwt.token());
    // A requested ID the caller does not hold is refused.
    let stranger = SpiffeId::new("spiffe://example.org/not-me").unwrap();
    assert!(
        client
            .fetch_jwt_svid(["interop-api"], Some(&stranger))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_source_holds_a_valid_svid_across_rotations() {
    const ID: &str = "spiffe://example.org/interop/rotating";
    let dev = Dev::start();
    register_this_exe(&dev, ID);
    let client = WorkloadApiClient::connect_to(dev.endpoint()).await.unwrap();
    wait_until_served(&client, &[ID]).await;
    let source = source_for(&dev, ID).await;

    // 10-second SVIDs are renewed at half life: in 25 s the source must move on at least twice,
    // and every sample must be an SVID that is valid at that moment.
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    let mut serials: Vec<Vec<u8>> = Vec::new();
    for sample in 0..50 {
        ticks.tick().await;
        let svid = source
            .svid()
            .unwrap_or_else(|e| panic!("no SVID at sample {sample}: {e}"));
        assert_eq!(svid.spiffe_id().to_string(), ID);
        let (serial, not_after) = serial_and_expiry(&svid);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(
            not_after > now.as_secs() as i64,
            "sample {sample}: the SVID expired at {not_after}, now {now:?}"
        );
        let bundle = source
            .bundle_set()
            .unwrap()
            .get(&td())
            .expect("a bundle for example.org");
        assert_usable(&svid, &bundle);
        if serials.last() != Some(&serial) {
            serials.push(serial);
        }
    }
    assert!(
        serials.len() >= 3,
        "the SVID changed {} times in 25 s; expected at least 2 rotations",
        serials.len() - 1
    );
    // Renewal is at half life (4.5–5.5 s here), not continuous re-minting.
    assert!(
        serials.len() <= 8,
        "the SVID changed {} times in 25 s; 10-second SVIDs should rotate about every 5 s",
        serials.len() - 1
    );
    tokio::time::timeout(PROMPT, source.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_source_fetches_a_token_that_verifies() {
    let dev = Dev::start();
    let source = tokio::time::timeout(
        PROMPT,
        spiffe::JwtSource::builder()
            .endpoint(dev.endpoint())
            .build(),
    )
    .await
    .expect("JwtSource did not start")
    .unwrap();
    let bundles = source.bundle_set().unwrap();
    assert!(bundles.get(&td()).is_some());
    let svid = source.fetch_jwt_svid(["jwt-source"]).await.unwrap();
    assert!(
        svid.spiffe_id()
            .to_string()
            .starts_with("spiffe://example.org/user/"),
        "{}",
        svid.spiffe_id()
    );
    let verified = JwtSvid::parse_and_validate(svid.token(), &source, &["jwt-source"]).unwrap();
    assert_eq!(verified.spiffe_id(), svid.spiffe_id());
    tokio::time::timeout(PROMPT, source.shutdown())
        .await
        .unwrap();
}

// === spiffe-rustls ↔ lanyard-tls ===

const LANYARD_SIDE: &str = "spiffe://example.org/interop/lanyard-side";
const SPIFFE_SIDE: &str = "spiffe://example.org/interop/spiffe-side";
const SOMEONE_ELSE: &str = "spiffe://example.org/interop/someone-else";

/// Serves TLS on a loopback port: each connection gets one line back, prefixed with the peer's
/// SPIFFE ID. A refused handshake just closes the connection.
async fn echo_server(acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(lanyard_tls::peer_spiffe_id)
                    .map(|id| id.to_string())
                    .unwrap_or_default();
                let mut tls = BufReader::new(tls);
                let mut line = String::new();
                if tls.read_line(&mut line).await.is_ok() {
                    let _ = tls
                        .get_mut()
                        .write_all(format!("{peer}: {line}").as_bytes())
                        .await;
                    let _ = tls.get_mut().shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects, sends one line and returns the answer, or why that failed.
async fn round_trip(
    config: Arc<tokio_rustls::rustls::ClientConfig>,
    addr: SocketAddr,
    line: &str,
) -> Result<String, String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut tls = BufReader::new(tls);
        tls.get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        tls.read_line(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if answer.is_empty() {
            return Err("closed without an answer".to_owned());
        }
        Ok(answer.trim_end().to_owned())
    };
    tokio::time::timeout(PROMPT, attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn spiffe_client(source: &X509Source, server: &str) -> Arc<tokio_rustls::rustls::ClientConfig> {
    Arc::new(
        spiffe_rustls::mtls_client(source.clone())
            .authorize(spiffe_rustls::authorizer::exact([server]).unwrap())
            .trust_domain_policy(spiffe_rustls::LocalOnly(td()))
            .build()
            .unwrap(),
    )
}

fn spiffe_server(source: &X509Source, client: &str) -> tokio_rustls::TlsAcceptor {
    let config = spiffe_rustls::mtls_server(source.clone())
        .authorize(spiffe_rustls::authorizer::exact([client]).unwrap())
        .trust_domain_policy(spiffe_rustls::LocalOnly(td()))
        .build()
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn id(s: &str) -> lanyard_core::SpiffeId {
    lanyard_core::SpiffeId::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_rustls_and_lanyard_tls_do_mtls_both_ways_across_rotations() {
    let dev = Dev::start();
    // This process holds both identities (and the user's); each side picks its own. lanyard-tls
    // uses the default SVID, the first by SPIFFE ID: `…/interop/lanyard-side`.
    register_this_exe(&dev, LANYARD_SIDE);
    register_this_exe(&dev, SPIFFE_SIDE);
    let client = WorkloadApiClient::connect_to(dev.endpoint()).await.unwrap();
    wait_until_served(&client, &[LANYARD_SIDE, SPIFFE_SIDE]).await;
    let lanyard = lanyard_tls::WorkloadIdentity::connect(&dev.socket)
        .await
        .unwrap();
    assert_eq!(lanyard.spiffe_id().to_string(), LANYARD_SIDE);
    let source = source_for(&dev, SPIFFE_SIDE).await;

    // lanyard-tls server ← spiffe-rustls client, and spiffe-rustls server ← lanyard-tls client.
    let lanyard_server = echo_server(tokio_rustls::TlsAcceptor::from(Arc::new(
        lanyard
            .server_config(lanyard_tls::Authorizer::Exact(id(SPIFFE_SIDE)))
            .unwrap(),
    )))
    .await;
    let spiffe_server_addr = echo_server(spiffe_server(&source, LANYARD_SIDE)).await;
    let from_spiffe = spiffe_client(&source, LANYARD_SIDE);
    let from_lanyard = Arc::new(
        lanyard
            .client_config(lanyard_tls::Authorizer::Exact(id(SPIFFE_SIDE)))
            .unwrap(),
    );

    // A new connection each way every 500 ms for 12 s: more than one 10-second SVID lifetime,
    // so both sides rotate at least twice and every handshake must still succeed.
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    for round in 0..24 {
        ticks.tick().await;
        let answer = round_trip(from_spiffe.clone(), lanyard_server, "hello")
            .await
            .unwrap_or_else(|e| panic!("round {round}, spiffe-rustls → lanyard-tls: {e}"));
        assert_eq!(answer, format!("{SPIFFE_SIDE}: hello"));
        let answer = round_trip(from_lanyard.clone(), spiffe_server_addr, "hi")
            .await
            .unwrap_or_else(|e| panic!("round {round}, lanyard-tls → spiffe-rustls: {e}"));
        // The spiffe-rustls server's echo names the client it authenticated.
        assert_eq!(answer, format!("{LANYARD_SIDE}: hi"));
    }
    let updates = lanyard.updates().borrow().1;
    assert!(
        updates >= 3,
        "lanyard-tls saw {updates} updates in 12 s of 10-second SVIDs"
    );

    // Clients refuse a server whose ID is not the expected one…
    let wrong = spiffe_client(&source, SOMEONE_ELSE);
    let err = round_trip(wrong, lanyard_server, "x").await.unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");
    let wrong = Arc::new(
        lanyard
            .client_config(lanyard_tls::Authorizer::Exact(id(SOMEONE_ELSE)))
            .unwrap(),
    );
    let err = round_trip(wrong, spiffe_server_addr, "x")
        .await
        .unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");
    // …and servers refuse a client whose ID is not allowed (in TLS 1.3 the client learns it when
    // it reads).
    let strict_lanyard = echo_server(tokio_rustls::TlsAcceptor::from(Arc::new(
        lanyard
            .server_config(lanyard_tls::Authorizer::Exact(id(SOMEONE_ELSE)))
            .unwrap(),
    )))
    .await;
    assert!(
        round_trip(from_spiffe.clone(), strict_lanyard, "x")
            .await
            .is_err()
    );
    let strict_spiffe = echo_server(spiffe_server(&source, SOMEONE_ELSE)).await;
    assert!(
        round_trip(from_lanyard.clone(), strict_spiffe, "x")
            .await
            .is_err()
    );
    tokio::time::timeout(PROMPT, source.shutdown())
        .await
        .unwrap();
}
