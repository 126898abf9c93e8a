//! Every case runs in a fresh temporary directory (0700, ours). The cases that chown to another
//! uid need root; as another user they say so and pass. The permissive-umask case is in
//! `tests/process_wide.rs`, in a process of its own, because the umask is process-wide.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::*;

/// Another user's uid (`nobody`).
const OTHER_UID: u32 = 65534;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn can_chown() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: chown to another uid needs root");
    false
}

#[test]
fn creates_missing_dirs_and_sockets_with_exact_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = tmp.path().join("run/server/admin.sock");
    let _admin = bind(&admin, Access::Owner).unwrap();
    assert_eq!(mode(&admin), 0o600);
    assert_eq!(mode(admin.parent().unwrap()), 0o700);
    // Directories on the way only need to be traversable; the last one guards.
    assert_eq!(mode(&tmp.path().join("run")), 0o755);

    let api = tmp.path().join("run/agent/public/api.sock");
    let _api = bind(&api, Access::Everyone).unwrap();
    assert_eq!(mode(&api), 0o777);
    assert_eq!(mode(api.parent().unwrap()), 0o755);

    let data = tmp.path().join("var/lib/data");
    let dir = private_dir(&data).unwrap();
    assert_eq!(dir.mode(), 0o700);
    assert_eq!(mode(&data), 0o700);
}

#[test]
fn refuses_a_socket_dir_owned_by_another_user() {
    if !can_chown() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    mkdir(&theirs, 0o755);
    std::os::unix::fs::chown(&theirs, Some(OTHER_UID), None).unwrap();
    let err = bind(&theirs.join("admin.sock"), Access::Owner).unwrap_err();
    assert!(
        matches!(&err, Error::NotOwned { path, owner: OTHER_UID, .. } if *path == theirs),
        "{err}"
    );
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    assert!(!theirs.join("admin.sock").exists());
}

#[test]
fn refuses_a_socket_dir_others_or_group_can_write() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, dir_mode) in [("world", 0o777), ("group", 0o775), ("sticky", 0o1777)] {
        let dir = tmp.path().join(name);
        mkdir(&dir, dir_mode);
        let err = bind(&dir.join("api.sock"), Access::Everyone).unwrap_err();
        assert!(
            matches!(&err, Error::Writable { path, mode } if *path == dir && *mode == dir_mode),
            "{name}: {err}"
        );
        assert!(!dir.join("api.sock").exists(), "{name}");
        assert_eq!(mode(&dir), dir_mode, "{name}: a refused dir is left alone");
    }
}

#[test]
fn refuses_an_ancestor_others_can_write_unless_sticky() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    mkdir(&open, 0o777);
    mkdir(&open.join("mine"), 0o700);
    let err = bind(&open.join("mine/admin.sock"), Access::Owner).unwrap_err();
    assert!(
        matches!(&err, Error::WritableAncestor { path, .. } if *path == open),
        "{err}"
    );
    let err = private_dir(&open.join("data")).unwrap_err();
    assert!(matches!(&err, Error::WritableAncestor { .. }), "{err}");
    assert!(!open.join("data").exists());

    // With the sticky bit (like /tmp) others cannot rename what we own in it.
    let sticky = tmp.path().join("sticky");
    mkdir(&sticky, 0o1777);
    let _listener = bind(&sticky.join("mine/admin.sock"), Access::Owner).unwrap();
    assert_eq!(mode(&sticky.join("mine")), 0o700);
}

#[test]
fn refuses_a_symlink_at_the_socket_path() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    fs::write(&target, b"keep").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let socket = tmp.path().join("api.sock");
    std::os::unix::fs::symlink(&target, &socket).unwrap();
    let err = bind(&socket, Access::Everyone).unwrap_err();
    assert!(matches!(err, Error::NotASocket { .. }), "{err}");
    // Neither the link nor what it points at was touched.
    assert!(fs::symlink_metadata(&socket).unwrap().is_symlink());
    assert_eq!(mode(&target), 0o644);
    assert_eq!(fs::read(&target).unwrap(), b"keep");
}

