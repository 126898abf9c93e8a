//! Binding a Unix socket in a checked directory, with its final mode from the first instant.

use std::ffi::OsStr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
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

/// Binds a Unix socket at `path` for `access`, in a directory checked (and if missing, made) as
/// [`checked_dir`] does.
///
/// The socket is bound inside a fresh 0700 staging directory next to `path`, where no other user
/// can reach it, given its final mode there, and renamed into place without replacing anything:
/// it never exists at `path` with another mode, and nothing is chmodded through a path someone
/// else could change. (An earlier version set the process-wide umask around `bind`, which also
/// changed the modes of files other threads created at that instant.) It is then checked with
/// `lstat` through the directory's descriptor. A stale socket (nobody answers) is replaced; a
/// live one, a symbolic link or any other file is refused and left alone. Returns a blocking
/// listener.
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
    let listener = bind_staged(&dir, parent, name, access, path)?;

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

/// Binds in a private staging directory under `dir`, sets the mode there, and moves the socket to
/// `name` in `dir` (refusing to replace anything that appeared there meanwhile).
fn bind_staged(
    dir: &Dir,
    parent: &Path,
    name: &OsStr,
    access: Access,
    path: &Path,
) -> Result<UnixListener, Error> {
    let io = |op, source: Errno| Error::Io {
        op,
        path: path.to_owned(),
        source: source.into(),
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let staging = format!(
        ".bind-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    // 0700 less whatever the umask removes: never more open than that.
    rustix::fs::mkdirat(dir, staging.as_str(), Mode::from_raw_mode(0o700))
        .map_err(|e| io("make a staging directory for the socket", e))?;
    let result = (|| {
        let listener =
            UnixListener::bind(parent.join(&staging).join(name)).map_err(|source| Error::Bind {
                path: path.to_owned(),
                source,
            })?;
        let staged = rustix::fs::openat(
            dir,
            staging.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open the staging directory", e))?;
        rustix::fs::chmodat(
            &staged,
            name,
            Mode::from_raw_mode(access.mode()),
            AtFlags::empty(),
        )
        .map_err(|e| io("set the socket's mode", e))?;
        match rustix::fs::renameat_with(&staged, name, dir, name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(listener),
            Err(Errno::EXIST) => Err(Error::SocketInUse {
                path: path.to_owned(),
            }),
            Err(e) => Err(io("move the socket into place", e)),
        }
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, parent_join(&staging, name), AtFlags::empty());
    }
    let _ = rustix::fs::unlinkat(dir, staging.as_str(), AtFlags::REMOVEDIR);
    result
}

/// `staging/name`, relative to the checked directory.
fn parent_join(staging: &str, name: &OsStr) -> std::path::PathBuf {
    Path::new(staging).join(name)
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
