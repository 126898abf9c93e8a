//! A real Workload API server on a temporary socket, fed by the fakes, and the certificates,
//! keys and tokens it serves.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support shared by several test crates; each uses a part of it"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_core::{
    Bundle, BundleSet, JwtAuthority, Selector, SelectorSet, SpiffeId, TrustDomain, X509Authority,
};
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_workload::{
    Error, FakeAttestor, FakeIdentitySource, Identity, NoTasks, Snapshot, SvidKey, WorkloadClient,
    WorkloadServer,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How long a test waits for something that should happen at once.
pub const PROMPT: Duration = Duration::from_secs(10);

pub const TD: &str = "example.org";
pub const FOREIGN_TD: &str = "other.org";
pub const WEB: &str = "spiffe://example.org/web";
pub const DB: &str = "spiffe://example.org/db";
pub const ADMIN: &str = "spiffe://example.org/admin";

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub fn selectors(list: &[&str]) -> SelectorSet {
    list.iter()
        .map(|s| s.parse::<Selector>().unwrap())
        .collect()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + (now - Duration::from_secs(60));
    params.not_after = epoch + (now + lifetime);
}

/// A trust domain's CA and JWT key.
pub struct Authority {
    pub trust_domain: TrustDomain,
    pub ca_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    pub signer: JwtSigner,
    jwt_spki: Vec<u8>,
}

/// Signs JWT-SVIDs with one trust domain's key.
#[derive(Clone)]
pub struct JwtSigner {
    pub kid: String,
    key: jsonwebtoken::EncodingKey,
}

impl JwtSigner {
    /// An ES256 JWT-SVID with `kid` and `typ`, issued now, valid for `ttl`, with one private claim.
    pub fn sign(&self, sub: &str, audiences: &[String], ttl: Duration) -> String {
        self.sign_with(sub, audiences, ttl, serde_json::json!({}))
    }

    /// [`sign`](Self::sign) with more claims (e.g. a `jti`).
    pub fn sign_with(
        &self,
        sub: &str,
        audiences: &[String],
        ttl: Duration,
        more: serde_json::Value,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let claims = serde_json::json!({
            "sub": sub,
            "aud": audiences,
            "exp": now + ttl.as_secs(),
            "iat": now,
            "extra": "private claim",
        });
        let mut claims = claims;
        if let (Some(claims), Some(more)) = (claims.as_object_mut(), more.as_object()) {
            claims.extend(more.clone());
        }
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

impl Authority {
    pub fn new(trust_domain: &str) -> Self {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "SPIFFE");
        dn.push(DnType::CommonName, format!("CA {trust_domain}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![uri(&format!("spiffe://{trust_domain}"))];
        set_validity(&mut params, Duration::from_secs(86_400));
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let jwt = KeyPair::generate().unwrap();
        Self {
            trust_domain: td(trust_domain),
            ca_der: ca.der().to_vec(),
            issuer: Issuer::new(params, key),
            signer: JwtSigner {
                kid: format!("kid-{trust_domain}"),
                key: jsonwebtoken::EncodingKey::from_ec_der(&jwt.serialize_der()),
            },
            jwt_spki: rcgen::PublicKeyData::subject_public_key_info(&jwt),
        }
    }

    /// A leaf for `spiffe_id` valid for an hour: the chain (leaf only) and its PKCS#8 key.
    pub fn leaf(&self, spiffe_id: &str) -> (Vec<Vec<u8>>, SvidKey) {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "SPIRE");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![uri(spiffe_id)];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, Duration::from_secs(3600));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().to_vec()],
            SvidKey::from_pkcs8_der(key.serialize_der()),
        )
    }

    pub fn bundle(&self) -> Bundle {
        let mut bundle = Bundle::new(self.trust_domain.clone());
        bundle.add_x509_authority(X509Authority::from_der(self.ca_der.clone()).unwrap());
        bundle
            .add_jwt_authority(JwtAuthority::new(&self.signer.kid, self.jwt_spki.clone()).unwrap());
        bundle
    }

    pub fn jwt(&self, sub: &str, audiences: &[String], ttl: Duration) -> String {
        self.signer.sign(sub, audiences, ttl)
    }

    /// A JWT-SVID with a `jti`, as task tokens have.
    pub fn jwt_with_id(&self, sub: &str, audiences: &[String], jti: &str) -> String {
        self.signer.sign_with(
            sub,
            audiences,
            Duration::from_secs(60),
            serde_json::json!({ "jti": jti }),
        )
    }

    pub fn identity(&self, spiffe_id: &str, entry_selectors: &[&str]) -> Identity {
        let (chain, key) = self.leaf(spiffe_id);
        Identity::new(id(spiffe_id), selectors(entry_selectors), chain, key).unwrap()
    }
}