#[test]
fn follows_a_symlinked_parent_only_to_a_safe_place() {
    let tmp = tempfile::tempdir().unwrap();
    // Ours, to a directory of ours: followed, and the socket is made in the target.
    let real = tmp.path().join("real");
    mkdir(&real, 0o700);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let _listener = bind(&link.join("admin.sock"), Access::Owner).unwrap();
    assert_eq!(mode(&real.join("admin.sock")), 0o600);
    assert_eq!(mode(&real), 0o700);

    // Ours, to a directory others can write: the target is checked like any path.
    let open = tmp.path().join("open");
    mkdir(&open, 0o777);
    let to_open = tmp.path().join("to-open");
    std::os::unix::fs::symlink(&open, &to_open).unwrap();
    let err = bind(&to_open.join("admin.sock"), Access::Owner).unwrap_err();
    assert!(
        matches!(&err, Error::Writable { path, .. } if *path == open),
        "{err}"
    );
    assert_eq!(mode(&open), 0o777, "the target was not chmodded");

    // A data directory reached through a link is narrowed through its descriptor, not the link.
    let wide = tmp.path().join("wide");
    mkdir(&wide, 0o755);
    let to_wide = tmp.path().join("to-wide");
    std::os::unix::fs::symlink(&wide, &to_wide).unwrap();
    private_dir(&to_wide).unwrap();
    assert_eq!(mode(&wide), 0o700);
    assert!(fs::symlink_metadata(&to_wide).unwrap().is_symlink());
}

#[test]
fn refuses_a_symlinked_parent_owned_by_another_user() {
    if !can_chown() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    mkdir(&real, 0o700);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(OTHER_UID), None).unwrap();
    let err = bind(&link.join("admin.sock"), Access::Owner).unwrap_err();
    assert!(
        matches!(&err, Error::SymlinkNotOwned { path, owner: OTHER_UID, .. } if *path == link),
        "{err}"
    );
    assert!(!real.join("admin.sock").exists());
}

#[test]
fn replaces_a_stale_socket_and_refuses_a_live_one_or_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("sock/admin.sock");
    let listener = bind(&socket, Access::Owner).unwrap();
    let err = bind(&socket, Access::Owner).unwrap_err();
    assert!(matches!(err, Error::SocketInUse { .. }), "{err}");
    UnixStream::connect(&socket).unwrap();

    drop(listener);
    let listener = bind(&socket, Access::Owner).unwrap();
    UnixStream::connect(&socket).unwrap();
    drop(listener);

    let file = tmp.path().join("sock/file");
    fs::write(&file, b"data").unwrap();
    let err = bind(&file, Access::Owner).unwrap_err();
    assert!(matches!(err, Error::NotASocket { .. }), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"data");
}

#[test]
fn narrows_a_data_dir_others_can_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    mkdir(&data, 0o755);
    let dir = private_dir(&data).unwrap();
    assert_eq!(dir.mode(), 0o700);
    assert_eq!(mode(&data), 0o700);
}

#[test]
fn refuses_a_data_dir_others_can_write() {
    // Anyone could have planted files in it (a bundle to trust, say): narrowing would hide that.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    mkdir(&data, 0o777);
    let err = private_dir(&data).unwrap_err();
    assert!(matches!(err, Error::Writable { mode: 0o777, .. }), "{err}");
    assert_eq!(mode(&data), 0o777);
}

#[test]
fn refuses_a_data_dir_owned_by_another_user() {
    if !can_chown() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    mkdir(&data, 0o755);
    std::os::unix::fs::chown(&data, Some(OTHER_UID), None).unwrap();
    let err = private_dir(&data).unwrap_err();
    assert!(
        matches!(&err, Error::NotOwned { path, owner: OTHER_UID, .. } if *path == data),
        "{err}"
    );
    assert_eq!(mode(&data), 0o755, "not narrowed either");
}

#[test]
fn refuses_a_file_where_a_directory_should_be() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        private_dir(&file),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        bind(&file.join("api.sock"), Access::Everyone),
        Err(Error::NotADirectory { .. })
    ));
}

#[test]
fn checked_dir_keeps_a_trusted_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    mkdir(&dir, 0o750);
    assert_eq!(checked_dir(&dir, 0o700).unwrap().mode(), 0o750);
    assert_eq!(mode(&dir), 0o750);
}

#[test]
fn refuses_paths_that_name_no_directory_or_socket() {
    // Relative paths are tested in tests/process_wide.rs: the working directory is process-wide.
    let err = private_dir(Path::new("")).unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    let err = bind(Path::new("/"), Access::Owner).unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
}
