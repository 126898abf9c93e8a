//! X509-SVID minting from attacker-supplied key material (crates/ca/src/leaf_key.rs, reached
//! through `Ca::mint_x509_svid_from_csr` and `Ca::mint_x509_svid`): agents send a PKCS#10 CSR in
//! `AttestAgent`, `RenewAgent` and `BatchNewX509Svid`. Every input is tried as a DER CSR and as a
//! DER SubjectPublicKeyInfo.
//!
//! Properties:
//! - neither path panics;
//! - a minted SVID names the requested SPIFFE ID (never anything from the CSR), verifies against
//!   the CA's bundle at the fixed time, and certifies exactly the input's public key bits;
//! - a CSR that mints has a public key that also mints through the bare-key path.

#![no_main]

use std::sync::OnceLock;

use lanyard_ca::{X509Svid, X509SvidRequest};
use lanyard_core::{SpiffeId, verify_x509_svid};
use libfuzzer_sys::fuzz_target;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

fuzz_target!(|data: &[u8]| {
    let ca = lanyard_fuzz::ca();
    let request = request();

    if let Ok(svid) = ca.mint_x509_svid_from_csr(data, request) {
        let (rest, csr) =
            X509CertificationRequest::from_der(data).expect("a CSR the CA accepted parses");
        assert!(rest.is_empty());
        let spki = &csr.certification_request_info.subject_pki;
        check_svid(&svid, spki);
        let by_key = ca
            .mint_x509_svid(spki.raw, request)
            .unwrap_or_else(|e| panic!("the key of an accepted CSR is refused alone: {e}"));
        check_svid(&by_key, spki);
    }

    if let Ok(svid) = ca.mint_x509_svid(data, request) {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(data).expect("a key the CA accepted parses");
        assert!(rest.is_empty());
        check_svid(&svid, &spki);
    }
});

fn request() -> &'static X509SvidRequest {
    static REQUEST: OnceLock<X509SvidRequest> = OnceLock::new();
    REQUEST.get_or_init(|| {
        X509SvidRequest::new(SpiffeId::parse("spiffe://example.org/workload").expect("a valid ID"))
    })
}

fn check_svid(svid: &X509Svid, key: &SubjectPublicKeyInfo<'_>) {
    assert_eq!(svid.spiffe_id, request().spiffe_id);
    let verified = verify_x509_svid(
        &svid.cert_chain,
        lanyard_fuzz::ca_bundles(),
        lanyard_fuzz::now(),
    )
    .unwrap_or_else(|e| panic!("a minted SVID does not verify: {e}"));
    assert_eq!(verified.spiffe_id(), &request().spiffe_id);
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf_der()).expect("a leaf");
    let certified = leaf.public_key();
    assert_eq!(
        certified.subject_public_key.data, key.subject_public_key.data,
        "the leaf certifies another key"
    );
    assert_eq!(certified.algorithm.algorithm, key.algorithm.algorithm);
}
