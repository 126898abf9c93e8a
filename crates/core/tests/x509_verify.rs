//! X509-SVID verification (SPIFFE.md §2) through the public API, with certificates built by rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod bundle_fixtures;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bundle_fixtures::{Ca, ca_params, leaf_params, set_validity, t0, td, uri};
use lanyard_core::{
    Bundle, BundleSet, IdError, SpiffeId, X509Authority, X509SvidError, check_x509_svid_leaf,
    verify_x509_svid,
};
use rcgen::{
    BasicConstraints, CustomExtension, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};

const ID: &str = "spiffe://example.org/workload";

fn set_of(bundles: impl IntoIterator<Item = Bundle>) -> BundleSet {
    bundles.into_iter().collect()
}

fn verify(chain: &[Vec<u8>], bundles: &BundleSet) -> Result<SpiffeId, X509SvidError> {
    verify_x509_svid(chain, bundles, t0()).map(|svid| svid.spiffe_id().clone())
}

/// A root for example.org and a set holding only its bundle.
fn example_org() -> (Ca, BundleSet) {
    let root = Ca::root("example.org");
    let bundles = set_of([root.bundle("example.org")]);
    (root, bundles)
}

/// Verifies a leaf with `params` (adjusted by `adjust`) signed by example.org's root.
fn verify_leaf_with(
    adjust: impl FnOnce(&mut rcgen::CertificateParams),
) -> Result<SpiffeId, X509SvidError> {
    let (root, bundles) = example_org();
    let mut params = leaf_params(ID);
    adjust(&mut params);
    verify(&[root.sign(&params)], &bundles)
}

/// DER content of a keyUsage extension with only digitalSignature.
const KU_DIGITAL_SIGNATURE: [u8; 4] = [0x03, 0x02, 0x07, 0x80];

/// DER content of a subjectAltName extension with one URI.
fn san_uri_content(uri: &str) -> Vec<u8> {
    let mut general_name = vec![0x86, uri.len() as u8];
    general_name.extend_from_slice(uri.as_bytes());
    let mut content = vec![0x30, general_name.len() as u8];
    content.extend(general_name);
    content
}

// === accepted ===

#[test]
fn leaf_signed_by_root_is_accepted_with_its_id_and_validity() {
    let (root, bundles) = example_org();
    let svid = verify_x509_svid(&[root.leaf(ID)], &bundles, t0()).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), ID);
    assert_eq!(svid.not_before(), t0() - Duration::from_secs(3600));
    assert_eq!(svid.not_after(), t0() + Duration::from_secs(3600));
}

#[test]
fn leaf_through_an_intermediate_is_accepted() {
    let (root, bundles) = example_org();
    let intermediate = root.intermediate(ca_params("example.org"));
    let chain = [intermediate.leaf(ID), intermediate.der];
    assert_eq!(verify(&chain, &bundles).unwrap().as_str(), ID);
}

#[test]
fn chain_that_repeats_the_root_is_accepted() {
    let (root, bundles) = example_org();
    let intermediate = root.intermediate(ca_params("example.org"));
    let chain = [intermediate.leaf(ID), intermediate.der, root.der];
    assert_eq!(verify(&chain, &bundles).unwrap().as_str(), ID);
}

#[test]
fn two_level_intermediates_are_accepted() {
    let (root, bundles) = example_org();
    let first = root.intermediate(ca_params("example.org"));
    let second = first.intermediate(ca_params("example.org"));
    let chain = [second.leaf(ID), second.der, first.der];
    assert_eq!(verify(&chain, &bundles).unwrap().as_str(), ID);
}

#[test]
fn any_root_of_the_bundle_may_sign_during_rotation() {
    let old = Ca::root("example.org");
    let new = Ca::root("example.org");
    let mut bundle = old.bundle("example.org");
    bundle.add_x509_authority(new.authority());
    let bundles = set_of([bundle]);
    assert!(verify(&[old.leaf(ID)], &bundles).is_ok());
    assert!(verify(&[new.leaf(ID)], &bundles).is_ok());
}

#[test]
fn roots_with_other_key_types_are_accepted() {
    for alg in [
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P521_SHA512,
        &rcgen::PKCS_ED25519,
    ] {
        let root = Ca::self_signed(ca_params("example.org"), alg);
        let bundles = set_of([root.bundle("example.org")]);
        assert!(verify(&[root.leaf(ID)], &bundles).is_ok(), "{alg:?}");
    }
}

#[test]
fn leaf_without_extended_key_usage_is_accepted() {
    assert!(verify_leaf_with(|p| p.extended_key_usages.clear()).is_ok());
}

