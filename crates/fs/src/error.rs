//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Why a directory or socket was refused or could not be made. Each message names the path, what
/// is wrong with it and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error(
        "refusing {path}: owned by uid {owner}, not by this process (uid {euid}) or root; \
         remove it or choose another path"
    )]
    NotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "refusing {path}: group or others can write into it (mode {mode:04o}); {}",
        writable_hint(*.mode)
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "refusing {path}: group or others can write into it (mode {mode:04o}) and it has no \
         sticky bit, so they could replace what lies below; choose another path"
    )]
    WritableAncestor { path: PathBuf, mode: u32 },
    #[error(
        "refusing {path}: a symbolic link owned by uid {owner}, not by this process \
         (uid {euid}) or root; remove it or choose another path"
    )]
    SymlinkNotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("refusing {path}: too many symbolic links")]
    TooManySymlinks { path: PathBuf },
    #[error("refusing {path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is in use by a running process; stop it or choose another path")]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the socket {path} came out with mode {mode:04o} and owner uid {owner}, not as bound; \
         it was removed"
    )]
    BoundWrong {
        path: PathBuf,
        mode: u32,
        owner: u32,
    },
}

/// What to do about a directory others can write into.
fn writable_hint(mode: u32) -> &'static str {
    if mode & 0o1000 != 0 {
        // A shared directory such as /tmp: the fix is a directory of our own inside it.
        "use a directory of its own inside it"
    } else {
        "remove it, `chmod go-w` it, or choose another path"
    }
}
