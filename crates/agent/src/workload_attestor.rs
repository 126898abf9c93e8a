//! Who is calling on the Workload API socket: the `unix` and `cgroup` attestors of
//! `lanyard-attestation`, run on the caller's pid (from `SO_PEERCRED`), pinned by a pidfd so a
//! pid reused while `/proc` is read is refused rather than attested.

use std::sync::Arc;

use lanyard_attestation::{
    AttestError as ProcessError, CgroupAttestor, UnixAttestor, WorkloadAttestor,
};
use lanyard_core::SelectorSet;
use lanyard_workload::{AttestError, CallerAttestor, PeerCredentials};

/// The agent's default caller attestor: `unix` + `cgroup` selectors.
#[derive(Debug, Clone)]
pub struct HostAttestor {
    /// Shared with the agent, which turns `unix:sha256` / `unix:path` on only while an entry
    /// uses them.
    unix: Arc<UnixAttestor>,
}

impl HostAttestor {
    pub fn new(unix: Arc<UnixAttestor>) -> Self {
        Self { unix }
    }

    pub(crate) fn unix(&self) -> &Arc<UnixAttestor> {
        &self.unix
    }
}

impl Default for HostAttestor {
    fn default() -> Self {
        Self::new(Arc::new(UnixAttestor::default()))
    }
}

impl CallerAttestor for HostAttestor {
    async fn attest(&self, caller: &PeerCredentials) -> Result<SelectorSet, AttestError> {
        let pid = caller.pid.ok_or(AttestError::NoPid)?;
        let pid_u32 = u32::try_from(pid).map_err(|_| AttestError::Attestor {
            attestor: "unix",
            reason: format!("pid {pid} is negative"),
        })?;
        let unix = self.unix.clone();
        let (uid, gid) = (caller.uid, caller.gid);
        // The pidfd taken when the connection was accepted pins the process that connected; a
        // copy of it is what the attestation checks against after reading /proc.
        let pidfd = caller.pidfd.as_ref().and_then(|fd| fd.try_clone().ok());
        // Reading /proc, and hashing an executable when `unix:sha256` is in use, blocks.
        let result = tokio::task::spawn_blocking(move || {
            let attestors: [&dyn WorkloadAttestor; 2] = [unix.as_ref(), &CgroupAttestor];
            match pidfd {
                Some(fd) => {
                    let process = lanyard_attestation::PinnedProcess::from_pidfd(pid_u32, fd)?
                        .with_peer_credentials(uid, gid);
                    lanyard_attestation::attest_process(&process, &attestors)
                }
                // No pidfd (the caller had already exited at accept): pin it now, which still
                // refuses a process that changes while /proc is read.
                None => lanyard_attestation::attest_peer(pid_u32, uid, gid, &attestors),
            }
        })
        .await
        .map_err(|e| AttestError::Attestor {
            attestor: "unix",
            reason: format!("the attestation task failed: {e}"),
        })?;
        result.map_err(|e| match e {
            ProcessError::ProcessGone { .. } => AttestError::ProcessGone { pid },
            ProcessError::PidReused { .. } => AttestError::PidReused { pid },
            other => AttestError::Attestor {
                attestor: "unix",
                reason: other.to_string(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[tokio::test]
    async fn attests_this_process() {
        use std::os::unix::fs::MetadataExt as _;
        let proc_self = std::fs::metadata("/proc/self").unwrap();
        let me = PeerCredentials {
            pid: Some(i32::try_from(std::process::id()).unwrap()),
            uid: proc_self.uid(),
            gid: proc_self.gid(),
            pidfd: None,
        };
        let selectors = HostAttestor::default().attest(&me).await.unwrap();
        let uid = format!("unix:uid:{}", me.uid);
        assert!(
            selectors.iter().any(|s| s.to_string() == uid),
            "{selectors:?}"
        );
        let no_pid = PeerCredentials {
            pid: None,
            ..me.clone()
        };
        assert!(matches!(
            HostAttestor::default().attest(&no_pid).await,
            Err(AttestError::NoPid)
        ));
    }

    #[tokio::test]
    async fn a_pidfd_taken_at_accept_pins_the_caller() {
        use std::os::unix::fs::MetadataExt as _;
        let proc_self = std::fs::metadata("/proc/self").unwrap();
        let pid = rustix::process::getpid();
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        let me = PeerCredentials {
            pid: Some(pid.as_raw_nonzero().get()),
            uid: proc_self.uid(),
            gid: proc_self.gid(),
            pidfd: Some(std::sync::Arc::new(pidfd)),
        };
        HostAttestor::default().attest(&me).await.unwrap();

        // A caller that exited after connecting: its pidfd says so, whatever now has its pid.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let child_pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let child_fd =
            rustix::process::pidfd_open(child_pid, rustix::process::PidfdFlags::empty()).unwrap();
        child.wait().unwrap();
        let gone = PeerCredentials {
            pid: Some(child_pid.as_raw_nonzero().get()),
            uid: proc_self.uid(),
            gid: proc_self.gid(),
            pidfd: Some(std::sync::Arc::new(child_fd)),
        };
        assert!(matches!(
            HostAttestor::default().attest(&gone).await,
            Err(AttestError::ProcessGone { .. })
        ));
    }
}
