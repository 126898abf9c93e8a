//! CA rotation seen from a workload: with a 60-second CA (rotating every 50 s) and 10-second
//! SVIDs, every SVID the agent serves, sampled every second for more than two CA rotations, is
//! valid and verifies against the server's current bundle and against the bundle served with it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use lanyard_core::{Bundle, BundleSet, TrustDomain};
use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::{Server, wait_for};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/rotating";

fn ders(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap().as_ref().to_vec())
        .collect()
}

fn bundle_set(bundle: Bundle) -> BundleSet {
    [bundle].into_iter().collect()
}

#[test]
fn svids_stay_valid_across_ca_rotations() {
    let server = Server::start_with(&["--ca-ttl", "60s"]);
    let uid = rustix::process::getuid().as_raw();
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            AGENT_ID,
            "--spiffe-id",
            "spiffe://example.org/rotating",
            "--selector",
            &format!("unix:uid:{uid}"),
            "--x509-ttl",
            "10s",
        ])
        .ok();
    let agent = Agent::start(&server, AGENT_ID);
    let td = TrustDomain::new("example.org").unwrap();
    wait_for("the first SVID", Duration::from_secs(30), || {
        agent.cli(&["x509", "fetch"]).success.then_some(())
    });

    let started = Instant::now();
    let mut roots_seen = BTreeSet::new();
    let mut leaves_seen = BTreeSet::new();
    let mut samples = 0;
    // 130 s: the first CA activates its successor at 50 s and the second at 100 s.
    while started.elapsed() < Duration::from_secs(130) {
        let out = agent.cli(&["x509", "fetch", "--output", "json"]);
        assert!(
            out.success,
            "at {:?}: {}\nagent log:\n{}",
            started.elapsed(),
            out.stderr,
            agent.log()
        );
        let doc = out.json();
        let svid = &doc["svids"][0];
        let chain = ders(svid["svid_pem"].as_str().unwrap());
        let served_bundle = ders(svid["bundle_pem"].as_str().unwrap());
        let now = SystemTime::now();

        let mut with_served = Bundle::new(td.clone());
        for der in &served_bundle {
            with_served
                .add_x509_authority(lanyard_core::X509Authority::from_der(der.clone()).unwrap());
        }
        lanyard_core::x509::verify_x509_svid(&chain, &bundle_set(with_served), now).unwrap_or_else(
            |e| panic!("at {:?}, against the served bundle: {e}", started.elapsed()),
        );
        let current_json = server
            .cli(&["bundle", "show", "--format", "spiffe"])
            .ok()
            .to_owned();
        let current = Bundle::parse_json(td.clone(), current_json.as_bytes()).unwrap();
        lanyard_core::x509::verify_x509_svid(
            &chain,
            &bundle_set(current.clone()),
            SystemTime::now(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "at {:?}, against the server's bundle: {e}",
                started.elapsed()
            )
        });

        roots_seen.extend(current.x509_authorities().iter().map(|a| a.der().to_vec()));
        leaves_seen.insert(chain[0].clone());
        samples += 1;
        let next = started + Duration::from_secs(samples);
        wait_for("the next sample time", Duration::from_secs(5), || {
            (Instant::now() >= next).then_some(())
        });
    }
    assert!(
        roots_seen.len() >= 3,
        "two CA rotations publish three roots; saw {}",
        roots_seen.len()
    );
    assert!(
        leaves_seen.len() >= 20,
        "10 s SVIDs renew every ~5 s; saw {} over {samples} samples",
        leaves_seen.len()
    );
}
