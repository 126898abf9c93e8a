//! The executable-hash cache: a binary is hashed once, and again only when it changes.
//!
//! One test in its own binary on purpose: it writes an executable and then runs it, and a fork
//! by a concurrent test between those two steps would hold the file open for writing and make
//! the exec fail with "text file busy".

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use lanyard_attestation::workload::HashStats;
use lanyard_attestation::{PinnedProcess, UnixAttestor, UnixConfig, WorkloadAttestor};

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn spawn(path: &Path) -> Child {
    Command::new(path)
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn hash_selector(attestor: &UnixAttestor, child: &Child) -> String {
    let pin = PinnedProcess::open(child.id()).unwrap();
    let set = attestor.attest(&pin).unwrap();
    pin.verify().unwrap();
    let hashes: Vec<String> = set
        .iter()
        .filter_map(|s| s.value().strip_prefix("sha256:").map(str::to_owned))
        .collect();
    assert_eq!(hashes.len(), 1, "{set:?}");
    hashes.into_iter().next().unwrap()
}

#[test]
fn hashed_once_until_the_binary_changes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("sleep");
    let sleep = Command::new("sh")
        .args(["-c", "command -v sleep"])
        .output()
        .unwrap();
    let sleep = String::from_utf8(sleep.stdout).unwrap();
    std::fs::copy(sleep.trim(), &exe).unwrap();

    let attestor = UnixAttestor::new(UnixConfig {
        exe_sha256: true,
        ..UnixConfig::default()
    });

    let mut child = spawn(&exe);
    let first = hash_selector(&attestor, &child);
    assert_eq!(first, sha256sum(&exe));
    assert_eq!(
        attestor.hash_stats(),
        HashStats {
            computed: 1,
            cache_hits: 0
        }
    );

    // Unchanged binary, same process and a second process: answered from the cache.
    assert_eq!(hash_selector(&attestor, &child), first);
    let mut other = spawn(&exe);
    assert_eq!(hash_selector(&attestor, &other), first);
    assert_eq!(
        attestor.hash_stats(),
        HashStats {
            computed: 1,
            cache_hits: 2
        }
    );
    for c in [&mut child, &mut other] {
        c.kill().unwrap();
        c.wait().unwrap();
    }

    // Append a byte (an ELF file runs the same with trailing data): new size, mtime and ctime.
    let mut file = std::fs::OpenOptions::new().append(true).open(&exe).unwrap();
    file.write_all(b"\0").unwrap();
    drop(file);
    let mut child = spawn(&exe);
    let second = hash_selector(&attestor, &child);
    assert_ne!(second, first);
    assert_eq!(second, sha256sum(&exe));
    assert_eq!(
        attestor.hash_stats(),
        HashStats {
            computed: 2,
            cache_hits: 2
        }
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
