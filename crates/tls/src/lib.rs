//! rustls integration for SPIFFE: verifiers that check a peer's X509-SVID chain against the bundle
//! of the peer's own trust domain and then authorize its SPIFFE ID, and a certificate resolver
//! that always presents the newest SVID, so rotation needs no restart.
//!
//! There are no DNS-name checks: a SPIFFE peer is identified by its SPIFFE ID alone. Every config
//! is built with the aws-lc-rs provider passed explicitly ([`provider`]), never the process default.
//!
//! Bundles and SVIDs are handed in through [`BundleHandle`] and [`SvidHandle`] by whoever holds
//! them (the agent, the server), or kept current from the Workload API by [`WorkloadIdentity`].

mod workload;

pub use workload::{FIRST_SVID_TIMEOUT, WorkloadIdentity};

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use lanyard_core::{BundleSet, SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("the SVID private key is not a usable PKCS#8 key: {0}")]
    Key(String),
    #[error("the SVID has no certificate")]
    EmptyChain,
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("Workload API: {0}")]
    Workload(#[source] Box<lanyard_workload::Error>),
}

impl TlsError {
    fn workload(e: lanyard_workload::Error) -> Self {
        Self::Workload(Box::new(e))
    }
}

/// Which peer SPIFFE IDs are acceptable.
#[derive(Clone)]
pub enum Authorizer {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any of these IDs.
    OneOf(Vec<SpiffeId>),
    /// Any ID in this trust domain.
    MemberOf(TrustDomain),
    /// Whatever the function accepts.
    Predicate(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

/// The bundles peers are verified against; cheap to clone, swapped as bundles rotate.
#[derive(Debug, Clone, Default)]
pub struct BundleHandle(Arc<RwLock<Arc<BundleSet>>>);

/// This side's own SVID; cheap to clone, swapped as the SVID rotates. New handshakes use the
/// newest; established connections keep theirs.
#[derive(Clone, Default)]
pub struct SvidHandle(Arc<RwLock<Option<Arc<CertifiedKey>>>>);

/// Verifies a server's X509-SVID (the client side of a handshake).
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundles: BundleHandle,
    authorizer: Authorizer,
    provider: Arc<CryptoProvider>,
}

/// Verifies a client's X509-SVID (the server side of a handshake).
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundles: BundleHandle,
    authorizer: Authorizer,
    /// When false a client without a certificate is let through (the application then decides
    /// per call, e.g. the node API's attestation call).
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

/// The crypto provider every lanyard TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server config presenting `svid`, verifying clients with `clients` (or asking none), speaking
/// HTTP/2 (gRPC).
pub fn server_config(
    svid: SvidHandle,
    clients: Option<SpiffeClientVerifier>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(Arc::new(verifier)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(svid));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client config verifying the server with `server`, presenting `svid` if given, speaking HTTP/2.
pub fn client_config(
    server: SpiffeServerVerifier,
    svid: Option<SvidHandle>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        // Not a weakening: SPIFFE peers are authenticated by SVID chain and SPIFFE ID, not by a
        // web PKI name; SpiffeServerVerifier does that check in full.
        .with_custom_certificate_verifier(Arc::new(server));
    let mut config = match svid {
        Some(svid) => builder.with_client_cert_resolver(Arc::new(svid)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The SPIFFE ID in a peer's leaf certificate (its only URI SAN), if it has one. Use it after the
/// handshake: the verifiers have already checked the chain.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let leaf = certs.first()?;
    lanyard_core::x509::check_x509_svid_leaf(leaf.as_ref()).ok()
}

// === impl Authorizer ===

impl Authorizer {
    pub fn authorize(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(expected) => id == expected,
            Self::OneOf(ids) => ids.contains(id),
            Self::MemberOf(td) => id.is_member_of(td),
            Self::Predicate(accept) => accept(id),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => f.debug_tuple("Exact").field(id).finish(),
            Self::OneOf(ids) => f.debug_tuple("OneOf").field(ids).finish(),
            Self::MemberOf(td) => f.debug_tuple("MemberOf").field(td).finish(),
            Self::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

// === impl BundleHandle ===

impl BundleHandle {
    pub fn new(bundles: BundleSet) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(bundles))))
    }

    pub fn get(&self) -> Arc<BundleSet> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, bundles: BundleSet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(bundles);
    }
}

// === impl SvidHandle ===

impl SvidHandle {
    /// A handle holding `chain` (DER, leaf first) and its PKCS#8 key.
    pub fn new(chain: &[Vec<u8>], key_pkcs8_der: &[u8]) -> Result<Self, TlsError> {
        let handle = Self::default();
        handle.set(chain, key_pkcs8_der)?;
        Ok(handle)
    }