#[test]
fn leaf_with_any_extended_key_usage_is_accepted() {
    assert!(
        verify_leaf_with(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Any]).is_ok()
    );
}

#[test]
fn leaf_with_only_digital_signature_and_dns_sans_is_accepted() {
    let id = verify_leaf_with(|p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.subject_alt_names
            .push(SanType::DnsName("web.example.org".try_into().unwrap()));
    })
    .unwrap();
    assert_eq!(id.as_str(), ID);
}

#[test]
fn empty_subject_with_critical_san_is_accepted() {
    // rcgen marks the SAN critical when the subject is empty, as RFC 5280 §4.1.2.6 requires.
    assert!(verify_leaf_with(|p| p.distinguished_name = DistinguishedName::new()).is_ok());
}

#[test]
fn validity_bounds_are_inclusive() {
    let (root, bundles) = example_org();
    let chain = [root.leaf(ID)];
    let not_before = t0() - Duration::from_secs(3600);
    let not_after = t0() + Duration::from_secs(3600);
    assert!(verify_x509_svid(&chain, &bundles, not_before).is_ok());
    assert!(verify_x509_svid(&chain, &bundles, not_after).is_ok());
}

#[test]
fn leaf_id_path_is_case_sensitive_and_returned_as_is() {
    let id = verify_leaf_with(|p| p.subject_alt_names = vec![uri("spiffe://example.org/Web/API")])
        .unwrap();
    assert_eq!(id.as_str(), "spiffe://example.org/Web/API");
}

// === chain shape ===

#[test]
fn empty_chain_is_refused() {
    let (_, bundles) = example_org();
    assert_eq!(verify(&[], &bundles), Err(X509SvidError::EmptyChain));
}

#[test]
fn overlong_chain_is_refused() {
    let (root, bundles) = example_org();
    let mut chain = vec![root.leaf(ID)];
    chain.extend(std::iter::repeat_n(root.der, 16));
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::ChainTooLong { len: 17 })
    );
}

#[test]
fn garbage_is_refused_with_its_index() {
    let (root, bundles) = example_org();
    assert!(matches!(
        verify(&[b"not a certificate".to_vec()], &bundles),
        Err(X509SvidError::MalformedCertificate { index: 0, .. })
    ));
    assert!(matches!(
        verify(&[root.leaf(ID), vec![0x30, 0x03, 0x02, 0x01]], &bundles),
        Err(X509SvidError::MalformedCertificate { index: 1, .. })
    ));
    let mut trailing = root.leaf(ID);
    trailing.push(0);
    assert!(matches!(
        verify(&[trailing], &bundles),
        Err(X509SvidError::MalformedCertificate { index: 0, .. })
    ));
}

// === leaf rules (X509-1 … X509-9, X509-13) ===

#[test]
fn leaf_without_san_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.subject_alt_names.clear()),
        Err(X509SvidError::MissingUriSan)
    );
}

#[test]
fn leaf_with_only_dns_san_is_refused() {
    assert_eq!(
        verify_leaf_with(
            |p| p.subject_alt_names = vec![SanType::DnsName("example.org".try_into().unwrap())]
        ),
        Err(X509SvidError::MissingUriSan)
    );
}

#[test]
fn leaf_with_two_uri_sans_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.subject_alt_names.push(uri("spiffe://example.org/other"))),
        Err(X509SvidError::MultipleUriSans { count: 2 })
    );
}

#[test]
fn leaf_whose_uri_is_not_a_spiffe_id_is_refused() {
    for (bad, cause) in [
        ("https://example.org/workload", IdError::WrongScheme),
        ("SPIFFE://example.org/workload", IdError::WrongScheme),
        (
            "spiffe://Example.org/workload",
            IdError::TrustDomainChar { found: 'E' },
        ),
        ("spiffe://example.org/a//b", IdError::EmptySegment),
    ] {
        assert_eq!(
            verify_leaf_with(|p| p.subject_alt_names = vec![uri(bad)]),
            Err(X509SvidError::InvalidSpiffeId {
                uri: bad.to_owned(),
                source: cause
            }),
            "{bad}"
        );
    }
}

#[test]
fn leaf_with_a_root_id_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.subject_alt_names = vec![uri("spiffe://example.org")]),
        Err(X509SvidError::RootIdLeaf {
            id: SpiffeId::parse("spiffe://example.org").unwrap()
        })
    );
}

