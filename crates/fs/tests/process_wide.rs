//! Cases that change process-wide state (the umask, the working directory): a test binary of
//! their own, with one test, so that nothing runs beside them.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use lanyard_fs::{Access, bind, private_dir};
use rustix::fs::Mode;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn process_wide_state() {
    modes_are_exact_under_any_umask();
    relative_paths_start_at_the_working_directory();
}

/// A permissive umask must not widen a private socket or directory, a strict one must not narrow
/// the public socket.
fn modes_are_exact_under_any_umask() {
    let tmp = tempfile::tempdir().unwrap();
    for (round, umask) in [0o000, 0o077, 0o777].into_iter().enumerate() {
        let old = rustix::process::umask(Mode::from_raw_mode(umask));
        let base = tmp.path().join(round.to_string());
        let admin = bind(&base.join("server/admin.sock"), Access::Owner);
        let api = bind(&base.join("agent/public/api.sock"), Access::Everyone);
        let data = private_dir(&base.join("data"));
        // Each call restored the umask it found.
        let during = rustix::process::umask(old);
        assert_eq!(during.as_raw_mode(), umask);

        let (_admin, _api, _data) = (admin.unwrap(), api.unwrap(), data.unwrap());
        assert_eq!(mode(&base), 0o755, "umask {umask:03o}");
        assert_eq!(mode(&base.join("server")), 0o700, "umask {umask:03o}");
        assert_eq!(
            mode(&base.join("server/admin.sock")),
            0o600,
            "umask {umask:03o}"
        );
        assert_eq!(mode(&base.join("agent")), 0o755, "umask {umask:03o}");
        assert_eq!(mode(&base.join("agent/public")), 0o755, "umask {umask:03o}");
        assert_eq!(
            mode(&base.join("agent/public/api.sock")),
            0o777,
            "umask {umask:03o}"
        );
        assert_eq!(mode(&base.join("data")), 0o700, "umask {umask:03o}");
    }
}

fn relative_paths_start_at_the_working_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let old = std::env::current_dir().unwrap();
    std::env::set_current_dir(tmp.path()).unwrap();
    let data = private_dir(Path::new("rel/data"));
    let socket = bind(Path::new("api.sock"), Access::Everyone);
    let nested = bind(Path::new("./rel/../rel/admin.sock"), Access::Owner);
    std::env::set_current_dir(old).unwrap();

    let (data, _socket, _nested) = (data.unwrap(), socket.unwrap(), nested.unwrap());
    assert_eq!(data.path(), tmp.path().join("rel/data"));
    assert_eq!(mode(&tmp.path().join("rel/data")), 0o700);
    assert_eq!(mode(&tmp.path().join("api.sock")), 0o777);
    assert_eq!(mode(&tmp.path().join("rel/admin.sock")), 0o600);
}
