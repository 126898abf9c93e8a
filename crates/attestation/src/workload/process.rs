//! Pinning the caller's process, so that what is read from `/proc` is about the caller and not
//! about a later process that was given the same pid.
//!
//! Three facts hold one process in place:
//! - a **pidfd** names one process for as long as it is open, and becomes readable when that
//!   process exits; a pid number does neither;
//! - a **`/proc/<pid>` directory fd** opened while the pidfd shows the process alive refers to
//!   that process only: reads through it fail once the process is gone, even if the pid is reused;
//! - the **start time** (field 22 of `/proc/<pid>/stat`) with the pid names one process for the
//!   life of the system; it is compared again when the attestors are done.
//!
//! The remaining window is before the pidfd is opened: if the caller exits and its pid is reused
//! between `connect(2)` and [`PinnedProcess::open`], the pin holds the new process. Opening the
//! pin at accept time keeps that window short; `SO_PEERPIDFD` (Linux 6.5) closes it, and
//! [`PinnedProcess::from_pidfd`] takes such a pidfd.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{Mode, OFlags, openat};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::AttestError;
use super::procfs::{MAX_STATUS_LEN, parse_stat_start_time, parse_status};

/// Longest `/proc/<pid>/stat` accepted: ~50 numbers and a 16-byte name fit in well under this.
const MAX_STAT_LEN: usize = 8 * 1024;

/// A process held in place for attestation. Cheap to keep for the life of a connection: two file
/// descriptors and two numbers.
#[derive(Debug)]
pub struct PinnedProcess {
    pid: u32,
    /// Names the process for as long as it is open; readable once the process has exited.
    pidfd: OwnedFd,
    /// `/proc/<pid>`, opened while `pidfd` showed the process alive: every read through it is
    /// about this process or fails.
    proc_dir: OwnedFd,
    /// Field 22 of `/proc/<pid>/stat` when the process was pinned.
    start_time: u64,
    /// The effective uid and gid the kernel reported for the connection (`SO_PEERCRED`), which
    /// `/proc` must still show when the attestors are done.
    peer: Option<(u32, u32)>,
}

// === impl PinnedProcess ===

impl PinnedProcess {
    /// Pins the process that has `pid` now (`pidfd_open(2)`).
    pub fn open(pid: u32) -> Result<Self, AttestError> {
        let raw = to_pid(pid)?;
        let pidfd = pidfd_open(raw, PidfdFlags::empty()).map_err(|e| match e {
            Errno::SRCH => AttestError::ProcessGone { pid },
            Errno::NOSYS => AttestError::PidfdUnsupported,
            e => AttestError::Pidfd {
                pid,
                source: e.into(),
            },
        })?;
        Self::pin(pid, pidfd)
    }

    /// Pins the process behind a pidfd the caller already holds (from `SO_PEERPIDFD` or
    /// `pidfd_open`), after checking with `/proc/self/fdinfo` that it is a pidfd for `pid`.
    pub fn from_pidfd(pid: u32, pidfd: OwnedFd) -> Result<Self, AttestError> {
        to_pid(pid)?;
        let fdinfo = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
        let content = read_limited(
            File::open(&fdinfo).map_err(|source| AttestError::Pidfd { pid, source })?,
            MAX_STAT_LEN,
        )
        .map_err(|source| AttestError::Pidfd { pid, source })?
        .ok_or(AttestError::NotAPidfd { pid })?;
        let actual = content
            .split(|&b| b == b'\n')
            .find_map(|line| line.strip_prefix(b"Pid:"))
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.trim().parse::<i64>().ok())
            .ok_or(AttestError::NotAPidfd { pid })?;
        if actual == -1 {
            return Err(AttestError::ProcessGone { pid });
        }
        if actual != i64::from(pid) {
            return Err(AttestError::PidfdMismatch { pid, actual });
        }
        Self::pin(pid, pidfd)
    }

    fn pin(pid: u32, pidfd: OwnedFd) -> Result<Self, AttestError> {
        let proc_dir = rustix::fs::open(
            format!("/proc/{pid}"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::SRCH => AttestError::ProcessGone { pid },
            e => AttestError::ProcRead {
                pid,
                file: "",
                source: e.into(),
            },
        })?;
        let stat = read_at(&proc_dir, pid, "stat", MAX_STAT_LEN, pidfd.as_fd())?;
        let start_time =
            parse_stat_start_time(&stat).map_err(|source| AttestError::ProcMalformed {
                pid,
                file: "stat",
                source,
            })?;
        // The pidfd was opened first: if its process is still alive now, the pid was not reused
        // in between, so `proc_dir` and the start time are that process's.
        if pidfd_exited(pid, pidfd.as_fd())? {
            return Err(AttestError::ProcessGone { pid });
        }
        Ok(Self {
            pid,
            pidfd,
            proc_dir,
            start_time,
            peer: None,
        })
    }

    /// Also require, at [`verify`](Self::verify), that the process still runs with the effective
    /// uid and gid the socket reported at `connect(2)` (`SO_PEERCRED`). This refuses a caller that
    /// connected and then exec'd a set-uid program while another process kept the socket: the
    /// attestors would otherwise describe the privileged program to the unprivileged holder.
    pub fn with_peer_credentials(mut self, uid: u32, gid: u32) -> Self {
        self.peer = Some((uid, gid));
        self
    }

    /// The pid, in the agent's pid namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process start time in clock ticks after boot, as read when it was pinned.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// The pidfd, for callers that want to wait on the process.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Refuses unless the pinned process is still alive and still has `pid`: run after every
    /// read of `/proc`, before the selectors are used.
    pub fn verify(&self) -> Result<(), AttestError> {
        if let Some((peer_uid, peer_gid)) = self.peer {
            let status =
                parse_status(&self.read_file("status", MAX_STATUS_LEN)?).map_err(|source| {
                    AttestError::ProcMalformed {
                        pid: self.pid,
                        file: "status",
                        source,
                    }
                })?;
            let (uid, gid) = (status.effective_uid(), status.effective_gid());
            if (uid, gid) != (peer_uid, peer_gid) {
                return Err(AttestError::CredentialsChanged {
                    pid: self.pid,
                    peer_uid,
                    peer_gid,
                    uid,
                    gid,
                });
            }
        }
        // Last, so that a process alive at this check was alive for every read before it.
        check_same_process(self.pid, self.start_time, self.pidfd.as_fd())
    }

    /// Reads `/proc/<pid>/<file>` through the pinned directory, refusing more than `limit` bytes.
    pub(crate) fn read_file(
        &self,
        file: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, AttestError> {
        read_at(&self.proc_dir, self.pid, file, limit, self.pidfd.as_fd())
    }

    /// The target of the `/proc/<pid>/<link>` symlink (`exe`).
    pub(crate) fn read_link(&self, link: &'static str) -> Result<Vec<u8>, AttestError> {
        rustix::fs::readlinkat(&self.proc_dir, link, Vec::new())
            .map(std::ffi::CString::into_bytes)
            .map_err(|e| self.read_error(link, e))
    }

    /// Opens the file the process is executing, through `/proc/<pid>/exe`: the very inode it
    /// runs, even if its path has since been replaced or deleted.
    pub(crate) fn open_exe(&self) -> Result<File, AttestError> {
        openat(
            &self.proc_dir,
            "exe",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| self.read_error("exe", e))
    }

    fn read_error(&self, file: &'static str, e: Errno) -> AttestError {
        read_error(self.pid, file, e, self.pidfd.as_fd())
    }
}