#[test]
fn empty_subject_with_non_critical_san_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| {
            p.distinguished_name = DistinguishedName::new();
            p.subject_alt_names.clear();
            let mut san = CustomExtension::from_oid_content(&[2, 5, 29, 17], san_uri_content(ID));
            san.set_criticality(false);
            p.custom_extensions.push(san);
        }),
        Err(X509SvidError::SanNotCritical)
    );
}

#[test]
fn leaf_that_is_a_ca_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
        Err(X509SvidError::LeafIsCa)
    );
}

#[test]
fn leaf_without_basic_constraints_is_accepted() {
    // Absent basicConstraints means cA=false (RFC 5280 §4.2.1.9).
    assert!(verify_leaf_with(|p| p.is_ca = IsCa::NoCa).is_ok());
}

#[test]
fn leaf_without_key_usage_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.key_usages.clear()),
        Err(X509SvidError::MissingKeyUsage)
    );
}

#[test]
fn leaf_with_non_critical_key_usage_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| {
            p.key_usages.clear();
            let mut ku =
                CustomExtension::from_oid_content(&[2, 5, 29, 15], KU_DIGITAL_SIGNATURE.to_vec());
            ku.set_criticality(false);
            p.custom_extensions.push(ku);
        }),
        Err(X509SvidError::KeyUsageNotCritical)
    );
}

#[test]
fn leaf_without_digital_signature_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]),
        Err(X509SvidError::MissingDigitalSignature)
    );
}

#[test]
fn leaf_with_key_cert_sign_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.key_usages.push(KeyUsagePurpose::KeyCertSign)),
        Err(X509SvidError::LeafKeyCertSign)
    );
}

#[test]
fn leaf_with_crl_sign_is_refused() {
    assert_eq!(
        verify_leaf_with(|p| p.key_usages.push(KeyUsagePurpose::CrlSign)),
        Err(X509SvidError::LeafCrlSign)
    );
}

#[test]
fn leaf_with_only_one_of_server_and_client_auth_is_refused() {
    for eku in [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::CodeSigning,
    ] {
        assert_eq!(
            verify_leaf_with(|p| p.extended_key_usages = vec![eku.clone()]),
            Err(X509SvidError::ExtendedKeyUsage),
            "{eku:?}"
        );
    }
}

#[test]
fn check_x509_svid_leaf_runs_the_leaf_rules_alone() {
    let root = Ca::root("example.org");
    assert_eq!(check_x509_svid_leaf(&root.leaf(ID)).unwrap().as_str(), ID);
    // A CA certificate carries the trust domain's own ID, which no leaf may have.
    assert!(matches!(
        check_x509_svid_leaf(&root.der),
        Err(X509SvidError::RootIdLeaf { .. })
    ));
    let mut params = leaf_params(ID);
    params.key_usages.push(KeyUsagePurpose::KeyCertSign);
    assert_eq!(
        check_x509_svid_leaf(&root.sign(&params)),
        Err(X509SvidError::LeafKeyCertSign)
    );
}

// === signing certificates (X509-10, X509-16) ===

#[test]
fn intermediate_that_is_not_a_ca_is_refused() {
    let (root, bundles) = example_org();
    for is_ca in [IsCa::ExplicitNoCa, IsCa::NoCa] {
        let mut params = ca_params("example.org");
        params.is_ca = is_ca;
        let intermediate = root.intermediate(params);
        let chain = [intermediate.leaf(ID), intermediate.der.clone()];
        assert_eq!(
            verify(&chain, &bundles),
            Err(X509SvidError::IntermediateNotCa { index: 1 })
        );
    }
}

#[test]
fn intermediate_without_key_cert_sign_is_refused() {
    let (root, bundles) = example_org();
    for key_usages in [vec![], vec![KeyUsagePurpose::CrlSign]] {
        let mut params = ca_params("example.org");
        params.key_usages = key_usages;
        let intermediate = root.intermediate(params);
        let chain = [intermediate.leaf(ID), intermediate.der.clone()];
        assert_eq!(
            verify(&chain, &bundles),
            Err(X509SvidError::IntermediateMissingKeyCertSign { index: 1 })
        );
    }
}

#[test]
fn intermediate_whose_spiffe_id_has_a_path_is_refused() {
    let (root, bundles) = example_org();
    let mut params = ca_params("example.org");
    params.subject_alt_names = vec![uri("spiffe://example.org/ca")];
    let intermediate = root.intermediate(params);
    let chain = [intermediate.leaf(ID), intermediate.der];
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::IntermediateIdHasPath {
            index: 1,
            id: SpiffeId::parse("spiffe://example.org/ca").unwrap()
        })
    );
}

