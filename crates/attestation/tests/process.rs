//! The pid-reuse guard against real processes: a child that exits, a zombie, a pid given to
//! another process (simulated by a start-time mismatch, and for real when the test may steer the
//! kernel's pid allocator).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};

use lanyard_attestation::workload::check_same_process;
use lanyard_attestation::{
    AttestError, CgroupAttestor, PinnedProcess, UnixAttestor, attest_process,
};
use rustix::event::{PollFd, PollFlags, poll};

/// A child that lives until killed.
fn sleeper() -> Child {
    Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

/// Blocks until the pinned process has exited (its pidfd polls readable): waiting for the event,
/// not for a guessed time.
fn wait_for_exit(pin: &PinnedProcess) {
    let mut fds = [PollFd::from_borrowed_fd(pin.pidfd(), PollFlags::IN)];
    loop {
        match poll(&mut fds, None) {
            Ok(n) if n > 0 => return,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

#[test]
fn a_live_process_verifies() {
    let mut child = sleeper();
    let pin = PinnedProcess::open(child.id()).unwrap();
    assert_eq!(pin.pid(), child.id());
    pin.verify().unwrap();
    let selectors = attest_process(&pin, &[&UnixAttestor::default(), &CgroupAttestor]).unwrap();
    assert!(!selectors.is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_exited_and_reaped_process_is_gone() {
    let mut child = sleeper();
    let pin = PinnedProcess::open(child.id()).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let err = pin.verify().unwrap_err();
    assert!(
        matches!(
            err,
            AttestError::ProcessGone { .. } | AttestError::PidReused { .. }
        ),
        "{err:?}"
    );
    // Reads through the pinned /proc directory fail too, rather than reaching a new process.
    let err = attest_process(&pin, &[&UnixAttestor::default()]).unwrap_err();
    assert!(matches!(err, AttestError::ProcessGone { .. }), "{err:?}");
}

#[test]
fn a_zombie_is_gone() {
    let mut child = sleeper();
    let pin = PinnedProcess::open(child.id()).unwrap();
    child.kill().unwrap();
    wait_for_exit(&pin);
    // Not reaped yet: /proc/<pid> still exists with the same start time, but the process is dead.
    let err = pin.verify().unwrap_err();
    assert!(matches!(err, AttestError::ProcessGone { .. }), "{err:?}");
    let err = attest_process(&pin, &[&UnixAttestor::default()]).unwrap_err();
    assert!(matches!(err, AttestError::ProcessGone { .. }), "{err:?}");
    child.wait().unwrap();
}

#[test]
fn pinning_a_reaped_pid_fails() {
    let mut child = sleeper();
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    match PinnedProcess::open(pid) {
        Err(AttestError::ProcessGone { pid: p }) => assert_eq!(p, pid),
        // The pid was handed to a new process already: then the pin is of that one, which is
        // what the caller must guard against by pinning at accept time (see the module docs).
        Ok(pin) => pin.verify().unwrap(),
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[test]
fn a_start_time_mismatch_is_pid_reuse() {
    let mut child = sleeper();
    let pin = PinnedProcess::open(child.id()).unwrap();
    check_same_process(pin.pid(), pin.start_time(), pin.pidfd()).unwrap();
    // What verify sees when /proc/<pid> now describes a process that started at another time.
    let err = check_same_process(pin.pid(), pin.start_time() + 1, pin.pidfd()).unwrap_err();
    assert!(matches!(err, AttestError::PidReused { .. }), "{err:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_dead_pidfd_with_another_process_on_the_pid_is_refused() {
    // The pidfd of an exited process checked against a live pid: the shape of a reuse.
    let mut first = sleeper();
    let pin = PinnedProcess::open(first.id()).unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = sleeper();
    let err = check_same_process(second.id(), pin.start_time(), pin.pidfd()).unwrap_err();
    assert!(
        matches!(
            err,
            AttestError::PidReused { .. } | AttestError::ProcessGone { .. }
        ),
        "{err:?}"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

/// Real pid reuse: steer the kernel to give a dead child's pid to a new child
/// (`/proc/sys/kernel/ns_last_pid`, which needs CAP_SYS_ADMIN). Other processes fork too, so
/// this tries a bounded number of times; where the pid allocator cannot be steered at all the
/// test says so and stops (the simulated tests above always run).
#[test]
fn a_really_reused_pid_is_refused() {
    const ATTEMPTS: usize = 50;
    let ns_last_pid = "/proc/sys/kernel/ns_last_pid";
    for _ in 0..ATTEMPTS {
        let mut first = sleeper();
        let pid = first.id();
        let pin = PinnedProcess::open(pid).unwrap();
        first.kill().unwrap();
        first.wait().unwrap();
        if std::fs::write(ns_last_pid, format!("{}", pid - 1)).is_err() {
            eprintln!("skipped: cannot write {ns_last_pid} (needs CAP_SYS_ADMIN)");
            return;
        }
        let mut second = sleeper();
        let reused = second.id() == pid;
        let result = pin.verify();
        let second_start = PinnedProcess::open(second.id()).map(|p| p.start_time());
        second.kill().unwrap();
        second.wait().unwrap();
        if !reused {
            continue;
        }
        let err = result.unwrap_err();
        eprintln!("pid {pid} reused: {err}");
        match second_start {
            // Start times are in clock ticks (10 ms): a new process in the same tick has the same
            // start time, and only the dead pidfd tells them apart.
            Ok(start) if start == pin.start_time() => {
                assert!(matches!(err, AttestError::ProcessGone { .. }), "{err:?}");
            }
            _ => assert!(matches!(err, AttestError::PidReused { .. }), "{err:?}"),
        }
        return;
    }
    eprintln!("skipped: the pid was never handed out again in {ATTEMPTS} attempts");
}

#[test]
fn from_pidfd_checks_the_pid() {
    let mut child = sleeper();
    let pid = child.id();
    let open = || -> OwnedFd {
        rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap()
    };
    let pin = PinnedProcess::from_pidfd(pid, open()).unwrap();
    pin.verify().unwrap();

    let err = PinnedProcess::from_pidfd(std::process::id(), open()).unwrap_err();
    assert!(
        matches!(err, AttestError::PidfdMismatch { actual, .. } if actual == i64::from(pid)),
        "{err:?}"
    );

    let not_a_pidfd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let err = PinnedProcess::from_pidfd(pid, not_a_pidfd).unwrap_err();
    assert!(matches!(err, AttestError::NotAPidfd { .. }), "{err:?}");

    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn invalid_pids_are_refused() {
    for pid in [0, u32::MAX, 1 << 31] {
        let err = PinnedProcess::open(pid).unwrap_err();
        assert!(
            matches!(err, AttestError::InvalidPid { pid: p } if p == pid),
            "{err:?}"
        );
    }
}

#[test]
fn credentials_must_match_the_socket() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = |field: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (uid, gid) = (effective("Uid:"), effective("Gid:"));
    let pid = std::process::id();

    let pin = PinnedProcess::open(pid)
        .unwrap()
        .with_peer_credentials(uid, gid);
    pin.verify().unwrap();
    lanyard_attestation::attest_peer(pid, uid, gid, &[&UnixAttestor::default()]).unwrap();

    // As if the caller had connected as another user and then exec'd something set-uid.
    let err = PinnedProcess::open(pid)
        .unwrap()
        .with_peer_credentials(uid.wrapping_add(1), gid)
        .verify()
        .unwrap_err();
    assert!(
        matches!(err, AttestError::CredentialsChanged { peer_uid, uid: u, .. }
            if peer_uid == uid.wrapping_add(1) && u == uid),
        "{err:?}"
    );
    let err = lanyard_attestation::attest_peer(pid, uid, gid.wrapping_add(1), &[&CgroupAttestor])
        .unwrap_err();
    assert!(
        matches!(err, AttestError::CredentialsChanged { .. }),
        "{err:?}"
    );
}
