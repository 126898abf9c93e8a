//! The `x509pop` attestor end to end with certificates made by rcgen: a round trip for every key
//! type, the selectors, and every refusal (replay, wrong key, untrusted CA, expiry, …).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_attestation::node::x509pop::{DEFAULT_CHALLENGE_TTL, fingerprint};
use lanyard_attestation::{
    X509PopAttestationData, X509PopChallenge, X509PopClient, X509PopConfig, X509PopError,
    X509PopResponse, X509PopVerifier,
};
use lanyard_core::{Clock, ManualClock, Selector, SelectorSet, TrustDomain};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm, date_time_ymd,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// 2025-06-01, inside every "valid" certificate's 2020–2030 window.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_748_736_000)
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
    params: CertificateParams,
}

impl Ca {
    fn root(name: &str, years: (i32, i32)) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name, years);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key, params }
    }

    fn intermediate(&self, name: &str, years: (i32, i32)) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name, years);
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Self { cert, key, params }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }
}

fn ca_params(name: &str, (from, to): (i32, i32)) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name = dn(name);
    params.not_before = date_time_ymd(from, 1, 1);
    params.not_after = date_time_ymd(to, 1, 1);
    params
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// What a node is provisioned with.
struct Node {
    cert: Certificate,
    key: KeyPair,
}

impl Node {
    fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    fn client(&self, chain: Vec<Vec<u8>>) -> X509PopClient {
        X509PopClient::new(chain, &self.private_key()).unwrap()
    }
}

struct LeafSpec {
    alg: &'static SignatureAlgorithm,
    years: (i32, i32),
    key_usages: Vec<KeyUsagePurpose>,
    is_ca: IsCa,
}

impl Default for LeafSpec {
    fn default() -> Self {
        Self {
            alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            years: (2020, 2030),
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            is_ca: IsCa::ExplicitNoCa,
        }
    }
}

fn leaf(issuer: &Ca, spec: LeafSpec) -> Node {
    let key = KeyPair::generate_for(spec.alg).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = spec.is_ca;
    params.key_usages = spec.key_usages;
    params.distinguished_name = dn("node-1.example.org");
    params.serial_number = Some(SerialNumber::from_slice(&[0x0a, 0x1b, 0x2c, 0x3d]));
    params.not_before = date_time_ymd(spec.years.0, 1, 1);
    params.not_after = date_time_ymd(spec.years.1, 1, 1);
    params.subject_alt_names = vec![
        SanType::URI(
            "x509pop://example.org/datacenter/us-east-1"
                .try_into()
                .unwrap(),
        ),
        SanType::URI("x509pop://other.org/datacenter/ignored".try_into().unwrap()),
        SanType::URI("x509pop://example.org/novalue".try_into().unwrap()),
        SanType::DnsName("node-1.example.org".try_into().unwrap()),
    ];
    let cert = params.signed_by(&key, &issuer.issuer()).unwrap();
    Node { cert, key }
}

fn verifier(roots: &[&Ca], clock: Arc<dyn Clock>) -> X509PopVerifier {
    X509PopVerifier::new(
        X509PopConfig::new(td(), roots.iter().map(|ca| ca.der()).collect()),
        clock,
    )
    .unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(now()))
}

fn sha1sum(der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cert.der");
    std::fs::write(&path, der).unwrap();
    let out = Command::new("sha1sum")
        .arg(Path::new(&path))
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn begin_err(verifier: &X509PopVerifier, chain: Vec<Vec<u8>>) -> X509PopError {
    verifier
        .begin(&X509PopAttestationData { chain })
        .unwrap_err()
}

#[test]
fn round_trip_with_every_key_type() {
    let root = Ca::root("Node CA", (2020, 2030));
    let verifier = verifier(&[&root], clock());
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        let node = leaf(
            &root,
            LeafSpec {
                alg,
                ..LeafSpec::default()
            },
        );
        let client = node.client(vec![node.der()]);
        let pending = verifier.begin(&client.attestation_data()).unwrap();
        let response = client.respond(&pending.challenge()).unwrap();
        let attested = pending.finish(&response).unwrap();

        let expected_id = format!(
            "spiffe://example.org/lanyard/agent/x509pop/{}",
            sha1sum(&node.der())
        );
        assert_eq!(attested.agent_id.as_str(), expected_id, "{alg:?}");
        assert_eq!(attested.attestor, "x509pop");
        assert!(attested.can_reattest);
        let expected: SelectorSet = [
            "x509pop:subject:cn:node-1.example.org".to_owned(),
            format!("x509pop:ca:fingerprint:{}", sha1sum(&root.der())),
            "x509pop:serialnumber:0a1b2c3d".to_owned(),
            "x509pop:san:datacenter:us-east-1".to_owned(),
        ]
        .iter()
        .map(|s| s.parse::<Selector>().unwrap())
        .collect();
        assert_eq!(attested.selectors, expected, "{alg:?}");
    }
}

