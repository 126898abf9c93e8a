//! Restarts: a CA rebuilt from its journal and key manager continues with a byte-identical bundle.

use std::sync::Arc;
use std::time::Duration;

use lanyard_ca::{
    AuthorityState, Ca, CaConfig, CaError, DiskKeyManager, Journal, JwtSvidRequest, KeyManager,
};
use lanyard_core::{TrustDomain, verify_jwt_svid, verify_x509_svid};

use crate::support::*;

const H: u64 = 3600;

fn disk(dir: &std::path::Path) -> Arc<dyn KeyManager> {
    Arc::new(DiskKeyManager::open(dir.join("keys")).unwrap())
}

#[test]
fn restart_from_disk_keeps_the_bundle_byte_identical_at_every_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut ca = Ca::new(CaConfig::new(td()), disk(tmp.path()), shared(&clock)).unwrap();
    let key = WorkloadKey::p256();

    // Restart with only an active authority, with a prepared one, and with an old one.
    for hours in [1, 13, 21, 25, 37, 45] {
        clock.set(t0() + Duration::from_secs(hours * H));
        let _ = ca.tick().unwrap();
        let svid = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap();
        let jwt = ca
            .mint_jwt_svid(&JwtSvidRequest::new(id("/w"), ["a"]))
            .unwrap();
        let bundle_json = ca.bundle().to_json();
        let journal_bytes = ca.journal().to_json();
        let authorities = ca.authorities();
        drop(ca);

        // The process is gone; only the key directory and the stored journal remain.
        let journal = Journal::from_json(&journal_bytes).unwrap();
        ca = Ca::load(
            CaConfig::new(td()),
            disk(tmp.path()),
            journal,
            shared(&clock),
        )
        .unwrap();
        assert_eq!(ca.bundle().to_json(), bundle_json, "after {hours} h");
        assert_eq!(ca.journal().to_json(), journal_bytes);
        assert_eq!(ca.authorities(), authorities);
        // Nothing to do at the same instant, and the old SVIDs still verify.
        assert_eq!(ca.tick().unwrap(), Default::default());
        let set = bundle_set(ca.bundle());
        verify_x509_svid(&svid.cert_chain, &set, clock.now_for_test()).unwrap();
        verify_jwt_svid(&jwt.token, "a", &set, clock.now_for_test()).unwrap();
        // The same authority signs after the restart.
        let again = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap();
        assert_eq!(again.authority_id, svid.authority_id);
        assert_eq!(again.cert_chain[1..], svid.cert_chain[1..]);
    }

    // Only keys that can still sign (prepared or active) are kept on disk, each 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let signing = ca
        .authorities()
        .into_iter()
        .filter(|a| a.state != AuthorityState::Old)
        .count();
    let files: Vec<_> = std::fs::read_dir(tmp.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(files.len(), signing);
    for f in files {
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}

/// `ManualClock` implements `Clock`; this reads it without importing the trait everywhere.
trait NowForTest {
    fn now_for_test(&self) -> std::time::SystemTime;
}

impl NowForTest for Arc<lanyard_core::ManualClock> {
    fn now_for_test(&self) -> std::time::SystemTime {
        lanyard_core::Clock::now(self.as_ref())
    }
}

#[test]
fn a_restarted_ca_rotates_like_one_that_never_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = clock();
    let ca = Ca::new(CaConfig::new(td()), disk(tmp.path()), shared(&clock)).unwrap();
    let journal = ca.journal();
    drop(ca);
    // Down for 30 hours: the first authority expired meanwhile.
    clock.set(t0() + Duration::from_secs(30 * H));
    let ca = Ca::load(
        CaConfig::new(td()),
        disk(tmp.path()),
        journal,
        shared(&clock),
    )
    .unwrap();
    let before = ca.journal_revision();
    let out = ca.tick().unwrap();
    assert!(out.journal_changed && out.bundle_changed);
    assert!(ca.journal_revision() > before);
    assert_eq!(ca.bundle().x509_authorities().len(), 1);
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &request("/w"))
        .unwrap();
    verify_x509_svid(
        &svid.cert_chain,
        &bundle_set(ca.bundle()),
        clock.now_for_test(),
    )
    .unwrap();
}

#[test]
fn a_journal_older_than_the_keys_retires_the_keyless_authority() {
    let clock = clock();
    let ca = new_ca(&clock);
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &request("/w"))
        .unwrap();
    let journal = ca.journal();
    let bundle = ca.bundle();
    // The keys are gone (an empty key manager).
    let ca = Ca::load(CaConfig::new(td()), memory_keys(), journal, shared(&clock)).unwrap();
    assert!(
        ca.authorities()
            .iter()
            .all(|a| a.state == AuthorityState::Old)
    );
    // Its SVIDs still verify until they expire; a tick makes new active authorities.
    let out = ca.tick().unwrap();
    assert!(out.bundle_changed);
    assert!(ca.bundle().sequence() > bundle.sequence());
    let set = bundle_set(ca.bundle());
    verify_x509_svid(&svid.cert_chain, &set, t0()).unwrap();
    assert_eq!(ca.bundle().x509_authorities().len(), 2);
    ca.mint_x509_svid(&WorkloadKey::p256().spki(), &request("/w"))
        .unwrap();
}

#[test]
fn foreign_or_damaged_journals_are_refused() {
    let clock = clock();
    let ca = new_ca(&clock);
    let journal = ca.journal();

    let other = CaConfig::new(TrustDomain::new("other.org").unwrap());
    let err = Ca::load(other, memory_keys(), journal.clone(), shared(&clock)).unwrap_err();
    assert!(matches!(err, CaError::Journal(_)), "{err}");

    let json = String::from_utf8(journal.to_json()).unwrap();
    let err =
        Journal::from_json(json.replace("\"version\":1", "\"version\":2").as_bytes()).unwrap_err();
    assert!(matches!(err, CaError::Journal(_)), "{err}");
    assert!(matches!(
        Journal::from_json(b"{\"not\":\"a journal\"}"),
        Err(CaError::Journal(_))
    ));
    assert!(matches!(
        Journal::from_json(&journal.to_json()[..20]),
        Err(CaError::Journal(_))
    ));

    // A certificate that was tampered with.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut value = value;
    value["x509_authorities"][0]["certificate"] = serde_json::json!("AAAA");
    let tampered = Journal::from_json(value.to_string().as_bytes()).unwrap();
    let err = Ca::load(CaConfig::new(td()), memory_keys(), tampered, shared(&clock)).unwrap_err();
    assert!(matches!(err, CaError::Journal(_)), "{err}");
}

#[test]
fn an_invalid_configuration_is_refused() {
    let clock = clock();
    let mut config = CaConfig::new(td());
    config.ca_ttl = Duration::from_secs(59);
    assert!(matches!(
        Ca::new(config, memory_keys(), shared(&clock)),
        Err(CaError::Config(_))
    ));
    let mut config = CaConfig::new(td());
    config.x509_svid_ttl = Duration::ZERO;
    assert!(matches!(
        Ca::new(config, memory_keys(), shared(&clock)),
        Err(CaError::Config(_))
    ));
}
