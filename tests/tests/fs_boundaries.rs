//! Socket and data directories: a server or agent refuses a socket directory that another user
//! owns or can write into, and exits with one clear line instead of serving there; a server's
//! data directory that others could read is narrowed to 0700, one owned by another user refused.
//!
//! The cases that chown need root (CI runs as root); as another user they say so and pass.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lanyard_e2e::{lanyard, lanyard_bin, wait_for};

/// Another user's uid (`nobody`).
const OTHER_UID: u32 = 65534;
/// How long a process may take to start, or to refuse to.
const PATIENCE: Duration = Duration::from_secs(60);

/// A child process that is killed if the test ends before it does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a process that stopped by itself left behind.
struct Exited {
    success: bool,
    stderr: String,
}

impl Exited {
    /// The one `error:` line on stderr (logs may precede it).
    #[track_caller]
    fn error_line(&self) -> &str {
        assert!(!self.success, "should have failed:\n{}", self.stderr);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line expected:\n{}", self.stderr);
        errors[0]
    }
}

fn spawn(args: &[&std::ffi::OsStr]) -> Running {
    Running(
        Command::new(lanyard_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lanyard"),
    )
}

/// Runs `lanyard <args>`, expecting it to stop by itself; a process that keeps running is killed
/// and fails the test.
fn run_to_exit(args: &[&std::ffi::OsStr]) -> Exited {
    let mut child = spawn(args);
    let status = wait_for("lanyard to exit", PATIENCE, || child.0.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    Exited {
        success: status.success(),
        stderr,
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_to_other(path: &Path) {
    std::os::unix::fs::chown(path, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn server_args<'a>(data_dir: &'a Path, admin_socket: &'a Path) -> Vec<&'a std::ffi::OsStr> {
    [
        "server",
        "run",
        "--trust-domain",
        "example.org",
        "--bind",
        "127.0.0.1:0",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .chain([
        std::ffi::OsStr::new("--data-dir"),
        data_dir.as_os_str(),
        std::ffi::OsStr::new("--admin-socket"),
        admin_socket.as_os_str(),
    ])
    .collect()
}

/// An agent that would attest to nothing: it must fail at its socket, before it needs a server.
fn agent_args<'a>(data_dir: &'a Path, socket: &'a Path) -> Vec<&'a std::ffi::OsStr> {
    [
        "agent",
        "run",
        "--trust-domain",
        "example.org",
        "--server",
        "127.0.0.1:1",
        "--insecure-bootstrap",
    ]
    .iter()
    .map(std::ffi::OsStr::new)
    .chain([
        std::ffi::OsStr::new("--data-dir"),
        data_dir.as_os_str(),
        std::ffi::OsStr::new("--socket"),
        socket.as_os_str(),
    ])
    .collect()
}

#[track_caller]
fn assert_refused(exited: &Exited, dir: &Path, why: &str, socket: &Path) {
    let line = exited.error_line();
    let shown = format!("refusing {}", dir.display());
    assert!(line.contains(&shown), "expected {shown:?} in {line:?}");
    assert!(line.contains(why), "expected {why:?} in {line:?}");
    assert!(
        std::fs::symlink_metadata(socket).is_err(),
        "{} must not exist after a refusal",
        socket.display()
    );
}

#[test]
fn server_refuses_an_admin_socket_dir_others_can_write() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    mkdir(&open, 0o777);
    let socket = open.join("admin.sock");
    let exited = run_to_exit(&server_args(&tmp.path().join("data"), &socket));
    assert_refused(&exited, &open, "group or others can write", &socket);
    assert_eq!(mode(&open), 0o777, "a refused directory is left as it was");
}

#[test]
fn server_refuses_an_admin_socket_dir_owned_by_another_user() {
    if !is_root() {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    mkdir(&theirs, 0o755);
    chown_to_other(&theirs);
    let socket = theirs.join("admin.sock");
    let exited = run_to_exit(&server_args(&tmp.path().join("data"), &socket));
    assert_refused(
        &exited,
        &theirs,
        &format!("owned by uid {OTHER_UID}, not by this process"),
        &socket,
    );
}

#[test]
fn server_refuses_a_data_dir_owned_by_another_user() {
    if !is_root() {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    mkdir(&data, 0o700);
    chown_to_other(&data);
    let socket = tmp.path().join("admin.sock");
    let exited = run_to_exit(&server_args(&data, &socket));
    assert_refused(
        &exited,
        &data,
        &format!("owned by uid {OTHER_UID}, not by this process"),
        &socket,
    );
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

#[test]
fn server_narrows_a_wide_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    mkdir(&data, 0o755);
    let socket = tmp.path().join("admin.sock");
    let mut server = spawn(&server_args(&data, &socket));
    wait_for("the server to become healthy", PATIENCE, || {
        if let Some(status) = server.0.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut server.0.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            panic!("server exited with {status}:\n{stderr}");
        }
        let out = lanyard([
            std::ffi::OsStr::new("server"),
            std::ffi::OsStr::new("healthcheck"),
            std::ffi::OsStr::new("--admin-socket"),
            socket.as_os_str(),
        ]);
        out.success.then_some(())
    });
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&socket), 0o600);
}

#[test]
fn agent_refuses_a_socket_dir_others_can_write() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    mkdir(&open, 0o775);
    let socket = open.join("api.sock");
    let exited = run_to_exit(&agent_args(&tmp.path().join("data"), &socket));
    assert_refused(&exited, &open, "group or others can write", &socket);
}

#[test]
fn agent_refuses_a_socket_dir_owned_by_another_user() {
    if !is_root() {
        eprintln!("skipped: chown to another uid needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    mkdir(&theirs, 0o755);
    chown_to_other(&theirs);
    let socket = theirs.join("api.sock");
    let exited = run_to_exit(&agent_args(&tmp.path().join("data"), &socket));
    assert_refused(
        &exited,
        &theirs,
        &format!("owned by uid {OTHER_UID}, not by this process"),
        &socket,
    );
}
