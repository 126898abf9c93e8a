//! What the agent keeps across restarts, in its data directory (0700):
//!
//! - `agent_svid.json` (0600): the agent SVID chain, its PKCS#8 key and the id of the join token
//!   it was obtained with (a SHA-256 prefix, not the token). Chain and key are one file so that no crash can leave a key that
//!   does not match its certificate.
//! - `bundle.json` (0600): the trust domain's bundle, SPIFFE JSON, as last received from the
//!   server. After the first attestation it, not the bootstrap bundle, authenticates the server.
//!
//! Every write goes to a temporary file that is synced and then renamed over the old one, and the
//! directory is synced, so a file is always either the old or the new version.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use lanyard_core::{Bundle, SpiffeId, TrustDomain};
use lanyard_workload::SvidKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use crate::AgentError;
use crate::keys;

const FILE_MODE: u32 = 0o600;
const SVID_FILE: &str = "agent_svid.json";
const BUNDLE_FILE: &str = "bundle.json";
const SVID_FORMAT_VERSION: u32 = 1;
/// Persisted files are small; anything larger is not ours.
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;

/// The agent's data directory.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    dir: PathBuf,
}

/// The agent's own X509-SVID with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentSvid {
    pub(crate) spiffe_id: SpiffeId,
    /// DER, leaf first.
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) key: SvidKey,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    /// The id (a SHA-256 prefix, not the secret) of the join token this SVID's attestation used
    /// (renewals keep it), so that a spent token is not offered again.
    pub(crate) join_token_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SvidFile {
    version: u32,
    spiffe_id: String,
    /// Base64 DER certificates, leaf first.
    cert_chain: Vec<String>,
    /// Base64 PKCS#8 DER.
    private_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    join_token_id: Option<String>,
}

// === impl Storage ===

impl Storage {
    /// Creates the directory (0700) if needed, and narrows its mode to 0700 if it is wider. One
    /// owned by another user, or that others can write into, is refused ([`lanyard_fs::private_dir`]).
    pub(crate) fn open(dir: &Path) -> Result<Self, AgentError> {
        lanyard_fs::private_dir(dir).map_err(|source| AgentError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub(crate) fn svid_path(&self) -> PathBuf {
        self.dir.join(SVID_FILE)
    }

    pub(crate) fn bundle_path(&self) -> PathBuf {
        self.dir.join(BUNDLE_FILE)
    }

    /// The persisted agent SVID, if any. A file that cannot be parsed, or whose key does not match
    /// its certificate, is an error: the operator must look at it.
    pub(crate) fn load_agent_svid(&self) -> Result<Option<AgentSvid>, AgentError> {
        let path = self.svid_path();
        let Some(mut bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        let parsed = serde_json::from_slice::<SvidFile>(&bytes);
        bytes.zeroize();
        let corrupt = |reason: String| AgentError::CorruptState {
            path: path.clone(),
            reason,
        };
        let mut file = parsed.map_err(|e| corrupt(format!("not agent SVID JSON: {e}")))?;
        if file.version != SVID_FORMAT_VERSION {
            return Err(corrupt(format!("unknown format version {}", file.version)));
        }
        let key = B64.decode(file.private_key.as_bytes());
        file.private_key.zeroize();
        let key = SvidKey::from_pkcs8_der(key.map_err(|_| corrupt("bad key encoding".into()))?);
        let chain = file
            .cert_chain
            .iter()
            .map(|c| B64.decode(c.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt("bad certificate encoding".into()))?;
        let svid = AgentSvid::new(chain, key, file.join_token_id.take())
            .map_err(|e| corrupt(e.to_string()))?;
        if svid.spiffe_id.as_str() != file.spiffe_id {
            return Err(corrupt(
                "the SPIFFE ID does not match the certificate".into(),
            ));
        }
        Ok(Some(svid))
    }

    pub(crate) fn store_agent_svid(&self, svid: &AgentSvid) -> Result<(), AgentError> {
        let mut file = SvidFile {
            version: SVID_FORMAT_VERSION,
            spiffe_id: svid.spiffe_id.to_string(),
            cert_chain: svid.chain.iter().map(|c| B64.encode(c)).collect(),
            private_key: B64.encode(svid.key.as_pkcs8_der()),
            join_token_id: svid.join_token_id.clone(),
        };
        let json = serde_json::to_vec_pretty(&file);
        file.private_key.zeroize();
        let mut json = json.map_err(|e| AgentError::Storage {
            path: self.svid_path(),
            source: io::Error::other(e),
        })?;
        let result = write_atomically(&self.svid_path(), &json);
        json.zeroize();
        result
    }

    /// The persisted bundle of `trust_domain`, if any.
    pub(crate) fn load_bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<Bundle>, AgentError> {
        let path = self.bundle_path();
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        Bundle::parse_json(trust_domain.clone(), &bytes)
            .map(Some)
            .map_err(|e| AgentError::CorruptState {
                path,
                reason: format!("not a SPIFFE bundle: {e}"),
            })
    }

    pub(crate) fn store_bundle(&self, bundle: &Bundle) -> Result<(), AgentError> {
        write_atomically(&self.bundle_path(), bundle.to_json().as_bytes())
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, AgentError> {
    let err = |source| AgentError::Storage {
        path: path.to_owned(),
        source,
    };
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let len = file.metadata().map_err(err)?.len();
    if len > MAX_FILE_LEN {
        return Err(AgentError::CorruptState {
            path: path.to_owned(),
            reason: format!("{len} bytes is too large"),
        });
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_FILE_LEN), &mut bytes).map_err(err)?;
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` (0600) so that `path` is always either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let err = |source| AgentError::Storage {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A temporary file left by a crash is ours to replace.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

// === impl AgentSvid ===

impl AgentSvid {
    /// Checks that `chain` starts with an X509-SVID leaf whose public key is `key`'s.
    pub(crate) fn new(
        chain: Vec<Vec<u8>>,
        key: SvidKey,
        join_token_id: Option<String>,
    ) -> Result<Self, AgentError> {
        let leaf = chain
            .first()
            .ok_or_else(|| AgentError::InvalidResponse("the agent SVID chain is empty".into()))?;
        let spiffe_id = lanyard_core::check_x509_svid_leaf(leaf)
            .map_err(|e| AgentError::InvalidResponse(format!("the agent SVID: {e}")))?;
        let (not_before, not_after) = validity(leaf).ok_or_else(|| {
            AgentError::InvalidResponse("the agent SVID has no readable validity".into())
        })?;
        if keys::spki_of_cert(leaf) != Some(keys::spki_of(&key)?) {
            return Err(AgentError::InvalidResponse(
                "the agent SVID is not for the agent's key".into(),
            ));
        }
        Ok(Self {
            spiffe_id,
            chain,
            key,
            not_before,
            not_after,
            join_token_id,
        })
    }
}

/// A certificate's `notBefore` and `notAfter`.
pub(crate) fn validity(cert_der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let to_time = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
    };
    Some((
        to_time(cert.validity().not_before)?,
        to_time(cert.validity().not_after)?,
    ))
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
