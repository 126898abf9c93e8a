//! The `unix` attestor on real processes, checked against what other tools say (`id`, `readlink`,
//! `sha256sum`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use lanyard_attestation::{PinnedProcess, UnixAttestor, UnixConfig, WorkloadAttestor};
use lanyard_core::{Selector, SelectorSet};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(out.status.success(), "{program} {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn values(set: &SelectorSet, prefix: &str) -> BTreeSet<String> {
    set.iter()
        .filter(|s| s.kind() == "unix")
        .filter_map(|s| s.value().strip_prefix(prefix).map(str::to_owned))
        .collect()
}

fn sel(s: &str) -> Selector {
    s.parse().unwrap()
}

#[test]
fn attests_the_test_process_as_the_os_sees_it() {
    let pid = std::process::id();
    let attestor = UnixAttestor::new(UnixConfig {
        exe_path: true,
        exe_sha256: true,
        ..UnixConfig::default()
    });
    let pin = PinnedProcess::open(pid).unwrap();
    let set = attestor.attest(&pin).unwrap();
    pin.verify().unwrap();

    let uid = run("id", &["-u"]);
    let gid = run("id", &["-g"]);
    assert!(set.contains(&sel(&format!("unix:uid:{uid}"))), "{set:?}");
    assert!(set.contains(&sel(&format!("unix:gid:{gid}"))), "{set:?}");
    assert!(
        set.contains(&sel(&format!("unix:user:{}", run("id", &["-un"])))),
        "{set:?}"
    );
    assert!(
        set.contains(&sel(&format!("unix:group:{}", run("id", &["-gn"])))),
        "{set:?}"
    );
    assert_eq!(values(&set, "uid:").len(), 1);
    assert_eq!(values(&set, "gid:").len(), 1);

    // `id -G` lists the effective gid and the supplementary groups.
    let mut expected: BTreeSet<String> = run("id", &["-G"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut got = values(&set, "supplementary_gid:");
    got.insert(gid.clone());
    expected.insert(gid);
    assert_eq!(got, expected);

    let exe = run("readlink", &[&format!("/proc/{pid}/exe")]);
    assert_eq!(values(&set, "path:"), BTreeSet::from([exe.clone()]));

    let sha = run("sha256sum", &[&exe]);
    let sha = sha.split_whitespace().next().unwrap().to_owned();
    assert_eq!(values(&set, "sha256:"), BTreeSet::from([sha]));
}

#[test]
fn path_and_hash_only_when_asked() {
    let attestor = UnixAttestor::default();
    let pin = PinnedProcess::open(std::process::id()).unwrap();
    let set = attestor.attest(&pin).unwrap();
    assert!(values(&set, "path:").is_empty());
    assert!(values(&set, "sha256:").is_empty());
    assert_eq!(attestor.hash_stats().computed, 0);

    attestor.set_exe_path(true);
    attestor.set_exe_sha256(true);
    let set = attestor.attest(&pin).unwrap();
    assert_eq!(values(&set, "path:").len(), 1);
    assert_eq!(values(&set, "sha256:").len(), 1);
}

#[test]
fn the_hash_size_limit_is_enforced() {
    let attestor = UnixAttestor::new(UnixConfig {
        exe_sha256: true,
        max_hash_size: 1024,
        ..UnixConfig::default()
    });
    let pin = PinnedProcess::open(std::process::id()).unwrap();
    let err = attestor.attest(&pin).unwrap_err();
    assert!(
        matches!(
            err,
            lanyard_attestation::AttestError::ExecutableTooLarge { limit: 1024, .. }
        ),
        "{err:?}"
    );
}

#[test]
fn names_come_from_the_configured_files() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let group = dir.path().join("group");
    let uid = run("id", &["-u"]);
    let gid = run("id", &["-g"]);
    std::fs::write(
        &passwd,
        format!("# test\nsomeone:x:{uid}:{gid}:gecos:/home:/bin/sh\n"),
    )
    .unwrap();
    std::fs::write(&group, format!("somegroup:x:{gid}:\n")).unwrap();
    let attestor = UnixAttestor::new(UnixConfig {
        passwd_file: passwd,
        group_file: group,
        ..UnixConfig::default()
    });
    let pin = PinnedProcess::open(std::process::id()).unwrap();
    let set = attestor.attest(&pin).unwrap();
    assert_eq!(
        values(&set, "user:"),
        BTreeSet::from(["someone".to_owned()])
    );
    assert_eq!(
        values(&set, "group:"),
        BTreeSet::from(["somegroup".to_owned()])
    );

    // Missing account files give no names, not an error.
    let attestor = UnixAttestor::new(UnixConfig {
        passwd_file: dir.path().join("absent"),
        group_file: dir.path().join("absent"),
        ..UnixConfig::default()
    });
    let set = attestor.attest(&pin).unwrap();
    assert!(values(&set, "user:").is_empty());
    assert!(set.contains(&sel(&format!("unix:uid:{uid}"))));
}

/// Another user's process (needs root to switch ids with `setpriv`).
#[test]
fn attests_a_process_of_another_user() {
    if run("id", &["-u"]) != "0" {
        eprintln!("skipped: needs root to start a process as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let group = dir.path().join("group");
    std::fs::write(&passwd, "nobody:x:65534:65534::/:/bin/false\n").unwrap();
    std::fs::write(&group, "nogroup:x:65534:\nextra:x:4242:\n").unwrap();
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--groups=4242",
            "--",
            "/bin/sh",
            "-c",
            "echo ready; exec sleep 1000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv");
    // The shell prints once it runs as the new user.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    let attestor = UnixAttestor::new(UnixConfig {
        passwd_file: passwd,
        group_file: group,
        ..UnixConfig::default()
    });
    let pin = PinnedProcess::open(child.id()).unwrap();
    let set = attestor.attest(&pin).unwrap();
    pin.verify().unwrap();
    let expected: SelectorSet = [
        "unix:uid:65534",
        "unix:user:nobody",
        "unix:gid:65534",
        "unix:group:nogroup",
        "unix:supplementary_gid:4242",
        "unix:supplementary_group:extra",
    ]
    .into_iter()
    .map(sel)
    .collect();
    assert_eq!(set, expected);
    child.kill().unwrap();
    child.wait().unwrap();
}
