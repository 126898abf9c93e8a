//! Upstream-CA mode: lanyard's CA certificates are intermediates under a CA made here with rcgen.

use std::time::Duration;

use lanyard_ca::{AuthorityKind, AuthorityState, Ca, CaConfig, CaError, UpstreamCa};
use lanyard_core::verify_x509_svid;
use x509_parser::extensions::ParsedExtension;

use crate::interop::openssl_verify;
use crate::support::*;

const H: u64 = 3600;

struct UpstreamFixture {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    cert: rcgen::Certificate,
}

fn ca_params(cn: &str, not_after_secs: u64) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Upstream Corp");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    // openssl -x509_strict wants an AKI on every non-root certificate; rcgen adds none unless told.
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2026, 1, 1) + Duration::from_secs(not_after_secs);
    params
}

/// A self-signed upstream root valid until t0 + `valid_for` seconds.
fn upstream_root(alg: &'static rcgen::SignatureAlgorithm, valid_for: u64) -> UpstreamFixture {
    let key = if alg == &rcgen::PKCS_RSA_SHA256 {
        rcgen::KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048).unwrap()
    } else {
        rcgen::KeyPair::generate_for(alg).unwrap()
    };
    let params = ca_params("Upstream Root", valid_for);
    let cert = params.self_signed(&key).unwrap();
    UpstreamFixture { key, params, cert }
}

fn upstream_config(upstream: UpstreamCa) -> CaConfig {
    let mut config = CaConfig::new(td());
    config.upstream = Some(upstream);
    config
}

fn ski_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn aki_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => {
                k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

#[test]
fn intermediates_under_upstream_roots_of_every_key_type_verify_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        let root = upstream_root(alg, 365 * 24 * H);
        let upstream = UpstreamCa::from_pem(
            root.cert.pem().as_bytes(),
            root.key.serialize_pem().as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(upstream.roots_der(), [root.cert.der().to_vec()]);
        let clock = clock();
        let ca = Ca::new(upstream_config(upstream), memory_keys(), shared(&clock)).unwrap();

        // The bundle holds the upstream root only; the SVID chain is leaf + our intermediate.
        let bundle = ca.bundle();
        assert_eq!(bundle.x509_authorities().len(), 1);
        assert_eq!(bundle.x509_authorities()[0].der(), root.cert.der().as_ref());
        let key = WorkloadKey::p256();
        let svid = ca
            .mint_x509_svid_from_csr(&key.csr(), &request("/w"))
            .unwrap();
        assert_eq!(svid.cert_chain.len(), 2);
        let (_, inter) = x509_parser::parse_x509_certificate(&svid.cert_chain[1]).unwrap();
        let (_, root_cert) = x509_parser::parse_x509_certificate(root.cert.der()).unwrap();
        assert_eq!(inter.issuer().as_raw(), root_cert.subject().as_raw());
        inter
            .verify_signature(Some(root_cert.public_key()))
            .unwrap();
        assert!(inter.is_ca());
        if let Some(root_ski) = ski_of(root.cert.der()) {
            assert_eq!(aki_of(&svid.cert_chain[1]).unwrap(), root_ski);
        }
        assert_eq!(
            aki_of(&svid.cert_chain[0]).unwrap(),
            ski_of(&svid.cert_chain[1]).unwrap()
        );

        verify_x509_svid(&svid.cert_chain, &bundle_set(bundle), t0()).unwrap();
        spiffe::X509Svid::parse_from_der(&svid.chain_der_concatenated(), &key.pkcs8()).unwrap();
        for purpose in ["sslclient", "sslserver"] {
            let (ok, out) = openssl_verify(
                dir.path(),
                &[root.cert.der().to_vec()],
                &svid.cert_chain,
                purpose,
                t0() + Duration::from_secs(60),
            );
            assert!(ok, "{alg:?} {purpose}: {out}");
        }
    }
}