#[test]
fn round_trip_through_an_intermediate_and_pem() {
    let root = Ca::root("Root", (2020, 2030));
    let intermediate = root.intermediate("Intermediate", (2020, 2030));
    let node = leaf(&intermediate, LeafSpec::default());
    let verifier = verifier(&[&root], clock());

    let chain_pem = format!("{}{}", node.cert.pem(), intermediate.cert.pem());
    let client =
        X509PopClient::from_pem(chain_pem.as_bytes(), node.key.serialize_pem().as_bytes()).unwrap();
    let pending = verifier.begin(&client.attestation_data()).unwrap();
    assert_eq!(
        pending.agent_id().as_str(),
        format!(
            "spiffe://example.org/lanyard/agent/x509pop/{}",
            fingerprint(&node.der())
        )
    );
    // A response to another challenge (made by a second `begin`) does not answer this one.
    let other_challenge = pending_challenge_of(&verifier, &client);
    let err = pending
        .finish(&client.respond(&other_challenge).unwrap())
        .unwrap_err();
    assert_eq!(err, X509PopError::ChallengeMismatch);

    let pending = verifier.begin(&client.attestation_data()).unwrap();
    let response = client.respond(&pending.challenge()).unwrap();
    let attested = pending.finish(&response).unwrap();
    for ca in [&intermediate, &root] {
        let selector: Selector = format!("x509pop:ca:fingerprint:{}", sha1sum(&ca.der()))
            .parse()
            .unwrap();
        assert!(
            attested.selectors.contains(&selector),
            "{:?}",
            attested.selectors
        );
    }

    // The leaf alone does not chain to the root.
    assert_eq!(
        begin_err(&verifier, vec![node.der()]),
        X509PopError::UntrustedChain
    );
}

fn pending_challenge_of(verifier: &X509PopVerifier, client: &X509PopClient) -> X509PopChallenge {
    verifier
        .begin(&client.attestation_data())
        .unwrap()
        .challenge()
}

#[test]
fn an_old_response_is_not_accepted_again() {
    let root = Ca::root("Root", (2020, 2030));
    let node = leaf(&root, LeafSpec::default());
    let client = node.client(vec![node.der()]);
    let verifier = verifier(&[&root], clock());

    let first = verifier.begin(&client.attestation_data()).unwrap();
    let old_response = client.respond(&first.challenge()).unwrap();
    first.finish(&old_response).unwrap();

    // Replayed as is: it names the old nonce.
    let second = verifier.begin(&client.attestation_data()).unwrap();
    assert_ne!(
        second.challenge(),
        X509PopChallenge {
            nonce: old_response.nonce
        }
    );
    assert_eq!(
        second.finish(&old_response).unwrap_err(),
        X509PopError::ChallengeMismatch
    );

    // Replayed with the new nonce pasted in: the signature covers the old one.
    let third = verifier.begin(&client.attestation_data()).unwrap();
    let forged = X509PopResponse {
        nonce: third.challenge().nonce,
        signature: old_response.signature,
    };
    assert_eq!(
        third.finish(&forged).unwrap_err(),
        X509PopError::BadSignature
    );
}

