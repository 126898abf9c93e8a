//! Walking a path one directory at a time, from `/`, holding each directory open: the checks are
//! made with `fstat` on the descriptor, missing directories are made with `mkdirat` in the
//! directory just checked, and modes are set with `fchmod`, so no check and no change can be
//! redirected by a symbolic link swapped in between.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::Error;

/// Mode of a data directory.
const PRIVATE: u32 = 0o700;
/// Mode of a directory made on the way to the one asked for: traversable, writable only by us.
const INTERMEDIATE: u32 = 0o755;
/// Bits that let group or others write into a directory.
const WRITABLE_BY_OTHERS: u32 = 0o022;
const STICKY: u32 = 0o1000;
/// As Linux's own limit on links followed in one lookup.
const MAX_SYMLINKS: usize = 40;
/// How often a directory that appears or vanishes under us is looked at again before giving up.
const MAX_RACES: usize = 8;

/// A directory that passed the checks, held open.
#[derive(Debug)]
pub struct Dir {
    /// An `O_PATH` descriptor of the checked directory: later `*at` calls work in this inode,
    /// whatever happens to the path.
    fd: OwnedFd,
    /// The path as resolved (links followed), for messages.
    path: PathBuf,
    /// Permission bits (and sticky, setgid), after any narrowing.
    mode: u32,
}

/// What to do with an existing final directory whose mode is wider than the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wider {
    /// Use it: its owner chose the mode (a socket directory others may traverse).
    Keep,
    /// Narrow it to the mode asked for, through the descriptor.
    Narrow,
}

/// Opens the data directory `path`, creating it (and missing parents) if needed: it ends up 0700.
///
/// It and every directory on the way must be owned by this process's effective uid or by root,
/// and not writable by group or others (on the way, unless sticky). An existing one that others
/// can read or search is narrowed to 0700; one others can write into is refused, because anyone
/// could have planted files in it.
pub fn private_dir(path: &Path) -> Result<Dir, Error> {
    open(path, PRIVATE, Wider::Narrow)
}

/// Opens the directory `path`, creating it (and missing parents, 0755) with exactly `mode` if
/// needed. An existing one is used with its mode as long as it passes the same checks as
/// [`private_dir`]: callers that need it narrower look at [`Dir::mode`].
pub fn checked_dir(path: &Path, mode: u32) -> Result<Dir, Error> {
    open(path, mode, Wider::Keep)
}

// === impl Dir ===

