//! Binding a Unix socket in a checked directory, with its final mode from the first instant.

use std::ffi::OsStr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;

use crate::Error;
use crate::dir::{Dir, checked_dir, euid};

/// Who may connect to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Only this user: the socket is 0600, its directory (if made here) 0700. The admin socket.
    Owner,
    /// Every local user: the socket is 0777, its directory (if made here) 0755. The Workload
    /// API, where attestation, not file modes, decides what a caller gets.
    Everyone,
}

/// Serializes umask changes: the umask is process-wide, and two binds interleaving their
/// set-and-restore would leave the wrong one behind.
static UMASK: Mutex<()> = Mutex::new(());

/// Binds a Unix socket at `path` for `access`, in a directory checked (and if missing, made) as
/// [`checked_dir`] does.
///
/// The socket is bound under a temporary umask, so it has its final mode from the moment it
/// exists, then checked with `lstat` through the directory's descriptor; nothing chmods it by
/// path. A stale socket (nobody answers) is replaced; a live one, a symbolic link or any other
/// file is refused and left alone. Returns a blocking listener.
///
/// The umask is process-wide: a file another thread creates during the `bind` call gets the
/// same umask (0177 for [`Access::Owner`], 0 for [`Access::Everyone`]). Bind at start-up.
pub fn bind(path: &Path, access: Access) -> Result<UnixListener, Error> {
    let Some(name) = path.file_name() else {
        return Err(Error::InvalidPath {
            path: path.to_owned(),
            reason: "a socket path must end in a file name",
        });
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = checked_dir(parent, access.dir_mode())?;
    remove_stale(&dir, name, path)?;

    let listener = {
        let _serialized = UMASK.lock().unwrap_or_else(PoisonError::into_inner);
        let old = rustix::process::umask(Mode::from_raw_mode(!access.mode() & 0o777));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old);
        bound
    }
    .map_err(|source| Error::Bind {
        path: path.to_owned(),
        source,
    })?;

    // The path is bound; make sure it is our socket, in the directory checked, as meant.
    let stat =
        rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Error::Io {
            op: "inspect the socket",
            path: path.to_owned(),
            source: e.into(),
        })?;
    let mode = stat.st_mode & 0o7777;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket
        || stat.st_uid != euid()
        || mode != access.mode()
    {
        drop(listener);
        let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
        return Err(Error::BoundWrong {
            path: path.to_owned(),
            mode,
            owner: stat.st_uid,
        });
    }
    Ok(listener)
}

/// Removes a socket nobody answers on; refuses a live one and anything that is not a socket.
fn remove_stale(dir: &Dir, name: &OsStr, path: &Path) -> Result<(), Error> {
    let io = |op, source: Errno| Error::Io {
        op,
        path: path.to_owned(),
        source: source.into(),
    };
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Socket => {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::SocketInUse {
                    path: path.to_owned(),
                });
            }
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| io("remove the stale socket", e))
        }
        Ok(_) => Err(Error::NotASocket {
            path: path.to_owned(),
        }),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io("inspect", e)),
    }
}

// === impl Access ===

impl Access {
    /// The socket's mode.
    fn mode(self) -> u32 {
        match self {
            Self::Owner => 0o600,
            Self::Everyone => 0o777,
        }
    }

    /// The mode of its directory, when made here.
    fn dir_mode(self) -> u32 {
        match self {
            Self::Owner => 0o700,
            Self::Everyone => 0o755,
        }
    }
}