#[test]
fn intermediate_without_spiffe_id_is_accepted() {
    let (root, bundles) = example_org();
    let mut params = ca_params("example.org");
    params.subject_alt_names.clear();
    let intermediate = root.intermediate(params);
    let chain = [intermediate.leaf(ID), intermediate.der];
    assert!(verify(&chain, &bundles).is_ok());
}

#[test]
fn path_length_constraint_is_enforced() {
    let mut params = ca_params("example.org");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let root = Ca::self_signed(params, &rcgen::PKCS_ECDSA_P256_SHA256);
    let bundles = set_of([root.bundle("example.org")]);
    let intermediate = root.intermediate(ca_params("example.org"));
    let chain = [intermediate.leaf(ID), intermediate.der];
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::PathLenConstraint)
    );
}

#[test]
fn path_length_constraint_allows_what_it_says() {
    let mut params = ca_params("example.org");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    let root = Ca::self_signed(params, &rcgen::PKCS_ECDSA_P256_SHA256);
    let bundles = set_of([root.bundle("example.org")]);
    let first = root.intermediate(ca_params("example.org"));
    assert!(verify(&[first.leaf(ID), first.der.clone()], &bundles).is_ok());
    let second = first.intermediate(ca_params("example.org"));
    let chain = [second.leaf(ID), second.der, first.der];
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::PathLenConstraint)
    );
}

// === time ===

#[test]
fn expired_leaf_is_refused() {
    let (root, bundles) = example_org();
    let not_after = t0() + Duration::from_secs(3600);
    assert_eq!(
        verify_x509_svid(
            &[root.leaf(ID)],
            &bundles,
            not_after + Duration::from_secs(1)
        ),
        Err(X509SvidError::Expired { not_after })
    );
}

#[test]
fn leaf_not_yet_valid_is_refused() {
    let (root, bundles) = example_org();
    let not_before = t0() - Duration::from_secs(3600);
    assert_eq!(
        verify_x509_svid(
            &[root.leaf(ID)],
            &bundles,
            not_before - Duration::from_secs(1)
        ),
        Err(X509SvidError::NotYetValid { not_before })
    );
}

#[test]
fn expired_intermediate_is_refused() {
    let (root, bundles) = example_org();
    let mut params = ca_params("example.org");
    set_validity(
        &mut params,
        t0() - Duration::from_secs(7200),
        t0() - Duration::from_secs(60),
    );
    let intermediate = root.intermediate(params);
    let chain = [intermediate.leaf(ID), intermediate.der];
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::IntermediateExpired)
    );
}

#[test]
fn intermediate_not_yet_valid_is_refused() {
    let (root, bundles) = example_org();
    let mut params = ca_params("example.org");
    set_validity(
        &mut params,
        t0() + Duration::from_secs(60),
        t0() + Duration::from_secs(7200),
    );
    let intermediate = root.intermediate(params);
    let chain = [intermediate.leaf(ID), intermediate.der];
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::IntermediateNotYetValid)
    );
}

fn root_valid_between(not_before: SystemTime, not_after: SystemTime) -> Ca {
    let mut params = ca_params("example.org");
    set_validity(&mut params, not_before, not_after);
    Ca::self_signed(params, &rcgen::PKCS_ECDSA_P256_SHA256)
}

#[test]
fn expired_root_is_refused() {
    let root = root_valid_between(
        t0() - Duration::from_secs(86_400),
        t0() - Duration::from_secs(60),
    );
    let bundles = set_of([root.bundle("example.org")]);
    assert_eq!(
        verify(&[root.leaf(ID)], &bundles),
        Err(X509SvidError::AuthorityExpired)
    );
}

#[test]
fn root_not_yet_valid_is_refused() {
    let root = root_valid_between(
        t0() + Duration::from_secs(60),
        t0() + Duration::from_secs(86_400),
    );
    let bundles = set_of([root.bundle("example.org")]);
    assert_eq!(
        verify(&[root.leaf(ID)], &bundles),
        Err(X509SvidError::AuthorityNotYetValid)
    );
}

