//! The `unix` workload attestor, with SPIRE's selector names:
//!
//! | selector | from |
//! |---|---|
//! | `unix:uid:<n>`, `unix:gid:<n>` | effective ids, `/proc/<pid>/status` |
//! | `unix:user:<name>`, `unix:group:<name>` | the ids looked up in `/etc/passwd`, `/etc/group` |
//! | `unix:supplementary_gid:<n>`, `unix:supplementary_group:<name>` | `Groups:` in `status` |
//! | `unix:path:<path>` | `readlink /proc/<pid>/exe` (when [`UnixConfig::exe_path`]) |
//! | `unix:sha256:<hex>` | SHA-256 of the executable (when [`UnixConfig::exe_sha256`]) |
//!
//! The hash is of the file the process is executing, opened through `/proc/<pid>/exe`, not of
//! whatever is at its path now; it is cached by (device, inode, size, mtime, ctime), so a binary
//! is hashed once until it changes.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aws_lc_rs::digest;
use lanyard_core::SelectorSet;

use super::names::NameDb;
use super::procfs::{MAX_STATUS_LEN, parse_status};
use super::{AttestError, PinnedProcess, WorkloadAttestor, push_selector};

/// The selector type this attestor produces.
pub const UNIX_SELECTOR_TYPE: &str = "unix";

/// How the `unix` attestor is set up. `Default` is SPIRE's default: ids and names only.
#[derive(Debug, Clone)]
pub struct UnixConfig {
    /// Add `unix:path`. Reading another user's `/proc/<pid>/exe` needs the agent to be root (or
    /// that user); when it cannot, attestation fails rather than silently losing the selector.
    pub exe_path: bool,
    /// Add `unix:sha256`. The agent turns this on only while some entry uses the selector
    /// ([`UnixAttestor::set_exe_sha256`]), since it costs a read of the whole binary (once per
    /// binary, then cached).
    pub exe_sha256: bool,
    /// Executables larger than this are not hashed: attestation fails with
    /// [`AttestError::ExecutableTooLarge`] while `exe_sha256` is on.
    pub max_hash_size: u64,
    /// Most executables whose hashes are remembered.
    pub hash_cache_entries: usize,
    /// Where user names come from.
    pub passwd_file: PathBuf,
    /// Where group names come from.
    pub group_file: PathBuf,
}

impl Default for UnixConfig {
    fn default() -> Self {
        Self {
            exe_path: false,
            exe_sha256: false,
            max_hash_size: 512 * 1024 * 1024,
            hash_cache_entries: 4096,
            passwd_file: PathBuf::from("/etc/passwd"),
            group_file: PathBuf::from("/etc/group"),
        }
    }
}

/// The `unix` attestor. Shared by all connections; all methods take `&self`.
#[derive(Debug)]
pub struct UnixAttestor {
    /// Flipped by the agent as entries using `unix:path` come and go.
    exe_path: AtomicBool,
    /// Flipped by the agent as entries using `unix:sha256` come and go.
    exe_sha256: AtomicBool,
    max_hash_size: u64,
    users: NameDb,
    groups: NameDb,
    hashes: HashCache,
}

/// How often executables were hashed and how often the cache answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Executables read and hashed.
    pub computed: u64,
    /// Hashes answered from the cache.
    pub cache_hits: u64,
}

#[derive(Debug)]
struct HashCache {
    capacity: usize,
    entries: Mutex<HashMap<FileKey, [u8; 32]>>,
    computed: AtomicU64,
    hits: AtomicU64,
}

/// What identifies one version of one file. ctime is here because a file's owner can set mtime
/// back (`touch -d`), but not ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

// === impl UnixAttestor ===

impl UnixAttestor {
    pub fn new(config: UnixConfig) -> Self {
        Self {
            exe_path: AtomicBool::new(config.exe_path),
            exe_sha256: AtomicBool::new(config.exe_sha256),
            max_hash_size: config.max_hash_size,
            users: NameDb::passwd(config.passwd_file),
            groups: NameDb::group(config.group_file),
            hashes: HashCache {
                capacity: config.hash_cache_entries.max(1),
                entries: Mutex::new(HashMap::new()),
                computed: AtomicU64::new(0),
                hits: AtomicU64::new(0),
            },
        }
    }

    /// Turns `unix:path` on or off for later attestations.
    pub fn set_exe_path(&self, on: bool) {
        self.exe_path.store(on, Ordering::Relaxed);
    }

    /// Turns `unix:sha256` on or off for later attestations.
    pub fn set_exe_sha256(&self, on: bool) {
        self.exe_sha256.store(on, Ordering::Relaxed);
    }

