//! Where the CA's private keys live: in memory (tests, `lanyard dev`) or on disk.
//!
//! The CA names keys itself ([`KeyId`]) and records the names in its journal, so a key manager is
//! a plain map from name to key. The disk manager keeps one PKCS#8 PEM file per key, mode 0600, in
//! a 0700 directory, written atomically (temporary file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old key or the new one, never half of one.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::CaError;
use crate::key::{KeyType, Pkcs8Der, PrivateKey};

/// A key's name in a key manager: 1 to 64 characters from `[a-z0-9-]` (safe as a file name).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

/// Stores the CA's private keys by name.
pub trait KeyManager: Send + Sync + fmt::Debug {
    /// Generates a key of `key_type`, stores it under `id` (replacing any key there) and returns it.
    fn generate_key(&self, id: &KeyId, key_type: KeyType) -> Result<Arc<PrivateKey>, CaError>;
    /// Returns the key stored under `id`, if any.
    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<PrivateKey>>, CaError>;
    /// Deletes the key stored under `id`; deleting a missing key succeeds.
    fn delete_key(&self, id: &KeyId) -> Result<(), CaError>;
    /// The names of all stored keys, sorted.
    fn key_ids(&self) -> Result<Vec<KeyId>, CaError>;
}

/// Keys in memory only; gone when the process ends.
#[derive(Debug, Default)]
pub struct MemoryKeyManager {
    keys: Mutex<HashMap<KeyId, Arc<PrivateKey>>>,
}

/// Keys as PKCS#8 PEM files (`<id>.pem`, mode 0600) in one directory (mode 0700).
#[derive(Debug)]
pub struct DiskKeyManager {
    dir: PathBuf,
    /// Keys already read or written, so a file is parsed once per process.
    cache: Mutex<HashMap<KeyId, Arc<PrivateKey>>>,
}

const KEY_FILE_SUFFIX: &str = ".pem";
const TMP_PREFIX: &str = ".tmp-";

// === impl KeyId ===