#[test]
fn an_upstream_intermediate_travels_in_the_chain_and_its_root_in_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let root = upstream_root(&rcgen::PKCS_ECDSA_P256_SHA256, 365 * 24 * H);
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mid_params = ca_params("Upstream Issuing CA", 300 * 24 * H);
    let issuer = rcgen::Issuer::new(root.params, root.key);
    let mid = mid_params.signed_by(&mid_key, &issuer).unwrap();

    // The chain file: the issuing CA, then its root.
    let chain_pem = format!("{}{}", mid.pem(), root.cert.pem());
    let upstream = UpstreamCa::from_pem(
        chain_pem.as_bytes(),
        mid_key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap();
    let clock = clock();
    let ca = Ca::new(upstream_config(upstream), memory_keys(), shared(&clock)).unwrap();
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &request("/w"))
        .unwrap();
    assert_eq!(svid.cert_chain.len(), 3);
    assert_eq!(svid.cert_chain[2], mid.der().to_vec());
    assert_eq!(
        ca.bundle().x509_authorities()[0].der(),
        root.cert.der().as_ref()
    );
    verify_x509_svid(&svid.cert_chain, &bundle_set(ca.bundle()), t0()).unwrap();
    let (ok, out) = openssl_verify(
        dir.path(),
        &[root.cert.der().to_vec()],
        &svid.cert_chain,
        "sslclient",
        t0() + Duration::from_secs(60),
    );
    assert!(ok, "{out}");

    // The same with the root passed separately (SPIRE's `bundle_file_path`).
    let upstream = UpstreamCa::from_pem(
        mid.pem().as_bytes(),
        mid_key.serialize_pem().as_bytes(),
        Some(root.cert.pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(upstream.roots_der(), [root.cert.der().to_vec()]);
}

#[test]
fn intermediates_never_outlive_the_upstream_and_rotation_keeps_the_bundle_roots() {
    // The upstream root expires 30 h after t0: the first intermediate gets a full 24 h, the next
    // ones are capped at 30 h.
    let root = upstream_root(&rcgen::PKCS_ECDSA_P256_SHA256, 30 * H);
    let upstream = UpstreamCa::from_pem(
        root.cert.pem().as_bytes(),
        root.key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap();
    let upstream_not_after = upstream.not_after();
    let clock = clock();
    let ca = Ca::new(upstream_config(upstream), memory_keys(), shared(&clock)).unwrap();
    let first = ca.authorities()[0].clone();
    assert_eq!(unix(first.not_after), unix(t0()) + 24 * H);

    clock.set(t0() + Duration::from_secs(12 * H));
    let out = ca.tick().unwrap();
    // A successor was prepared, capped at the upstream's expiry; only the JWT key changed the
    // bundle (the X.509 part is the upstream root all along).
    let x509: Vec<_> = ca
        .authorities()
        .into_iter()
        .filter(|a| a.kind == AuthorityKind::X509)
        .collect();
    assert_eq!(x509.len(), 2);
    assert_eq!(x509[1].not_after, upstream_not_after);
    assert!(out.bundle_changed);
    assert_eq!(ca.bundle().x509_authorities().len(), 1);

    clock.set(t0() + Duration::from_secs(20 * H));
    let _ = ca.tick().unwrap();
    let svid = ca
        .mint_x509_svid(
            &WorkloadKey::p256().spki(),
            &request("/w").with_ttl(Duration::from_secs(48 * H)),
        )
        .unwrap();
    assert_eq!(svid.not_after, upstream_not_after);
    verify_x509_svid(
        &svid.cert_chain,
        &bundle_set(ca.bundle()),
        clock_now(&clock),
    )
    .unwrap();

    // The successor cannot outlive the active one any more: nothing new is prepared. When the
    // upstream has expired, ticking fails with a clear error instead of minting dead certificates.
    clock.set(t0() + Duration::from_secs(26 * H));
    let _ = ca.tick().unwrap();
    assert_eq!(
        ca.authorities()
            .iter()
            .filter(|a| a.kind == AuthorityKind::X509 && a.state == AuthorityState::Prepared)
            .count(),
        0
    );
    clock.set(t0() + Duration::from_secs(31 * H));
    assert!(matches!(ca.tick(), Err(CaError::Upstream(_))));
}

fn clock_now(clock: &std::sync::Arc<lanyard_core::ManualClock>) -> std::time::SystemTime {
    lanyard_core::Clock::now(clock.as_ref())
}

#[test]
fn bad_upstream_inputs_are_refused() {
    let root = upstream_root(&rcgen::PKCS_ECDSA_P256_SHA256, 365 * 24 * H);
    let other_key = rcgen::KeyPair::generate().unwrap();
    let cert_pem = root.cert.pem();

    let err = UpstreamCa::from_pem(
        cert_pem.as_bytes(),
        other_key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CaError::Upstream(m) if m.contains("does not match")),
        "{err}"
    );

    let err = UpstreamCa::from_pem(b"", root.key.serialize_pem().as_bytes(), None).unwrap_err();
    assert!(matches!(err, CaError::Upstream(_)), "{err}");
    let err = UpstreamCa::from_pem(cert_pem.as_bytes(), b"no key here", None).unwrap_err();
    assert!(matches!(err, CaError::Upstream(_)), "{err}");

    // A leaf certificate is not a CA.
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["x.example".to_owned()]).unwrap();
    leaf_params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let leaf = leaf_params.self_signed(&leaf_key).unwrap();
    let err = UpstreamCa::from_pem(
        leaf.pem().as_bytes(),
        leaf_key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CaError::Upstream(m) if m.contains("not a CA")),
        "{err}"
    );

    // An intermediate without its root, and no roots given.
    let mid_key = rcgen::KeyPair::generate().unwrap();
    let mid = ca_params("mid", 100 * H)
        .signed_by(&mid_key, &rcgen::Issuer::new(root.params, root.key))
        .unwrap();
    let err = UpstreamCa::from_pem(
        mid.pem().as_bytes(),
        mid_key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CaError::Upstream(m) if m.contains("not a root")),
        "{err}"
    );
}

#[test]
fn an_expired_upstream_is_refused_at_start() {
    let root = upstream_root(&rcgen::PKCS_ECDSA_P256_SHA256, 0);
    let upstream = UpstreamCa::from_pem(
        root.cert.pem().as_bytes(),
        root.key.serialize_pem().as_bytes(),
        None,
    )
    .unwrap();
    let clock = clock();
    clock.set(t0() + Duration::from_secs(1));
    let err = Ca::new(upstream_config(upstream), memory_keys(), shared(&clock)).unwrap_err();
    assert!(matches!(err, CaError::Upstream(_)), "{err}");
}
