//! The admin socket: a Unix socket only its owner can use, in a directory only this user or root
//! controls. lanyard-fs makes and checks both; this is the tokio side.

use std::path::Path;

use tokio::net::UnixListener;

use crate::ServerError;

/// Binds the admin socket at `path` with mode 0600 (its directory, if made, 0700). A stale socket
/// left by a crashed server is replaced; a live one, or any other file, is refused, so two
/// servers never share a socket by accident. Must be called inside a tokio runtime.
pub(crate) fn bind_private(path: &Path) -> Result<UnixListener, ServerError> {
    let listener = lanyard_fs::bind(path, lanyard_fs::Access::Owner).map_err(|source| {
        ServerError::AdminSocket {
            path: path.to_owned(),
            source,
        }
    })?;
    listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(listener))
        .map_err(|source| ServerError::AdminListen {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn socket_is_private_and_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.sock");
        let listener = bind_private(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // A second server must not steal a live socket.
        let err = bind_private(&path).unwrap_err();
        assert!(
            matches!(
                err,
                ServerError::AdminSocket {
                    source: lanyard_fs::Error::SocketInUse { .. },
                    ..
                }
            ),
            "{err}"
        );

        // Once the first is gone, its stale socket file is replaced.
        drop(listener);
        bind_private(&path).unwrap();
    }

    #[tokio::test]
    async fn refuses_a_directory_others_can_write() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind_private(&open.join("admin.sock")).unwrap_err();
        assert!(
            matches!(
                err,
                ServerError::AdminSocket {
                    source: lanyard_fs::Error::Writable { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(!open.join("admin.sock").exists());
    }

    #[tokio::test]
    async fn refuses_a_path_that_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, b"data").unwrap();
        let err = bind_private(&path).unwrap_err();
        assert!(
            matches!(
                err,
                ServerError::AdminSocket {
                    source: lanyard_fs::Error::NotASocket { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
