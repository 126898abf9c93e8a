#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use lanyard_ca::{Ca, CaConfig, MemoryKeyManager, X509SvidRequest};
use lanyard_core::SystemClock;

use super::*;

fn ca() -> Ca {
    Ca::new(
        CaConfig::new(TrustDomain::new("example.org").unwrap()),
        Arc::new(MemoryKeyManager::new()),
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn agent_svid(ca: &Ca) -> AgentSvid {
    let fresh = keys::generate().unwrap();
    let id = SpiffeId::parse("spiffe://example.org/lanyard/agent/join_token/abc").unwrap();
    let svid = ca
        .mint_x509_svid_from_csr(&fresh.csr, &X509SvidRequest::new(id))
        .unwrap();
    AgentSvid::new(svid.cert_chain, fresh.key, Some("00ff".into())).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn svid_and_bundle_round_trip_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let storage = Storage::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert!(storage.load_agent_svid().unwrap().is_none());
    let td = TrustDomain::new("example.org").unwrap();
    assert!(storage.load_bundle(&td).unwrap().is_none());

    let ca = ca();
    let svid = agent_svid(&ca);
    storage.store_agent_svid(&svid).unwrap();
    storage.store_bundle(&ca.bundle()).unwrap();
    assert_eq!(mode(&storage.svid_path()), 0o600);
    assert_eq!(mode(&storage.bundle_path()), 0o600);
    assert_eq!(storage.load_agent_svid().unwrap(), Some(svid));
    assert_eq!(
        storage
            .load_bundle(&td)
            .unwrap()
            .unwrap()
            .x509_authorities(),
        ca.bundle().x509_authorities()
    );

    // A second write replaces the first and leaves no temporary file behind.
    let newer = agent_svid(&ca);
    storage.store_agent_svid(&newer).unwrap();
    assert_eq!(storage.load_agent_svid().unwrap(), Some(newer));
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_wide_data_dir_is_narrowed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    Storage::open(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn corrupt_or_mismatched_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = Storage::open(tmp.path()).unwrap();
    fs::write(storage.svid_path(), b"{not json").unwrap();
    assert!(matches!(
        storage.load_agent_svid(),
        Err(AgentError::CorruptState { .. })
    ));

    // A key that is not the certificate's.
    let ca = ca();
    let svid = agent_svid(&ca);
    let other = keys::generate().unwrap();
    let file = SvidFile {
        version: SVID_FORMAT_VERSION,
        spiffe_id: svid.spiffe_id.to_string(),
        cert_chain: svid.chain.iter().map(|c| B64.encode(c)).collect(),
        private_key: B64.encode(other.key.as_pkcs8_der()),
        join_token_id: None,
    };
    fs::write(storage.svid_path(), serde_json::to_vec(&file).unwrap()).unwrap();
    assert!(matches!(
        storage.load_agent_svid(),
        Err(AgentError::CorruptState { .. })
    ));

    fs::write(storage.bundle_path(), b"[]").unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    assert!(matches!(
        storage.load_bundle(&td),
        Err(AgentError::CorruptState { .. })
    ));
}

#[test]
fn a_data_dir_others_can_write_is_refused() {
    // Anyone could have planted a bundle.json in it, which the agent would then trust.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Storage::open(&dir).unwrap_err();
    assert!(
        err.to_string().contains("group or others can write"),
        "{err}"
    );
    assert_eq!(mode(&dir), 0o777);
}

#[test]
fn a_data_dir_owned_by_another_user_is_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    let err = Storage::open(&dir).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    assert_eq!(mode(&dir), 0o755);
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Storage::open(&file),
        Err(AgentError::DataDir { .. })
    ));
}
