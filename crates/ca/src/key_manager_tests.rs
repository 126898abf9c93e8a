#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn id(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

#[test]
fn key_ids_are_file_name_safe() {
    for good in ["a", "x509-0123abcd", &"a".repeat(64)] {
        assert!(KeyId::new(good).is_ok(), "{good}");
    }
    for bad in ["", "A", "../x", "a/b", "a.pem", "a b", &"a".repeat(65)] {
        assert!(
            matches!(KeyId::new(bad), Err(CaError::InvalidKeyId(_))),
            "{bad}"
        );
    }
    let r = KeyId::random("jwt").unwrap();
    assert!(
        r.as_str().starts_with("jwt-") && r.as_str().len() == 36,
        "{r}"
    );
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), r);
    assert!(serde_json::from_str::<KeyId>("\"../etc\"").is_err());
}

#[test]
fn memory_manager_stores_and_deletes() {
    let km = MemoryKeyManager::new();
    let k = km.generate_key(&id("a"), KeyType::EcP384).unwrap();
    assert_eq!(k.key_type(), KeyType::EcP384);
    assert_eq!(
        km.get_key(&id("a")).unwrap().unwrap().public_key_der(),
        k.public_key_der()
    );
    assert!(km.get_key(&id("b")).unwrap().is_none());
    assert_eq!(km.key_ids().unwrap(), vec![id("a")]);
    km.delete_key(&id("a")).unwrap();
    km.delete_key(&id("a")).unwrap();
    assert!(km.get_key(&id("a")).unwrap().is_none());
}

#[test]
fn disk_manager_creates_private_dir_and_files_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys").join("ca");
    let km = DiskKeyManager::open(&dir).unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let k = km.generate_key(&id("x509-1"), KeyType::EcP256).unwrap();
    let file = dir.join("x509-1.pem");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pem = fs::read_to_string(&file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(pem.lines().all(|l| l.len() <= 64));
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

    // A new manager (a restart) reads the same key back.
    drop(km);
    let km = DiskKeyManager::open(&dir).unwrap();
    assert_eq!(km.key_ids().unwrap(), vec![id("x509-1")]);
    let again = km.get_key(&id("x509-1")).unwrap().unwrap();
    assert_eq!(again.public_key_der(), k.public_key_der());

    km.delete_key(&id("x509-1")).unwrap();
    assert!(!file.exists());
    assert!(km.get_key(&id("x509-1")).unwrap().is_none());
}

#[test]
fn disk_manager_replaces_a_key_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let km = DiskKeyManager::open(tmp.path().join("k")).unwrap();
    let first = km.generate_key(&id("a"), KeyType::EcP256).unwrap();
    // A stale temporary file from a crash does not block the next write.
    fs::write(tmp.path().join("k").join(".tmp-a.pem"), b"junk").unwrap();
    let second = km.generate_key(&id("a"), KeyType::EcP256).unwrap();
    assert_ne!(first.public_key_der(), second.public_key_der());
    let reopened = DiskKeyManager::open(tmp.path().join("k")).unwrap();
    assert_eq!(
        reopened
            .get_key(&id("a"))
            .unwrap()
            .unwrap()
            .public_key_der(),
        second.public_key_der()
    );
    assert_eq!(reopened.key_ids().unwrap(), vec![id("a")]);
}

#[test]
fn disk_manager_refuses_a_key_dir_owned_by_another_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    let err = DiskKeyManager::open(&dir).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
}

#[test]
fn disk_manager_refuses_loose_permissions_and_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("open");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        DiskKeyManager::open(&dir),
        Err(CaError::InsecurePermissions { mode: 0o755, .. })
    ));

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let km = DiskKeyManager::open(&dir).unwrap();
    km.generate_key(&id("a"), KeyType::EcP256).unwrap();
    fs::set_permissions(dir.join("a.pem"), fs::Permissions::from_mode(0o644)).unwrap();
    let fresh = DiskKeyManager::open(&dir).unwrap();
    assert!(matches!(
        fresh.get_key(&id("a")),
        Err(CaError::InsecurePermissions { .. })
    ));

    fs::write(dir.join("b.pem"), b"not a key").unwrap();
    fs::set_permissions(dir.join("b.pem"), fs::Permissions::from_mode(0o600)).unwrap();
    let err = fresh.get_key(&id("b")).unwrap_err();
    assert!(matches!(err, CaError::InvalidStoredKey { .. }), "{err}");
}
