//! Who is calling: the kernel's view of the caller ([`PeerCredentials`], read with `SO_PEERCRED`
//! when the connection is accepted) and the [`CallerAttestor`] that turns it into selectors.
//!
//! The real attestors (`unix`, `cgroup`) live in `lanyard-attestation`; this crate only defines the
//! narrow trait it needs, plus a fake for tests.

use std::future::Future;
use std::io;

use lanyard_core::SelectorSet;

/// The caller's process credentials, as the kernel reported them for the connection
/// (`SO_PEERCRED`): the values at `connect(2)` time, which the caller cannot forge.
#[derive(Debug, Clone)]
pub struct PeerCredentials {
    /// The caller's pid; `None` where the platform does not report one.
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// A pidfd for `pid`, opened when the connection was accepted. It keeps naming that process
    /// even if it exits and the pid is reused, so an attestor can refuse a pid that changed hands
    /// while it read `/proc`. `None` if it could not be opened (the process already exited).
    pub pidfd: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// Why a caller could not be attested. The Workload API answers every one of these with
/// `Unavailable "workload attestation failed"` and logs the cause; the caller never sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    #[error("the kernel reported no credentials for the connection")]
    NoCredentials,
    #[error("the kernel reported no pid for the caller")]
    NoPid,
    #[error("process {pid} exited before it could be attested")]
    ProcessGone { pid: i32 },
    #[error("pid {pid} was reused by another process during attestation")]
    PidReused { pid: i32 },
    #[error("cannot read {what} of process {pid}")]
    Io {
        pid: i32,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{attestor} attestor failed: {reason}")]
    Attestor {
        attestor: &'static str,
        reason: String,
    },
}

/// Turns a caller's credentials into the selectors that describe it (`unix:uid:1000`, …).
///
/// Called once per RPC (a stream is attested once, when it opens). Implementations must not
/// trust anything the caller sends: only the credentials and what the kernel says about the pid.
pub trait CallerAttestor: Send + Sync + 'static {
    fn attest(
        &self,
        caller: &PeerCredentials,
    ) -> impl Future<Output = Result<SelectorSet, AttestError>> + Send;
}

/// An agent shares its attestor with the server through an `Arc`.
impl<T: CallerAttestor> CallerAttestor for std::sync::Arc<T> {
    fn attest(
        &self,
        caller: &PeerCredentials,
    ) -> impl Future<Output = Result<SelectorSet, AttestError>> + Send {
        (**self).attest(caller)
    }
}

#[cfg(any(test, feature = "testing"))]
pub use fake::FakeAttestor;

#[cfg(any(test, feature = "testing"))]
mod fake {
    use std::sync::{Arc, Mutex};

    use lanyard_core::SelectorSet;

    use super::{AttestError, CallerAttestor, PeerCredentials};

    /// An attestor that answers what the test told it to, and remembers who asked.
    #[derive(Debug, Clone, Default)]
    pub struct FakeAttestor {
        state: Arc<Mutex<State>>,
    }

    #[derive(Debug, Default)]
    struct State {
        /// `None`: attestation fails.
        selectors: Option<SelectorSet>,
        seen: Vec<PeerCredentials>,
    }

    impl FakeAttestor {
        /// Attests every caller with `selectors`.
        pub fn new(selectors: SelectorSet) -> Self {
            let fake = Self::default();
            fake.set_selectors(selectors);
            fake
        }

        /// Fails every attestation.
        pub fn failing() -> Self {
            Self::default()
        }

        pub fn set_selectors(&self, selectors: SelectorSet) {
            self.lock().selectors = Some(selectors);
        }

        pub fn fail(&self) {
            self.lock().selectors = None;
        }

        /// The credentials of every caller attested so far, in order.
        pub fn seen(&self) -> Vec<PeerCredentials> {
            self.lock().seen.clone()
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl CallerAttestor for FakeAttestor {
        async fn attest(&self, caller: &PeerCredentials) -> Result<SelectorSet, AttestError> {
            let mut state = self.lock();
            state.seen.push(caller.clone());
            state.selectors.clone().ok_or(AttestError::Attestor {
                attestor: "fake",
                reason: "told to fail".into(),
            })
        }
    }
}
