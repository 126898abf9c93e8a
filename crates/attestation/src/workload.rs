//! Workload attestation: what the kernel says about the process on the other end of the agent's
//! socket, turned into selectors (`unix:uid:1000`, `systemd:unit:web.service`, …).
//!
//! The caller pins the process first ([`PinnedProcess`]: a pidfd plus `/proc/<pid>` opened while
//! the pidfd shows the process alive), then runs the attestors, then asks the pin whether the
//! process is still the same one ([`PinnedProcess::verify`]). [`attest_process`] does the last two
//! steps. Everything here is synchronous file reading: run it in `spawn_blocking`.

use std::fmt;
use std::io;

use lanyard_core::SelectorSet;

pub mod cgroup;
pub mod names;
pub mod process;
pub mod procfs;
pub mod unix;

pub use cgroup::{CgroupAttestor, cgroup_selectors};
pub use process::{PinnedProcess, check_same_process};
pub use procfs::ProcParseError;
pub use unix::{HashStats, UnixAttestor, UnixConfig};

/// Why a workload could not be attested. The Workload API answers all of these with
/// `Unavailable`; the cause is for the agent's log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    #[error("pid {pid} is not a valid process id")]
    InvalidPid { pid: u32 },
    #[error("process {pid} exited before attestation finished")]
    ProcessGone { pid: u32 },
    #[error("pid {pid} now belongs to another process than the one that called")]
    PidReused { pid: u32 },
    #[error("this kernel has no pidfd support (Linux 5.3 or later is required)")]
    PidfdUnsupported,
    #[error("cannot open a pidfd for pid {pid}")]
    Pidfd {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("the file descriptor given for pid {pid} is not a pidfd")]
    NotAPidfd { pid: u32 },
    #[error("the pidfd given for pid {pid} refers to pid {actual}")]
    PidfdMismatch { pid: u32, actual: i64 },
    #[error("cannot read /proc/{pid}/{file}")]
    ProcRead {
        pid: u32,
        file: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("/proc/{pid}/{file} is larger than {limit} bytes")]
    ProcFileTooLarge {
        pid: u32,
        file: &'static str,
        limit: usize,
    },
    #[error("/proc/{pid}/{file} is malformed")]
    ProcMalformed {
        pid: u32,
        file: &'static str,
        #[source]
        source: ProcParseError,
    },
    #[error(
        "process {pid} now runs as uid {uid} gid {gid}, not as the uid {peer_uid} gid {peer_gid} it connected with"
    )]
    CredentialsChanged {
        pid: u32,
        peer_uid: u32,
        peer_gid: u32,
        uid: u32,
        gid: u32,
    },
    #[error("the executable of process {pid} is {size} bytes; the hashing limit is {limit}")]
    ExecutableTooLarge { pid: u32, size: u64, limit: u64 },
    #[error("cannot read the executable of process {pid}")]
    ExecutableRead {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("the executable of process {pid} changed while it was being hashed")]
    ExecutableChanged { pid: u32 },
}

/// One kind of workload attestor. Implementations read only what the kernel says about the
/// pinned process (never anything the caller sends) and must not panic on any content.
pub trait WorkloadAttestor: Send + Sync + fmt::Debug {
    /// The selector type family this attestor produces, for logs (`unix`, `cgroup`).
    fn name(&self) -> &'static str;

    /// The selectors describing the process. The caller checks [`PinnedProcess::verify`] after
    /// every attestor has run; [`attest_process`] does that.
    fn attest(&self, process: &PinnedProcess) -> Result<SelectorSet, AttestError>;
}

/// Runs every attestor on the pinned process and returns the union of their selectors, but only
/// if the process is still the one that was pinned once all of them have read `/proc`.
pub fn attest_process(
    process: &PinnedProcess,
    attestors: &[&dyn WorkloadAttestor],
) -> Result<SelectorSet, AttestError> {
    let mut selectors = SelectorSet::new();
    for attestor in attestors {
        for selector in attestor.attest(process)? {
            selectors.insert(selector);
        }
    }
    process.verify()?;
    Ok(selectors)
}

/// Pins `pid` and attests it: for callers that did not pin the process earlier. Prefer pinning
/// at accept time ([`PinnedProcess::open`]) and calling [`attest_process`] later, which narrows
/// the window in which the pid can be reused before it is pinned, and prefer [`attest_peer`],
/// which also holds the process to the socket's credentials.
pub fn attest_pid(
    pid: u32,
    attestors: &[&dyn WorkloadAttestor],
) -> Result<SelectorSet, AttestError> {
    attest_process(&PinnedProcess::open(pid)?, attestors)
}

/// Pins the caller of a Unix socket from its `SO_PEERCRED` (pid, effective uid and gid) and
/// attests it, refusing it if its uid or gid changed since it connected
/// ([`PinnedProcess::with_peer_credentials`]).
pub fn attest_peer(
    pid: u32,
    uid: u32,
    gid: u32,
    attestors: &[&dyn WorkloadAttestor],
) -> Result<SelectorSet, AttestError> {
    attest_process(
        &PinnedProcess::open(pid)?.with_peer_credentials(uid, gid),
        attestors,
    )
}

/// Adds `kind:value` to `set` if it is a valid selector. A value that cannot be a selector (a
/// control character, over the length limit) is left out: selectors only ever grant, so a missing
/// one can only make fewer entries match.
fn push_selector(set: &mut SelectorSet, kind: &str, value: &str) {
    if let Ok(selector) = lanyard_core::Selector::new(kind, value) {
        set.insert(selector);
    }
}