#[test]
fn the_wrong_key_is_refused() {
    let root = Ca::root("Root", (2020, 2030));
    let node = leaf(&root, LeafSpec::default());
    let other = leaf(&root, LeafSpec::default());

    // The client notices at once.
    let err = X509PopClient::new(vec![node.der()], &other.private_key()).unwrap_err();
    assert_eq!(err, X509PopError::KeyMismatch);
    let rsa = leaf(
        &root,
        LeafSpec {
            alg: &rcgen::PKCS_RSA_SHA256,
            ..LeafSpec::default()
        },
    );
    let err = X509PopClient::new(vec![node.der()], &rsa.private_key()).unwrap_err();
    assert!(matches!(err, X509PopError::PrivateKey { .. }), "{err:?}");

    // A server given someone else's certificate and a signature by another key refuses it.
    let verifier = verifier(&[&root], clock());
    let pending = verifier
        .begin(&X509PopAttestationData {
            chain: vec![node.der()],
        })
        .unwrap();
    let impostor = other.client(vec![other.der()]);
    let response = impostor.respond(&pending.challenge()).unwrap();
    assert_eq!(
        pending.finish(&response).unwrap_err(),
        X509PopError::BadSignature
    );

    // Garbage and oversized signatures too.
    for signature in [Vec::new(), vec![0u8; 64], vec![1u8; 10_000]] {
        let pending = verifier
            .begin(&X509PopAttestationData {
                chain: vec![node.der()],
            })
            .unwrap();
        let nonce = pending.challenge().nonce;
        assert_eq!(
            pending
                .finish(&X509PopResponse { nonce, signature })
                .unwrap_err(),
            X509PopError::BadSignature
        );
    }
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused() {
    let trusted = Ca::root("Trusted", (2020, 2030));
    let rogue = Ca::root("Rogue", (2020, 2030));
    let node = leaf(&rogue, LeafSpec::default());
    let verifier = verifier(&[&trusted], clock());
    assert_eq!(
        begin_err(&verifier, vec![node.der(), rogue.der()]),
        X509PopError::UntrustedChain
    );
    // Nor does sending the trusted root along help.
    assert_eq!(
        begin_err(&verifier, vec![node.der(), trusted.der()]),
        X509PopError::UntrustedChain
    );
    // A rogue CA that copies the trusted CA's name: found by name, refused by signature.
    let impostor = Ca::root("Trusted", (2020, 2030));
    let node = leaf(&impostor, LeafSpec::default());
    assert_eq!(
        begin_err(&verifier, vec![node.der(), impostor.der()]),
        X509PopError::ChainBadSignature
    );
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let root = Ca::root("Root", (2020, 2030));
    let node = leaf(&root, LeafSpec::default());
    let clock = clock();
    let verifier = verifier(&[&root], clock.clone());

    clock.set(UNIX_EPOCH + Duration::from_secs(1_924_992_000 + 86_400)); // 2031
    assert!(matches!(
        begin_err(&verifier, vec![node.der()]),
        X509PopError::LeafExpired { .. }
    ));
    clock.set(UNIX_EPOCH + Duration::from_secs(1_546_300_800)); // 2019
    assert!(matches!(
        begin_err(&verifier, vec![node.der()]),
        X509PopError::LeafNotYetValid { .. }
    ));

    clock.set(now());
    let short = leaf(
        &root,
        LeafSpec {
            years: (2020, 2022),
            ..LeafSpec::default()
        },
    );
    assert!(matches!(
        begin_err(&verifier, vec![short.der()]),
        X509PopError::LeafExpired { .. }
    ));

    // An expired intermediate between a valid leaf and a valid root.
    let old_intermediate = root.intermediate("Old", (2020, 2022));
    let node = leaf(&old_intermediate, LeafSpec::default());
    assert_eq!(
        begin_err(&verifier, vec![node.der(), old_intermediate.der()]),
        X509PopError::ChainCertificateExpired
    );

    // An expired root.
    let old_root = Ca::root("Old root", (2020, 2022));
    let node = leaf(&old_root, LeafSpec::default());
    let verifier = self::verifier(&[&old_root], clock);
    assert_eq!(
        begin_err(&verifier, vec![node.der()]),
        X509PopError::RootNotValid
    );
}

#[test]
fn a_late_answer_is_refused() {
    let root = Ca::root("Root", (2020, 2030));
    let node = leaf(&root, LeafSpec::default());
    let client = node.client(vec![node.der()]);
    let clock = clock();
    let verifier = verifier(&[&root], clock.clone());
    let pending = verifier.begin(&client.attestation_data()).unwrap();
    let response = client.respond(&pending.challenge()).unwrap();
    clock.advance(DEFAULT_CHALLENGE_TTL + Duration::from_secs(1));
    assert_eq!(
        pending.finish(&response).unwrap_err(),
        X509PopError::ChallengeExpired
    );
}

#[test]
fn unusable_leaves_are_refused() {
    let root = Ca::root("Root", (2020, 2030));
    let verifier = verifier(&[&root], clock());

    let no_signing = leaf(
        &root,
        LeafSpec {
            key_usages: vec![KeyUsagePurpose::KeyEncipherment],
            ..LeafSpec::default()
        },
    );
    assert_eq!(
        begin_err(&verifier, vec![no_signing.der()]),
        X509PopError::NoDigitalSignature
    );
    let no_key_usage = leaf(
        &root,
        LeafSpec {
            key_usages: Vec::new(),
            ..LeafSpec::default()
        },
    );
    assert_eq!(
        begin_err(&verifier, vec![no_key_usage.der()]),
        X509PopError::NoDigitalSignature
    );
    let ca_leaf = leaf(
        &root,
        LeafSpec {
            is_ca: IsCa::Ca(BasicConstraints::Unconstrained),
            ..LeafSpec::default()
        },
    );
    assert_eq!(
        begin_err(&verifier, vec![ca_leaf.der()]),
        X509PopError::LeafIsCa
    );
    let p521 = leaf(
        &root,
        LeafSpec {
            alg: &rcgen::PKCS_ECDSA_P521_SHA512,
            ..LeafSpec::default()
        },
    );
    assert!(matches!(
        begin_err(&verifier, vec![p521.der()]),
        X509PopError::UnsupportedKey(_)
    ));
}

#[test]
fn malformed_chains_are_refused() {
    let root = Ca::root("Root", (2020, 2030));
    let node = leaf(&root, LeafSpec::default());
    let verifier = verifier(&[&root], clock());

    assert_eq!(begin_err(&verifier, Vec::new()), X509PopError::EmptyChain);
    assert!(matches!(
        begin_err(&verifier, vec![b"not a certificate".to_vec()]),
        X509PopError::MalformedCertificate { index: 0, .. }
    ));
    assert!(matches!(
        begin_err(&verifier, vec![node.der(), vec![0x30, 0x03, 0x01]]),
        X509PopError::MalformedCertificate { index: 1, .. }
    ));
    let mut trailing = node.der();
    trailing.push(0);
    assert!(matches!(
        begin_err(&verifier, vec![trailing]),
        X509PopError::MalformedCertificate { index: 0, .. }
    ));
    assert_eq!(
        begin_err(&verifier, vec![node.der(); 17]),
        X509PopError::ChainTooLong { len: 17 }
    );
    assert!(matches!(
        begin_err(&verifier, vec![vec![0u8; 100_000]]),
        X509PopError::CertificateTooLarge { index: 0, .. }
    ));
    // Random bytes, at any length, are an error and never a panic.
    let mut seed: u32 = 0x1234_5678;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed.to_le_bytes()[0]
            })
            .collect();
        assert!(
            verifier
                .begin(&X509PopAttestationData { chain: vec![bytes] })
                .is_err()
        );
    }
}