#[test]
fn expired_copy_of_a_reissued_root_does_not_hide_the_valid_one() {
    let params = ca_params("example.org");
    let root = Ca::self_signed(params.clone(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut expired = params;
    set_validity(
        &mut expired,
        t0() - Duration::from_secs(86_400),
        t0() - Duration::from_secs(60),
    );
    let mut bundle = Bundle::new(td("example.org"));
    // The expired copy first, so that it is the first anchor webpki finds.
    bundle.add_x509_authority(X509Authority::from_der(root.reissue(&expired)).unwrap());
    bundle.add_x509_authority(root.authority());
    let bundles = set_of([bundle]);
    assert_eq!(verify(&[root.leaf(ID)], &bundles).unwrap().as_str(), ID);
}

#[test]
fn verification_time_before_1970_is_refused() {
    let (root, bundles) = example_org();
    let mut params = leaf_params(ID);
    params.not_before = rcgen::date_time_ymd(1960, 1, 1);
    let before_epoch = UNIX_EPOCH - Duration::from_secs(86_400);
    assert_eq!(
        verify_x509_svid(&[root.sign(&params)], &bundles, before_epoch),
        Err(X509SvidError::TimeBeforeEpoch)
    );
}

// === trust (X509-12, BUN-6, BUN-7, WAPI-13) ===

#[test]
fn leaf_of_a_trust_domain_without_bundle_is_refused() {
    let root = Ca::root("example.org");
    let bundles = set_of([root.bundle("other.org")]);
    assert_eq!(
        verify(&[root.leaf(ID)], &bundles),
        Err(X509SvidError::NoBundle {
            trust_domain: td("example.org")
        })
    );
}

#[test]
fn bundle_without_x509_authorities_is_refused() {
    let root = Ca::root("example.org");
    let bundles = set_of([Bundle::new(td("example.org"))]);
    assert_eq!(
        verify(&[root.leaf(ID)], &bundles),
        Err(X509SvidError::NoX509Authorities {
            trust_domain: td("example.org")
        })
    );
}

#[test]
fn chain_to_another_trust_domains_root_is_refused() {
    // Both trust domains are trusted, but the example.org leaf chains to other.org's root.
    let own = Ca::root("example.org");
    let other = Ca::root("other.org");
    let bundles = set_of([own.bundle("example.org"), other.bundle("other.org")]);
    assert_eq!(
        verify(&[other.leaf(ID)], &bundles),
        Err(X509SvidError::UntrustedChain {
            trust_domain: td("example.org")
        })
    );
    // The other trust domain's own leaves still verify.
    assert!(verify(&[other.leaf("spiffe://other.org/w")], &bundles).is_ok());
}

#[test]
fn chain_through_another_trust_domains_intermediate_is_refused() {
    let own = Ca::root("example.org");
    let other = Ca::root("other.org");
    let bundles = set_of([own.bundle("example.org"), other.bundle("other.org")]);
    let intermediate = other.intermediate(ca_params("other.org"));
    let chain = [intermediate.leaf(ID), intermediate.der];
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::UntrustedChain {
            trust_domain: td("example.org")
        })
    );
}

#[test]
fn leaf_from_an_impostor_root_with_the_same_name_is_refused() {
    let params = ca_params("example.org");
    let root = Ca::self_signed(params.clone(), &rcgen::PKCS_ECDSA_P256_SHA256);
    let bundles = set_of([root.bundle("example.org")]);
    // Same subject as the trusted root, different key.
    let impostor = Ca::self_signed(params, &rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(
        verify(&[impostor.leaf(ID)], &bundles),
        Err(X509SvidError::BadSignature)
    );
}

#[test]
fn tampered_leaf_is_refused() {
    let (root, bundles) = example_org();
    let mut leaf = root.leaf(ID);
    // The last byte belongs to the ECDSA signature.
    let last = leaf.len() - 1;
    leaf[last] ^= 0x01;
    assert_eq!(verify(&[leaf], &bundles), Err(X509SvidError::BadSignature));
}

#[test]
fn leaf_signed_by_an_untrusted_intermediate_is_refused() {
    let (_, bundles) = example_org();
    // A self-signed "intermediate" for example.org that is not in the bundle.
    let rogue = Ca::root("example.org");
    let chain = [rogue.leaf(ID), rogue.der];
    assert_eq!(
        verify(&chain, &bundles),
        Err(X509SvidError::UntrustedChain {
            trust_domain: td("example.org")
        })
    );
}

#[test]
fn removing_a_root_from_the_bundle_revokes_its_leaves() {
    // BUN-8: an authority is revoked by publishing a bundle without it.
    let old = Ca::root("example.org");
    let new = Ca::root("example.org");
    let mut bundle = old.bundle("example.org");
    bundle.add_x509_authority(new.authority());
    let leaf = [old.leaf(ID)];
    assert!(verify(&leaf, &set_of([bundle.clone()])).is_ok());
    assert!(bundle.remove_x509_authority(&old.der));
    assert_eq!(
        verify(&leaf, &set_of([bundle])),
        Err(X509SvidError::UntrustedChain {
            trust_domain: td("example.org")
        })
    );
}
