//! Every X509-SVID profile rule of SPIFFE.md §2 checked on minted certificates with x509-parser,
//! and the SVIDs verified with lanyard-core's verifier.

use std::collections::HashSet;
use std::time::Duration;

use lanyard_ca::{AuthorityKind, AuthorityState, CaError, X509SvidRequest};
use lanyard_core::{DnsName, verify_x509_svid};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry;
use x509_parser::prelude::FromDer as _;

use crate::support::*;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn uris<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect()
}

fn dns<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect()
}

fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("SKI present")
}

fn aki(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
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
fn leaf_and_root_follow_the_x509_svid_profile() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let req = request("/web/frontend").with_dns_names(vec![
        DnsName::new("web.example.org").unwrap(),
        DnsName::new("www.example.org").unwrap(),
    ]);
    let svid = ca.mint_x509_svid(&key.spki(), &req).unwrap();
    let now = unix(t0());

    // Self-signed: the chain is the leaf alone; the root is in the bundle.
    assert_eq!(svid.cert_chain.len(), 1);
    let bundle = ca.bundle();
    assert_eq!(bundle.x509_authorities().len(), 1);
    let root_der = bundle.x509_authorities()[0].der().to_vec();
    let root = parse(&root_der);
    let leaf = parse(svid.leaf_der());

    // X509-1/2: exactly one URI SAN, the SPIFFE ID; DNS SANs as asked.
    assert_eq!(uris(&leaf), vec!["spiffe://example.org/web/frontend"]);
    assert_eq!(dns(&leaf), vec!["web.example.org", "www.example.org"]);
    // X509-4: the subject is not empty (so the SAN need not be critical); CN = first DNS name.
    let subject = leaf.subject().to_string();
    assert_eq!(subject, "C=US, O=SPIFFE, CN=web.example.org");
    // X509-5: basicConstraints cA=false, present and critical.
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    // X509-6/8: keyUsage critical: digitalSignature, keyEncipherment, keyAgreement, nothing else.
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(
        ku.value.digital_signature() && ku.value.key_encipherment() && ku.value.key_agreement()
    );
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert_eq!(ku.value.flags, 0b1_0101);
    // X509-9: EKU with both serverAuth and clientAuth.
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    // X509-17: positive random serial of at least 64 bits; SKI; AKI = the root's SKI.
    let serial = leaf.raw_serial();
    assert!(serial.len() >= 8 && serial[0] & 0x80 == 0, "{serial:?}");
    assert!(leaf.tbs_certificate.serial.bits() > 64);
    assert_eq!(ski(&leaf).len(), 20);
    assert_eq!(aki(&leaf).unwrap(), ski(&root));
    // Validity: NotBefore = now − 10 s, NotAfter = now + default TTL (1 h).
    assert_eq!(leaf.validity().not_before.timestamp() as u64, now - 10);
    assert_eq!(leaf.validity().not_after.timestamp() as u64, now + 3600);
    assert_eq!(unix(svid.not_after), now + 3600);
    // The leaf is signed by the root, and is not itself a CA in any way.
    assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert!(!leaf.is_ca());

    // The CA certificate: URI SAN spiffe://<td> (ID-10, X509-10), CA:TRUE critical (X509-5),
    // keyUsage keyCertSign|cRLSign critical without digitalSignature (X509-6/7, §0.9), SKI,
    // self-signed, subject C=US,O=SPIFFE,…
    assert_eq!(uris(&root), vec!["spiffe://example.org"]);
    let bc = root.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = root.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    assert_eq!(ski(&root).len(), 20);
    assert_eq!(root.issuer().as_raw(), root.subject().as_raw());
    root.verify_signature(None).unwrap();
    assert!(
        root.subject().to_string().starts_with("C=US, O=SPIFFE, "),
        "{}",
        root.subject()
    );
    assert_eq!(
        root.signature_algorithm.algorithm,
        oid_registry::OID_SIG_ECDSA_WITH_SHA256
    );
    assert_eq!(root.validity().not_before.timestamp() as u64, now - 10);
    assert_eq!(
        root.validity().not_after.timestamp() as u64,
        now + 24 * 3600
    );

    // And lanyard-core's verifier accepts it now, names the right ID, and refuses it expired.
    let set = bundle_set(bundle);
    let verified = verify_x509_svid(&svid.cert_chain, &set, t0()).unwrap();
    assert_eq!(verified.spiffe_id(), &id("/web/frontend"));
    assert!(verify_x509_svid(&svid.cert_chain, &set, t0() + Duration::from_secs(3601)).is_err());
}

#[test]
fn serials_are_random_and_subject_without_dns_has_no_cn() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let mut serials = HashSet::new();
    for _ in 0..50 {
        let svid = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap();
        let leaf = parse(svid.leaf_der());
        assert_eq!(leaf.subject().to_string(), "C=US, O=SPIFFE");
        assert!(serials.insert(leaf.raw_serial().to_vec()));
    }
}

#[test]
fn a_long_first_dns_name_is_not_put_in_the_cn() {
    let clock = clock();
    let ca = new_ca(&clock);
    let long = format!("{}.example.org", "a".repeat(60));
    let req = request("/w").with_dns_names(vec![DnsName::new(&long).unwrap()]);
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &req)
        .unwrap();
    let leaf = parse(svid.leaf_der());
    assert_eq!(leaf.subject().to_string(), "C=US, O=SPIFFE");
    assert_eq!(dns(&leaf), vec![long.as_str()]);
}