impl Dir {
    /// The directory's path, with any symbolic links on the way resolved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its permission bits (`0o7777`), as they are now.
    pub fn mode(&self) -> u32 {
        self.mode
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// === the walk ===

/// Whether `uid` may own something we trust.
pub(crate) fn trusted(uid: u32, euid: u32) -> bool {
    uid == euid || uid == 0
}

pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn open(path: &Path, mode: u32, wider: Wider) -> Result<Dir, Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidPath {
            path: path.to_owned(),
            reason: "an empty path is not a directory",
        });
    }
    let absolute = std::path::absolute(path).map_err(|source| Error::Io {
        op: "resolve",
        path: path.to_owned(),
        source,
    })?;
    let euid = euid();
    let mut queue = VecDeque::new();
    push_front(&mut queue, &absolute);
    let (mut current, mut stat) = open_root()?;
    let mut shown = PathBuf::from("/");
    let mut created = false;
    let (mut links, mut races) = (0, 0);

    while let Some(name) = queue.pop_front() {
        let last = queue.is_empty();
        let io = |op, source: Errno| Error::Io {
            op,
            path: shown.join(&name),
            source: source.into(),
        };
        if name == ".." {
            let parent = open_at(&current, &name).map_err(|e| io("open", e))?;
            stat = rustix::fs::fstat(&parent).map_err(|e| io("inspect", e))?;
            shown.pop();
            check_owner(&stat, &shown, euid)?;
            if !last {
                check_on_the_way(&stat, &shown)?;
            }
            current = parent;
            created = false;
            continue;
        }
        match rustix::fs::statat(&current, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(link) if FileType::from_raw_mode(link.st_mode) == FileType::Symlink => {
                let at = shown.join(&name);
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::TooManySymlinks { path: at });
                }
                if !trusted(link.st_uid, euid) {
                    return Err(Error::SymlinkNotOwned {
                        path: at,
                        owner: link.st_uid,
                        euid,
                    });
                }
                let target = rustix::fs::readlinkat(&current, &name, Vec::new())
                    .map_err(|e| io("read the link", e))?;
                let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                if target.is_absolute() {
                    (current, stat) = open_root()?;
                    shown = PathBuf::from("/");
                }
                push_front(&mut queue, &target);
                created = false;
            }
            Ok(found) if FileType::from_raw_mode(found.st_mode) == FileType::Directory => {
                // A swap to a link between statat and here makes O_NOFOLLOW fail: refused.
                let next = open_at(&current, &name).map_err(|e| io("open", e))?;
                stat = rustix::fs::fstat(&next).map_err(|e| io("inspect", e))?;
                shown.push(&name);
                check_owner(&stat, &shown, euid)?;
                if !last {
                    check_on_the_way(&stat, &shown)?;
                }
                current = next;
                created = false;
            }
            Ok(_) => {
                return Err(Error::NotADirectory {
                    path: shown.join(&name),
                });
            }
            Err(Errno::NOENT) => {
                let want = if last { mode } else { INTERMEDIATE };
                match rustix::fs::mkdirat(&current, &name, Mode::from_raw_mode(want)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if races < MAX_RACES => {
                        // Made by someone else in between: look at it like any existing one.
                        races += 1;
                        queue.push_front(name);
                        continue;
                    }
                    Err(e) => return Err(io("create", e)),
                }
                let next = open_at(&current, &name).map_err(|e| io("open", e))?;
                stat = rustix::fs::fstat(&next).map_err(|e| io("inspect", e))?;
                shown.push(&name);
                // Only we or root can write where we made it, so it is ours; check anyway.
                check_owner(&stat, &shown, euid)?;
                // The umask may have cleared bits; set exactly the mode wanted.
                set_mode(&next, want, &shown)?;
                stat.st_mode = (stat.st_mode & !0o7777) | want;
                current = next;
                created = true;
            }
            Err(e) => return Err(io("inspect", e)),
        }
    }

    if wider == Wider::Narrow && shown == Path::new("/") {
        return Err(Error::InvalidPath {
            path: path.to_owned(),
            reason: "the root directory cannot be a private directory",
        });
    }
    let mut have = stat.st_mode & 0o7777;
    check_owner(&stat, &shown, euid)?;
    check_final(have, &shown)?;
    if !created && wider == Wider::Narrow && have & 0o777 & !mode != 0 {
        set_mode(&current, mode, &shown)?;
        have = mode;
    }
    Ok(Dir {
        fd: current,
        path: shown,
        mode: have,
    })
}

/// Puts the components of `path` before those still to walk. `/` and `.` say nothing more.
fn push_front(queue: &mut VecDeque<OsString>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::Normal(name) => queue.push_front(name.to_owned()),
            Component::ParentDir => queue.push_front(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn open_root() -> Result<(OwnedFd, Stat), Error> {
    let io = |op, source: Errno| Error::Io {
        op,
        path: PathBuf::from("/"),
        source: source.into(),
    };
    let root = rustix::fs::open("/", dir_flags(), Mode::empty()).map_err(|e| io("open", e))?;
    let stat = rustix::fs::fstat(&root).map_err(|e| io("inspect", e))?;
    check_owner(&stat, Path::new("/"), euid())?;
    check_on_the_way(&stat, Path::new("/"))?;
    Ok((root, stat))
}

/// A descriptor good for `*at` calls and `fstat`, which needs only search permission on the way.
fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn open_at(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(dir, name, dir_flags(), Mode::empty())
}

/// Every directory, on the way and at the end: ours or root's (its owner can change its mode).
fn check_owner(stat: &Stat, path: &Path, euid: u32) -> Result<(), Error> {
    if trusted(stat.st_uid, euid) {
        return Ok(());
    }
    Err(Error::NotOwned {
        path: path.to_owned(),
        owner: stat.st_uid,
        euid,
    })
}

/// A directory on the way: if others can write into it, it must be sticky, so that they cannot
/// rename or remove what is not theirs.
fn check_on_the_way(stat: &Stat, path: &Path) -> Result<(), Error> {
    let mode = stat.st_mode & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0 {
        return Err(Error::WritableAncestor {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The directory asked for: nobody else may write into it at all, sticky or not.
fn check_final(mode: u32, path: &Path) -> Result<(), Error> {
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(Error::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// `fchmod` through a readable descriptor of the same inode (`O_PATH` ones cannot be chmodded).
fn set_mode(dir: &OwnedFd, mode: u32, path: &Path) -> Result<(), Error> {
    let io = |source: Errno| Error::Io {
        op: "set the mode of",
        path: path.to_owned(),
        source: source.into(),
    };
    let readable = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    rustix::fs::fchmod(&readable, Mode::from_raw_mode(mode)).map_err(io)
}
