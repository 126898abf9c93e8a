//! The `cgroup`/`systemd` attestor on this process's real `/proc/self/cgroup`, and on crafted
//! cgroup v1, v2 and hybrid content.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use lanyard_attestation::workload::{ProcParseError, cgroup_selectors};
use lanyard_attestation::{CgroupAttestor, PinnedProcess, WorkloadAttestor};
use lanyard_core::{Selector, SelectorSet};

fn set(selectors: &[&str]) -> SelectorSet {
    selectors
        .iter()
        .map(|s| s.parse::<Selector>().unwrap())
        .collect()
}

#[test]
fn attests_the_test_process() {
    let pin = PinnedProcess::open(std::process::id()).unwrap();
    let got = CgroupAttestor.attest(&pin).unwrap();
    pin.verify().unwrap();

    let content = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let unified = content.lines().find_map(|l| l.strip_prefix("0::"));
    let systemd = content
        .lines()
        .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p));
    match unified.or(systemd) {
        Some(path) => assert!(
            got.contains(&format!("cgroup:path:{path}").parse().unwrap()),
            "{got:?} for {content:?}"
        ),
        None => assert!(got.is_empty()),
    }
}

#[test]
fn cgroup_v2_service() {
    assert_eq!(
        cgroup_selectors(b"0::/system.slice/nginx.service\n").unwrap(),
        set(&[
            "cgroup:path:/system.slice/nginx.service",
            "systemd:unit:nginx.service",
            "systemd:id:nginx.service",
        ])
    );
}

#[test]
fn cgroup_v2_user_service_is_the_user_manager() {
    // Units under user@.service are named by the user: never trusted as system units.
    assert_eq!(
        cgroup_selectors(
            b"0::/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service\n"
        )
        .unwrap(),
        set(&[
            "cgroup:path:/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service",
            "systemd:unit:user@1000.service",
            "systemd:id:user@1000.service",
        ])
    );
}

#[test]
fn cgroup_v1_only() {
    let content = b"11:memory:/system.slice/postgres.service\n\
                    5:cpu,cpuacct:/system.slice/postgres.service\n\
                    1:name=systemd:/system.slice/postgres.service\n";
    assert_eq!(
        cgroup_selectors(content).unwrap(),
        set(&[
            "cgroup:path:/system.slice/postgres.service",
            "systemd:unit:postgres.service",
            "systemd:id:postgres.service",
        ])
    );
}

#[test]
fn cgroup_hybrid_prefers_the_unified_line() {
    let content = b"9:name=systemd:/system.slice/a.service\n\
                    4:memory:/elsewhere\n\
                    0::/system.slice/a.service\n";
    assert_eq!(
        cgroup_selectors(content).unwrap(),
        set(&[
            "cgroup:path:/system.slice/a.service",
            "systemd:unit:a.service",
            "systemd:id:a.service",
        ])
    );
}

#[test]
fn cgroup_without_systemd() {
    assert_eq!(
        cgroup_selectors(b"0::/docker/0123abcd\n").unwrap(),
        set(&["cgroup:path:/docker/0123abcd"])
    );
    assert_eq!(
        cgroup_selectors(b"0::/\n").unwrap(),
        set(&["cgroup:path:/"])
    );
    // v1 without systemd's hierarchy: no path anyone could name reliably.
    assert_eq!(
        cgroup_selectors(b"4:memory:/process_api/x\n").unwrap(),
        SelectorSet::new()
    );
}

#[test]
fn cgroup_paths_that_cannot_be_selectors_give_none() {
    assert_eq!(
        cgroup_selectors(b"0::/system.slice/\xff.service\n").unwrap(),
        SelectorSet::new()
    );
    let long = format!("0::/{}\n", "a".repeat(2000));
    assert_eq!(
        cgroup_selectors(long.as_bytes()).unwrap(),
        SelectorSet::new()
    );
}

#[test]
fn malformed_cgroup_content_is_refused() {
    assert_eq!(
        cgroup_selectors(b"garbage"),
        Err(ProcParseError::CgroupLine { line: 1 })
    );
    assert_eq!(
        cgroup_selectors(b"0::/\nnot a line\n"),
        Err(ProcParseError::CgroupLine { line: 2 })
    );
}