#[test]
fn ttl_is_capped_at_the_signers_not_after_and_zero_is_refused() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let ca_not_after = ca
        .authorities()
        .into_iter()
        .find(|a| a.kind == AuthorityKind::X509 && a.state == AuthorityState::Active)
        .unwrap()
        .not_after;

    // Asking for a week from a 24 h CA gives a leaf that ends exactly with the CA.
    let svid = ca
        .mint_x509_svid(
            &key.spki(),
            &request("/w").with_ttl(Duration::from_secs(7 * 86400)),
        )
        .unwrap();
    assert_eq!(svid.not_after, ca_not_after);
    let leaf = parse(svid.leaf_der());
    assert_eq!(
        leaf.validity().not_after.timestamp() as u64,
        unix(ca_not_after)
    );

    // Sub-second TTLs round up to a whole second.
    let svid = ca
        .mint_x509_svid(
            &key.spki(),
            &request("/w").with_ttl(Duration::from_millis(1)),
        )
        .unwrap();
    assert_eq!(unix(svid.not_after), unix(t0()) + 1);

    let err = ca
        .mint_x509_svid(&key.spki(), &request("/w").with_ttl(Duration::ZERO))
        .unwrap_err();
    assert!(matches!(err, CaError::ZeroTtl), "{err}");
}

#[test]
fn ids_outside_the_trust_domain_or_without_a_path_are_refused() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let foreign =
        X509SvidRequest::new(lanyard_core::SpiffeId::parse("spiffe://other.org/w").unwrap());
    assert!(matches!(
        ca.mint_x509_svid(&key.spki(), &foreign),
        Err(CaError::ForeignTrustDomain { .. })
    ));
    let root = X509SvidRequest::new(td().id());
    assert!(matches!(
        ca.mint_x509_svid(&key.spki(), &root),
        Err(CaError::RootIdNotAllowed(_))
    ));
}

#[test]
fn leaf_keys_of_every_supported_type_are_certified() {
    let clock = clock();
    let ca = new_ca(&clock);
    let set = bundle_set(ca.bundle());
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let key = WorkloadKey::new(alg);
        let svid = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap();
        // The certified key is exactly the one asked for.
        let leaf = parse(svid.leaf_der());
        assert_eq!(leaf.public_key().raw, key.spki().as_slice());
        verify_x509_svid(&svid.cert_chain, &set, t0()).unwrap();
        let svid = ca
            .mint_x509_svid_from_csr(&key.csr(), &request("/w"))
            .unwrap();
        verify_x509_svid(&svid.cert_chain, &set, t0()).unwrap();
    }
}

#[test]
fn csr_contents_other_than_the_key_are_ignored() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let svid = ca
        .mint_x509_svid_from_csr(&key.csr(), &request("/db"))
        .unwrap();
    let leaf = parse(svid.leaf_der());
    assert_eq!(uris(&leaf), vec!["spiffe://example.org/db"]);
    assert!(dns(&leaf).is_empty());
    assert_eq!(leaf.subject().to_string(), "C=US, O=SPIFFE");
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(leaf.public_key().raw, key.spki().as_slice());
}

#[test]
fn p384_ca_signs_with_ecdsa_sha384() {
    let clock = clock();
    let mut config = lanyard_ca::CaConfig::new(td());
    config.key_type = lanyard_ca::KeyType::EcP384;
    let ca = lanyard_ca::Ca::new(config, memory_keys(), shared(&clock)).unwrap();
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &request("/w"))
        .unwrap();
    let leaf = parse(svid.leaf_der());
    assert_eq!(
        leaf.signature_algorithm.algorithm,
        oid_registry::OID_SIG_ECDSA_WITH_SHA384
    );
    verify_x509_svid(&svid.cert_chain, &bundle_set(ca.bundle()), t0()).unwrap();
}

#[test]
fn published_bundle_follows_the_spiffe_bundle_format() {
    let clock = clock();
    let ca = new_ca(&clock);
    let json: serde_json::Value = serde_json::from_str(&ca.bundle().to_json()).unwrap();
    assert_eq!(json["spiffe_sequence"], 1);
    assert_eq!(json["spiffe_refresh_hint"], 300);
    let keys = json["keys"].as_array().unwrap();
    let x509: Vec<_> = keys.iter().filter(|k| k["use"] == "x509-svid").collect();
    let jwt: Vec<_> = keys.iter().filter(|k| k["use"] == "jwt-svid").collect();
    assert_eq!((x509.len(), jwt.len(), keys.len()), (1, 1, 2));
    // X509-14: no kid, exactly one standard-base64 certificate in x5c.
    assert!(x509[0].get("kid").is_none());
    assert_eq!(x509[0]["x5c"].as_array().unwrap().len(), 1);
    // JWT-12: kid set, equal to the active key's kid.
    let kid = ca
        .authorities()
        .into_iter()
        .find(|a| a.kind == AuthorityKind::Jwt)
        .unwrap()
        .id;
    assert_eq!(jwt[0]["kid"], kid.as_str());
    assert_eq!(jwt[0]["kty"], "EC");
    assert_eq!(jwt[0]["crv"], "P-256");
}