    pub fn hash_stats(&self) -> HashStats {
        HashStats {
            computed: self.hashes.computed.load(Ordering::Relaxed),
            cache_hits: self.hashes.hits.load(Ordering::Relaxed),
        }
    }
}

impl Default for UnixAttestor {
    fn default() -> Self {
        Self::new(UnixConfig::default())
    }
}

impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        UNIX_SELECTOR_TYPE
    }

    fn attest(&self, process: &PinnedProcess) -> Result<SelectorSet, AttestError> {
        let pid = process.pid();
        let status =
            parse_status(&process.read_file("status", MAX_STATUS_LEN)?).map_err(|source| {
                AttestError::ProcMalformed {
                    pid,
                    file: "status",
                    source,
                }
            })?;
        let users = self.users.snapshot();
        let groups = self.groups.snapshot();

        let mut set = SelectorSet::new();
        let uid = status.effective_uid();
        push_selector(&mut set, UNIX_SELECTOR_TYPE, &format!("uid:{uid}"));
        if let Some(name) = users.get(&uid) {
            push_selector(&mut set, UNIX_SELECTOR_TYPE, &format!("user:{name}"));
        }
        let gid = status.effective_gid();
        push_selector(&mut set, UNIX_SELECTOR_TYPE, &format!("gid:{gid}"));
        if let Some(name) = groups.get(&gid) {
            push_selector(&mut set, UNIX_SELECTOR_TYPE, &format!("group:{name}"));
        }
        for gid in &status.groups {
            push_selector(
                &mut set,
                UNIX_SELECTOR_TYPE,
                &format!("supplementary_gid:{gid}"),
            );
            if let Some(name) = groups.get(gid) {
                push_selector(
                    &mut set,
                    UNIX_SELECTOR_TYPE,
                    &format!("supplementary_group:{name}"),
                );
            }
        }

        if self.exe_path.load(Ordering::Relaxed) {
            let path = process.read_link("exe")?;
            // A path that is not UTF-8 cannot be written in an entry, so no entry can want it.
            if let Ok(path) = std::str::from_utf8(&path) {
                push_selector(&mut set, UNIX_SELECTOR_TYPE, &format!("path:{path}"));
            }
        }
        if self.exe_sha256.load(Ordering::Relaxed) {
            let digest = self
                .hashes
                .hash(pid, process.open_exe()?, self.max_hash_size)?;
            push_selector(
                &mut set,
                UNIX_SELECTOR_TYPE,
                &format!("sha256:{}", crate::hex(&digest)),
            );
        }
        Ok(set)
    }
}

// === impl HashCache ===

impl HashCache {
    fn hash(&self, pid: u32, file: File, limit: u64) -> Result<[u8; 32], AttestError> {
        let key = file_key(&file).map_err(|source| AttestError::ExecutableRead { pid, source })?;
        if let Some(digest) = self.lock().get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(*digest);
        }
        if key.size > limit {
            return Err(AttestError::ExecutableTooLarge {
                pid,
                size: key.size,
                limit,
            });
        }
        // Hash without holding the lock: two callers missing on the same binary at once both
        // hash it, which is cheaper than making every other caller wait.
        let mut context = digest::Context::new(&digest::SHA256);
        let mut reader = (&file).take(limit.saturating_add(1));
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|source| AttestError::ExecutableRead { pid, source })?;
            if n == 0 {
                break;
            }
            total = total.saturating_add(n as u64);
            context.update(buf.get(..n).unwrap_or_default());
        }
        if total > limit {
            return Err(AttestError::ExecutableTooLarge {
                pid,
                size: total,
                limit,
            });
        }
        // A file written while it was read gives a hash of neither version: refuse it, and do
        // not remember it.
        let after =
            file_key(&file).map_err(|source| AttestError::ExecutableRead { pid, source })?;
        if after != key || total != key.size {
            return Err(AttestError::ExecutableChanged { pid });
        }
        let mut digest = [0u8; 32];
        // SHA-256 output is always 32 bytes, so this cannot panic.
        digest.copy_from_slice(context.finish().as_ref());
        self.computed.fetch_add(1, Ordering::Relaxed);

        let mut entries = self.lock();
        if entries.len() >= self.capacity
            && let Some(evict) = entries.keys().next().copied()
        {
            // Any entry will do: a binary evicted by mistake is only hashed again.
            entries.remove(&evict);
        }
        entries.insert(key, digest);
        Ok(digest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, [u8; 32]>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn file_key(file: &File) -> std::io::Result<FileKey> {
    let meta = file.metadata()?;
    Ok(FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}
