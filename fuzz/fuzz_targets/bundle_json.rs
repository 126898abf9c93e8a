//! SPIFFE bundle JSON (crates/core/src/bundle.rs): `Bundle::parse_json`, `Bundle::parse_jwks` and
//! `BundleSet::parse_bundle_map`, each run on every input.
//!
//! Properties:
//! - no parser panics;
//! - a parsed bundle's `to_json` re-parses to an equal bundle and writes the same bytes again
//!   (writing is deterministic and reading what was written loses nothing);
//! - a parsed JWKS's `jwks_json` re-parses to an equal bundle;
//! - a bundle's X.509 authorities, written as concatenated DER (as the Workload API sends them),
//!   read back as the same authorities;
//! - a parsed bundle map's `to_bundle_map_json` re-parses to an equal map, refresh hints aside
//!   (the writer leaves them out of map entries, BUN-9).

#![no_main]

use lanyard_core::{Bundle, BundleSet, X509Authority};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let td = lanyard_fuzz::trust_domain();

    if let Ok(bundle) = Bundle::parse_json(td.clone(), data) {
        check_bundle(&bundle);
        let written = bundle.to_json();
        let back = Bundle::parse_json(td.clone(), written.as_bytes())
            .unwrap_or_else(|e| panic!("to_json wrote what parse_json refuses ({e}): {written}"));
        assert_eq!(back, bundle, "{written}");
        assert_eq!(back.to_json(), written);
    }

    if let Ok(bundle) = Bundle::parse_jwks(td.clone(), data) {
        check_bundle(&bundle);
        assert!(
            bundle.x509_authorities().is_empty(),
            "a JWKS holds JWT keys only"
        );
        let written = bundle.jwks_json();
        let back = Bundle::parse_jwks(td.clone(), written.as_bytes())
            .unwrap_or_else(|e| panic!("jwks_json wrote what parse_jwks refuses ({e}): {written}"));
        assert_eq!(back, bundle, "{written}");
    }

    if let Ok(set) = BundleSet::parse_bundle_map(data) {
        let written = set.to_bundle_map_json();
        let back = BundleSet::parse_bundle_map(written.as_bytes()).unwrap_or_else(|e| {
            panic!("to_bundle_map_json wrote what parse_bundle_map refuses ({e}): {written}")
        });
        let without_hints: BundleSet = set
            .iter()
            .map(|b| {
                check_bundle(b);
                let mut b = b.clone();
                b.set_refresh_hint(None);
                b
            })
            .collect();
        assert_eq!(back, without_hints, "{written}");
    }
});

fn check_bundle(bundle: &Bundle) {
    let der = bundle.x509_authorities_der();
    let authorities =
        X509Authority::parse_concatenated_der(&der).expect("the DER of parsed authorities parses");
    assert_eq!(authorities, bundle.x509_authorities());
    for a in bundle.jwt_authorities() {
        assert!(!a.key_id().is_empty());
        assert_eq!(bundle.jwt_authority(a.key_id()), Some(a), "one key per kid");
    }
    // Writing PEM must not fail or panic either.
    let _ = bundle.x509_authorities_pem();
}