impl KeyId {
    pub fn new(id: &str) -> Result<Self, CaError> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(CaError::InvalidKeyId(id.to_owned()))
        }
    }

    /// A fresh random id such as `x509-3f9c…` (16 random bytes, hex).
    pub(crate) fn random(prefix: &str) -> Result<Self, CaError> {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CaError::KeyGeneration)?;
        let mut id = String::with_capacity(prefix.len() + 33);
        id.push_str(prefix);
        id.push('-');
        for b in bytes {
            id.push_str(&format!("{b:02x}"));
        }
        Self::new(&id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl TryFrom<String> for KeyId {
    type Error = CaError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

// === impl MemoryKeyManager ===

impl MemoryKeyManager {
    pub fn new() -> Self {
        Self::default()
    }
}

impl KeyManager for MemoryKeyManager {
    fn generate_key(&self, id: &KeyId, key_type: KeyType) -> Result<Arc<PrivateKey>, CaError> {
        let (key, _pkcs8) = PrivateKey::generate(key_type)?;
        let key = Arc::new(key);
        lock(&self.keys).insert(id.clone(), Arc::clone(&key));
        Ok(key)
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<PrivateKey>>, CaError> {
        Ok(lock(&self.keys).get(id).cloned())
    }

    fn delete_key(&self, id: &KeyId) -> Result<(), CaError> {
        lock(&self.keys).remove(id);
        Ok(())
    }

    fn key_ids(&self) -> Result<Vec<KeyId>, CaError> {
        let mut ids: Vec<_> = lock(&self.keys).keys().cloned().collect();
        ids.sort();
        Ok(ids)
    }
}

// === impl DiskKeyManager ===

impl DiskKeyManager {
    /// Opens `dir`, creating it with mode 0700 if missing. An existing directory must pass
    /// [`lanyard_fs::checked_dir`] (owned by this user or root, nobody else can write on the way);
    /// one that group or others can even read is refused rather than silently narrowed, since a
    /// key in it may already have been read.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CaError> {
        let dir = dir.into();
        let checked = lanyard_fs::checked_dir(&dir, 0o700).map_err(|source| CaError::KeyDir {
            path: dir.clone(),
            source,
        })?;
        check_private(&dir, checked.mode())?;
        Ok(Self {
            dir,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &KeyId) -> PathBuf {
        self.dir.join(format!("{}{KEY_FILE_SUFFIX}", id.as_str()))
    }

    fn write_atomically(&self, id: &KeyId, pem: &[u8]) -> Result<(), CaError> {
        let final_path = self.path_of(id);
        let tmp_path = self
            .dir
            .join(format!("{TMP_PREFIX}{}{KEY_FILE_SUFFIX}", id.as_str()));
        // A temporary file left by a crash may have any mode; start from nothing.
        match fs::remove_file(&tmp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CaError::io(&tmp_path, e)),
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| CaError::io(&tmp_path, e))?;
        file.write_all(pem).map_err(|e| CaError::io(&tmp_path, e))?;
        file.sync_all().map_err(|e| CaError::io(&tmp_path, e))?;
        drop(file);
        fs::rename(&tmp_path, &final_path).map_err(|e| CaError::io(&final_path, e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), CaError> {
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| CaError::io(&self.dir, e))
    }

    fn read_key(&self, id: &KeyId) -> Result<Option<PrivateKey>, CaError> {
        let path = self.path_of(id);
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CaError::io(&path, e)),
        };
        check_private(&path, meta.permissions().mode())?;
        let pem = Zeroizing::new(fs::read(&path).map_err(|e| CaError::io(&path, e))?);
        let invalid = || CaError::InvalidStoredKey {
            key_id: id.as_str().to_owned(),
        };
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| invalid())?;
        let pkcs8 = Pkcs8Der::new(der.secret_pkcs8_der().to_vec());
        PrivateKey::from_pkcs8(&pkcs8).map(Some).ok_or_else(invalid)
    }
}

impl KeyManager for DiskKeyManager {
    fn generate_key(&self, id: &KeyId, key_type: KeyType) -> Result<Arc<PrivateKey>, CaError> {
        let (key, pkcs8) = PrivateKey::generate(key_type)?;
        let pem = pkcs8_pem(&pkcs8);
        self.write_atomically(id, pem.as_bytes())?;
        let key = Arc::new(key);
        lock(&self.cache).insert(id.clone(), Arc::clone(&key));
        Ok(key)
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<PrivateKey>>, CaError> {
        if let Some(key) = lock(&self.cache).get(id) {
            return Ok(Some(Arc::clone(key)));
        }
        let Some(key) = self.read_key(id)? else {
            return Ok(None);
        };
        let key = Arc::new(key);
        lock(&self.cache).insert(id.clone(), Arc::clone(&key));
        Ok(Some(key))
    }

    fn delete_key(&self, id: &KeyId) -> Result<(), CaError> {
        lock(&self.cache).remove(id);
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CaError::io(&path, e)),
        }
    }

    fn key_ids(&self) -> Result<Vec<KeyId>, CaError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| CaError::io(&self.dir, e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CaError::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(KEY_FILE_SUFFIX)) else {
                continue;
            };
            // Temporary files and foreign files are not keys.
            if let Ok(id) = KeyId::new(stem) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// PEM of a PKCS#8 key (`PRIVATE KEY`, 64-character lines), in a buffer zeroized on drop.
fn pkcs8_pem(pkcs8: &Pkcs8Der) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pkcs8.as_bytes()));
    let mut pem = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn check_private(path: &Path, mode: u32) -> Result<(), CaError> {
    if mode & 0o077 != 0 {
        return Err(CaError::InsecurePermissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a HashMap of keys half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "key_manager_tests.rs"]
mod tests;
