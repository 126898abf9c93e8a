//! Minted SVIDs accepted by clients nobody here wrote: the `spiffe` crate and the `openssl` CLI.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use base64::Engine as _;
use lanyard_core::DnsName;

use crate::support::*;

pub(crate) fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Runs `openssl verify -x509_strict -purpose <purpose> -attime <at>` on `chain[0]`, with
/// `chain[1..]` as untrusted intermediates and `roots` as the trust anchors. Returns
/// (success, combined output).
pub(crate) fn openssl_verify(
    dir: &Path,
    roots: &[Vec<u8>],
    chain: &[Vec<u8>],
    purpose: &str,
    at: SystemTime,
) -> (bool, String) {
    let roots_pem: String = roots.iter().map(|r| pem(r)).collect();
    std::fs::write(dir.join("roots.pem"), roots_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), pem(&chain[0])).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-x509_strict")
        .args(["-purpose", purpose])
        .args(["-attime", &unix(at).to_string()])
        .arg("-CAfile")
        .arg(dir.join("roots.pem"));
    if chain.len() > 1 {
        let untrusted: String = chain[1..].iter().map(|c| pem(c)).collect();
        std::fs::write(dir.join("chain.pem"), untrusted).unwrap();
        cmd.arg("-untrusted").arg(dir.join("chain.pem"));
    }
    cmd.arg(dir.join("leaf.pem"));
    let out = cmd.output().expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub(crate) fn openssl_text(dir: &Path, der: &[u8]) -> String {
    std::fs::write(dir.join("cert.pem"), pem(der)).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Removes all whitespace, so openssl's layout does not matter to the assertions.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn spiffe_crate_parses_minted_svids_with_their_key() {
    let clock = clock();
    let ca = new_ca(&clock);
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        let key = WorkloadKey::new(alg);
        for svid in [
            ca.mint_x509_svid(&key.spki(), &request("/api")).unwrap(),
            ca.mint_x509_svid_from_csr(&key.csr(), &request("/api"))
                .unwrap(),
        ] {
            let parsed =
                spiffe::X509Svid::parse_from_der(&svid.chain_der_concatenated(), &key.pkcs8())
                    .unwrap();
            assert_eq!(parsed.spiffe_id().to_string(), "spiffe://example.org/api");
            assert_eq!(parsed.cert_chain().len(), svid.cert_chain.len());
        }
    }
    // The bundle parses as the Workload API would send it (concatenated DER).
    let bundle = ca.bundle();
    let x509 = spiffe::X509Bundle::parse_from_der(
        spiffe::TrustDomain::new(TD).unwrap(),
        &bundle.x509_authorities_der(),
    )
    .unwrap();
    assert_eq!(x509.authorities().len(), 1);
}

#[test]
fn spiffe_crate_refuses_a_ca_certificate_as_leaf() {
    // A negative control: the spiffe crate does check the profile, so its acceptance above means
    // something. (It does not check that the key matches the leaf; profile.rs checks that.)
    let clock = clock();
    let ca = new_ca(&clock);
    let root = ca.bundle().x509_authorities()[0].der().to_vec();
    assert!(spiffe::X509Svid::parse_from_der(&root, &WorkloadKey::p256().pkcs8()).is_err());
}

#[test]
fn openssl_verifies_the_chain_for_client_and_server_use() {
    let clock = clock();
    let ca = new_ca(&clock);
    let dir = tempfile::tempdir().unwrap();
    let req = request("/web").with_dns_names(vec![DnsName::new("web.example.org").unwrap()]);
    let key = WorkloadKey::p256();
    let svid = ca.mint_x509_svid_from_csr(&key.csr(), &req).unwrap();
    let roots: Vec<Vec<u8>> = ca
        .bundle()
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect();
    let at = t0() + std::time::Duration::from_secs(60);
    for purpose in ["sslclient", "sslserver"] {
        let (ok, out) = openssl_verify(dir.path(), &roots, &svid.cert_chain, purpose, at);
        assert!(ok, "{purpose}: {out}");
        assert!(out.contains(": OK"), "{out}");
    }

    // Negative controls: another CA's root, and a time after the leaf expired.
    let other = new_ca(&clock);
    let other_roots: Vec<Vec<u8>> = other
        .bundle()
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect();
    let (ok, out) = openssl_verify(dir.path(), &other_roots, &svid.cert_chain, "sslclient", at);
    assert!(!ok, "{out}");
    let late = t0() + std::time::Duration::from_secs(3600 + 60);
    let (ok, out) = openssl_verify(dir.path(), &roots, &svid.cert_chain, "sslclient", late);
    assert!(!ok && out.contains("expired"), "{out}");
}

#[test]
fn openssl_shows_the_expected_extensions() {
    let clock = clock();
    let ca = new_ca(&clock);
    let dir = tempfile::tempdir().unwrap();
    let req = request("/web").with_dns_names(vec![DnsName::new("web.example.org").unwrap()]);
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &req)
        .unwrap();

    let leaf = squash(&openssl_text(dir.path(), svid.leaf_der()));
    for expected in [
        "Version: 3 (0x2)",
        "Signature Algorithm: ecdsa-with-SHA256",
        "Subject: C = US, O = SPIFFE, CN = web.example.org",
        "X509v3 Basic Constraints: critical CA:FALSE",
        "X509v3 Key Usage: critical Digital Signature, Key Encipherment, Key Agreement",
        "X509v3 Extended Key Usage: TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Subject Key Identifier:",
        "X509v3 Authority Key Identifier:",
        "X509v3 Subject Alternative Name: URI:spiffe://example.org/web, DNS:web.example.org",
        "Not Before: Dec 31 23:59:50 2025 GMT",
        "Not After : Jan 1 01:00:00 2026 GMT",
    ] {
        assert!(leaf.contains(expected), "missing {expected:?} in\n{leaf}");
    }

    let root_der = ca.bundle().x509_authorities()[0].der().to_vec();
    let root = squash(&openssl_text(dir.path(), &root_der));
    for expected in [
        "X509v3 Basic Constraints: critical CA:TRUE",
        "X509v3 Key Usage: critical Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier:",
        "X509v3 Subject Alternative Name: URI:spiffe://example.org",
        "Subject: C = US, O = SPIFFE, serialNumber = ",
        "Not After : Jan 2 00:00:00 2026 GMT",
    ] {
        assert!(root.contains(expected), "missing {expected:?} in\n{root}");
    }
    assert!(!root.contains("Digital Signature"), "{root}");
}