/// Refuses unless the process `pidfd` refers to is alive and `/proc/<pid>/stat` shows
/// `expected_start_time`: the check that the pid still names the process that was pinned.
///
/// - the start time differs → [`AttestError::PidReused`] (another process has the pid, or the
///   snapshot was of another process);
/// - the pidfd shows the process has exited (a zombie included), or `/proc/<pid>` is gone →
///   [`AttestError::ProcessGone`].
pub fn check_same_process(
    pid: u32,
    expected_start_time: u64,
    pidfd: BorrowedFd<'_>,
) -> Result<(), AttestError> {
    to_pid(pid)?;
    // Read first, poll last: a process alive at the poll was alive for every read before it.
    let observed = match File::open(format!("/proc/{pid}/stat")) {
        Ok(file) => match read_limited(file, MAX_STAT_LEN) {
            Ok(Some(stat)) => parse_stat_start_time(&stat).ok(),
            Ok(None) => None,
            Err(e) if is_gone(&e) => None,
            Err(source) => {
                return Err(AttestError::ProcRead {
                    pid,
                    file: "stat",
                    source,
                });
            }
        },
        Err(e) if is_gone(&e) => None,
        Err(source) => {
            return Err(AttestError::ProcRead {
                pid,
                file: "stat",
                source,
            });
        }
    };
    let exited = pidfd_exited(pid, pidfd)?;
    match observed {
        Some(start) if start != expected_start_time => Err(AttestError::PidReused { pid }),
        Some(_) if !exited => Ok(()),
        _ => Err(AttestError::ProcessGone { pid }),
    }
}

/// True once the process behind `pidfd` has exited (it polls readable).
fn pidfd_exited(pid: u32, pidfd: BorrowedFd<'_>) -> Result<bool, AttestError> {
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [PollFd::from_borrowed_fd(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                // IN: exited. ERR/HUP/NVAL: not a live pidfd; either way, not attestable.
                return Ok(!fds[0].revents().is_empty());
            }
            Err(Errno::INTR) => continue,
            Err(e) => {
                return Err(AttestError::Pidfd {
                    pid,
                    source: e.into(),
                });
            }
        }
    }
}

fn read_at(
    dir: &OwnedFd,
    pid: u32,
    file: &'static str,
    limit: usize,
    pidfd: BorrowedFd<'_>,
) -> Result<Vec<u8>, AttestError> {
    let fd = openat(dir, file, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| read_error(pid, file, e, pidfd))?;
    match read_limited(File::from(fd), limit) {
        Ok(Some(content)) => Ok(content),
        Ok(None) => Err(AttestError::ProcFileTooLarge { pid, file, limit }),
        Err(e) => Err(read_error(
            pid,
            file,
            Errno::from_io_error(&e).unwrap_or(Errno::IO),
            pidfd,
        )),
    }
}

/// A failed read of a pinned process's file: "gone" if the process has exited (reads through a
/// dead process's `/proc` directory fail with `ESRCH` or `ENOENT`), the I/O error otherwise.
fn read_error(pid: u32, file: &'static str, e: Errno, pidfd: BorrowedFd<'_>) -> AttestError {
    if matches!(e, Errno::SRCH | Errno::NOENT) && pidfd_exited(pid, pidfd).unwrap_or(true) {
        return AttestError::ProcessGone { pid };
    }
    AttestError::ProcRead {
        pid,
        file,
        source: e.into(),
    }
}

/// Reads at most `limit` bytes; `None` if there was more.
fn read_limited(file: File, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut content = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut content)?;
    Ok((content.len() <= limit).then_some(content))
}

fn is_gone(e: &io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::SRCH | Errno::NOENT))
}

fn to_pid(pid: u32) -> Result<Pid, AttestError> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(AttestError::InvalidPid { pid })
}