/// Two trust domains: the agent's own (`example.org`) and a federated one (`other.org`).
pub struct World {
    pub own: Authority,
    pub foreign: Authority,
}

impl World {
    pub fn new() -> Self {
        Self {
            own: Authority::new(TD),
            foreign: Authority::new(FOREIGN_TD),
        }
    }

    pub fn bundles(&self) -> BundleSet {
        let mut bundles = BundleSet::new();
        bundles.insert(self.own.bundle());
        bundles.insert(self.foreign.bundle());
        bundles
    }

    pub fn snapshot(&self, identities: Vec<Identity>) -> Snapshot {
        Snapshot::new(td(TD), self.bundles(), identities)
    }

    /// `web` for uid 1000 (federates with other.org), `db` for uid 1000 in group 50, `admin` for
    /// uid 0.
    pub fn standard_identities(&self) -> Vec<Identity> {
        vec![
            self.own
                .identity(WEB, &["unix:uid:1000"])
                .with_hint("web")
                .with_federates_with([td(FOREIGN_TD)]),
            self.own
                .identity(DB, &["unix:uid:1000", "unix:gid:50"])
                .with_hint("db"),
            self.own.identity(ADMIN, &["unix:uid:0"]),
        ]
    }
}

/// The selectors the fake attestor gives every caller unless a test changes them.
pub fn caller() -> SelectorSet {
    selectors(&["unix:uid:1000", "unix:gid:50", "unix:user:alice"])
}

/// A running server on a temporary socket.
pub struct Harness {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub source: FakeIdentitySource,
    pub attestor: FakeAttestor,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), Error>>>,
}

impl Harness {
    /// Serves `snapshot`, attesting every caller as `caller_selectors`. JWT-SVIDs are minted with
    /// the own trust domain's key, valid five minutes.
    pub async fn start(world: &World, snapshot: Snapshot, caller_selectors: SelectorSet) -> Self {
        Self::start_serving(world, snapshot, caller_selectors, false).await
    }

    /// [`start`](Self::start), also serving the task service `lanyard.task.v1.Tasks` (with
    /// [`NoTasks`]: its snapshot-fed `WatchRevocations` works, task calls are `Unimplemented`).
    pub async fn start_with_tasks(
        world: &World,
        snapshot: Snapshot,
        caller_selectors: SelectorSet,
    ) -> Self {
        Self::start_serving(world, snapshot, caller_selectors, true).await
    }

    async fn start_serving(
        world: &World,
        snapshot: Snapshot,
        caller_selectors: SelectorSet,
        tasks: bool,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent").join("api.sock");
        let listener = lanyard_workload::bind(&socket).unwrap();
        let source = FakeIdentitySource::new(snapshot);
        let signer = world.own.signer.clone();
        source.set_jwt_minter(Arc::new(
            move |spiffe_id: &SpiffeId, audiences: &[String]| {
                Ok(signer.sign(spiffe_id.as_str(), audiences, Duration::from_secs(300)))
            },
        ));
        let attestor = FakeAttestor::new(caller_selectors);
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        // A short grace: the idle-connection test shuts down with peers that never finish.
        let server = WorkloadServer::new(source.clone(), attestor.clone())
            .with_shutdown_grace(Duration::from_millis(200));
        let server = if tasks {
            tokio::spawn(server.with_tasks(NoTasks).serve(listener, shutdown))
        } else {
            tokio::spawn(server.serve(listener, shutdown))
        };
        Self {
            _dir: dir,
            socket,
            source,
            attestor,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub async fn client(&self) -> WorkloadClient {
        WorkloadClient::connect(&self.socket).await.unwrap()
    }

    /// The generated client with no security header: tests add (or omit) it themselves.
    pub async fn raw(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(
            lanyard_workload::connect_channel(&self.socket)
                .await
                .unwrap(),
        )
    }

    /// `unix:<path>`, as SPIFFE clients take the endpoint.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// Starts shutdown and waits for the server to return.
    pub async fn stop(&mut self) -> Result<(), Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = self.server.take().expect("stopped twice");
        tokio::time::timeout(PROMPT, server)
            .await
            .expect("server did not shut down")
            .unwrap()
    }
}

/// Adds `workload.spiffe.io: true` to a request.
pub fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// Waits at most [`PROMPT`] for a future that should complete at once.
pub async fn prompt<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PROMPT, future)
        .await
        .expect("timed out waiting")
}