#[test]
fn verifier_configuration_is_checked() {
    let err = X509PopVerifier::new(X509PopConfig::new(td(), Vec::new()), clock()).unwrap_err();
    assert_eq!(err, X509PopError::NoRoots);
    let err = X509PopVerifier::new(X509PopConfig::new(td(), vec![b"junk".to_vec()]), clock())
        .unwrap_err();
    assert!(
        matches!(err, X509PopError::BadRoot { index: 0, .. }),
        "{err:?}"
    );

    let root = Ca::root("Root", (2020, 2030));
    let roots = X509PopConfig::roots_from_pem(root.cert.pem().as_bytes()).unwrap();
    assert_eq!(roots, vec![root.der()]);
    assert!(matches!(
        X509PopConfig::roots_from_pem(b"no pem here"),
        Err(X509PopError::EmptyChain)
    ));
}

#[test]
fn messages_round_trip_through_serde() {
    let root = Ca::root("Root", (2020, 2030));
    let node = leaf(&root, LeafSpec::default());
    let client = node.client(vec![node.der()]);
    let verifier = verifier(&[&root], clock());

    let data: X509PopAttestationData =
        serde_json::from_str(&serde_json::to_string(&client.attestation_data()).unwrap()).unwrap();
    let pending = verifier.begin(&data).unwrap();
    let challenge: X509PopChallenge =
        serde_json::from_str(&serde_json::to_string(&pending.challenge()).unwrap()).unwrap();
    let response: X509PopResponse =
        serde_json::from_str(&serde_json::to_string(&client.respond(&challenge).unwrap()).unwrap())
            .unwrap();
    pending.finish(&response).unwrap();

    // The client's Debug never shows key material.
    let debug = format!("{client:?}");
    assert!(debug.contains('…'), "{debug}");
}