    /// Replaces the SVID; handshakes from now on present the new one.
    pub fn set(&self, chain: &[Vec<u8>], key_pkcs8_der: &[u8]) -> Result<(), TlsError> {
        if chain.is_empty() {
            return Err(TlsError::EmptyChain);
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let certs = chain
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let certified = Arc::new(CertifiedKey::new(certs, signing_key));
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(certified);
        Ok(())
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl fmt::Debug for SvidHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self
            .current()
            .and_then(|k| peer_spiffe_id(&k.cert))
            .map(|id| id.to_string());
        f.debug_struct("SvidHandle")
            .field("spiffe_id", &id)
            .finish_non_exhaustive()
    }
}

impl rustls::server::ResolvesServerCert for SvidHandle {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl rustls::client::ResolvesClientCert for SvidHandle {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
            .filter(|k| k.key.choose_scheme(sigschemes).is_some())
    }

    fn has_certs(&self) -> bool {
        self.current().is_some()
    }
}

// === verification shared by both sides ===

/// Checks a peer chain: SVID rules, path to the bundle of the peer's own trust domain, validity at
/// `now`, then the authorizer.
fn verify_peer(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    bundles: &BundleHandle,
    authorizer: &Authorizer,
) -> Result<SpiffeId, rustls::Error> {
    let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
        .chain(intermediates)
        .map(|c| c.as_ref().to_vec())
        .collect();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
    let verified = lanyard_core::x509::verify_x509_svid(&chain, &bundles.get(), at)
        .map_err(|e| rustls::Error::General(format!("peer X509-SVID refused: {e}")))?;
    let id = verified.spiffe_id().clone();
    if !authorizer.authorize(&id) {
        return Err(rustls::Error::General(format!(
            "peer SPIFFE ID {id} is not authorized"
        )));
    }
    Ok(id)
}

fn verify_tls12(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    pub fn new(bundles: BundleHandle, authorizer: Authorizer) -> Self {
        Self {
            bundles,
            authorizer,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_peer(
            end_entity,
            intermediates,
            now,
            &self.bundles,
            &self.authorizer,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// === impl SpiffeClientVerifier ===

impl SpiffeClientVerifier {
    /// A verifier that requires a client certificate.
    pub fn new(bundles: BundleHandle, authorizer: Authorizer) -> Self {
        Self {
            bundles,
            authorizer,
            mandatory: true,
            provider: provider(),
        }
    }

    /// Lets clients without a certificate complete the handshake; those that present one are
    /// still verified in full.
    pub fn optional(mut self) -> Self {
        self.mandatory = false;
        self
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_peer(
            end_entity,
            intermediates,
            now,
            &self.bundles,
            &self.authorizer,
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Switches that weaken verification, kept apart and named so, as rustls does.
pub mod danger {
    use super::*;

    /// Development only (`insecure_bootstrap`): a client config that accepts a server certificate
    /// without checking its chain, only that its leaf is an X509-SVID for `server_id` and that
    /// the server holds the leaf's key (the handshake signature).
    pub fn insecure_bootstrap_client_config(
        server_id: SpiffeId,
    ) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = InsecureBootstrapVerifier {
            server_id,
            provider: provider(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    #[derive(Debug)]
    struct InsecureBootstrapVerifier {
        server_id: SpiffeId,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for InsecureBootstrapVerifier {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let id = lanyard_core::x509::check_x509_svid_leaf(end_entity.as_ref())
                .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
            if id != self.server_id {
                return Err(rustls::Error::General(format!(
                    "the server presented {id}, not {}",
                    self.server_id
                )));
            }
            tracing::warn!("insecure_bootstrap: trusting the server's certificate unverified");
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12(&self.provider, message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13(&self.provider, message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}
