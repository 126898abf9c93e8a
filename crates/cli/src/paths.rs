//! Default socket paths. A server or agent running as root serves under `/run/lanyard`, which
//! only root can create; any other user under `/tmp`, as before (lanyard-fs refuses a directory
//! there that another user made). Clients look under `/run` first, for the same reason: a socket
//! there cannot be another user's imitation, and a client running as one user still finds a
//! server or agent running as root.

use std::path::{Path, PathBuf};

/// Where one kind of socket lives by default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DefaultSocket {
    /// For a process running as root.
    root: &'static str,
    /// For any other user.
    user: &'static str,
}

/// The server's admin socket.
pub(crate) const ADMIN_SOCKET: DefaultSocket = DefaultSocket {
    root: lanyard_server::DEFAULT_ROOT_ADMIN_SOCKET,
    user: lanyard_server::DEFAULT_ADMIN_SOCKET,
};

/// The agent's Workload API socket.
pub(crate) const WORKLOAD_SOCKET: DefaultSocket = DefaultSocket {
    root: lanyard_agent::DEFAULT_ROOT_SOCKET_PATH,
    user: lanyard_agent::DEFAULT_SOCKET_PATH,
};

/// Whether this process runs with effective uid 0.
pub(crate) fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

// === impl DefaultSocket ===

impl DefaultSocket {
    /// Where a server or agent binds.
    pub(crate) fn to_serve(self, as_root: bool) -> PathBuf {
        PathBuf::from(if as_root { self.root } else { self.user })
    }

    /// Where a client connects: the root default if it exists, else the other one if it exists,
    /// else the one this client would serve on (so that the error names the expected path).
    pub(crate) fn to_dial(self, as_root: bool, exists: impl Fn(&Path) -> bool) -> PathBuf {
        [self.root, self.user]
            .into_iter()
            .map(Path::new)
            .find(|path| exists(path))
            .map_or_else(|| self.to_serve(as_root), Path::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_as_root_use_run_and_others_tmp() {
        assert_eq!(
            ADMIN_SOCKET.to_serve(true),
            Path::new("/run/lanyard/server/admin.sock")
        );
        assert_eq!(
            ADMIN_SOCKET.to_serve(false),
            Path::new("/tmp/lanyard-server/admin.sock")
        );
        assert_eq!(
            WORKLOAD_SOCKET.to_serve(true),
            Path::new("/run/lanyard/agent/public/api.sock")
        );
        assert_eq!(
            WORKLOAD_SOCKET.to_serve(false),
            Path::new("/tmp/lanyard-agent/public/api.sock")
        );
    }

    #[test]
    fn clients_find_a_root_agent_first_whoever_they_are() {
        let root = Path::new("/run/lanyard/agent/public/api.sock");
        let user = Path::new("/tmp/lanyard-agent/public/api.sock");
        for as_root in [false, true] {
            assert_eq!(WORKLOAD_SOCKET.to_dial(as_root, |_| true), root);
            assert_eq!(WORKLOAD_SOCKET.to_dial(as_root, |p| p == root), root);
            assert_eq!(WORKLOAD_SOCKET.to_dial(as_root, |p| p == user), user);
        }
        // Nothing there: the path this client would serve on, for the error message.
        assert_eq!(WORKLOAD_SOCKET.to_dial(false, |_| false), user);
        assert_eq!(WORKLOAD_SOCKET.to_dial(true, |_| false), root);
        assert_eq!(
            ADMIN_SOCKET.to_dial(false, |p| p.starts_with("/run")),
            Path::new("/run/lanyard/server/admin.sock")
        );
    }
}
