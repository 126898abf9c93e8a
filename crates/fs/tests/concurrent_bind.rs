//! Binding sockets must not disturb files other threads create at the same time: an earlier
//! version changed the process-wide umask around `bind`, and a directory another thread made in
//! that instant came out 0777 (seen in CI as a refused "writable ancestor").
#![allow(clippy::unwrap_used, reason = "tests")]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lanyard_fs::{Access, bind};

#[test]
fn binding_leaves_the_modes_of_other_threads_files_alone() {
    let root = tempfile::tempdir().unwrap();
    let expected = 0o777 & !umask_before_any_bind();
    let stop = Arc::new(AtomicBool::new(false));
    let binder = {
        let stop = stop.clone();
        let dir = root.path().join("sockets");
        std::thread::spawn(move || {
            for i in 0..300 {
                let access = if i % 2 == 0 {
                    Access::Everyone
                } else {
                    Access::Owner
                };
                drop(bind(&dir.join(format!("s{i}.sock")), access).unwrap());
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let mut made = 0;
    while !stop.load(Ordering::SeqCst) {
        let dir = root.path().join(format!("d{made}"));
        std::fs::DirBuilder::new().create(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, expected, "directory {made} made while binding");
        made += 1;
    }
    binder.join().unwrap();
}

/// The process's umask, seen through the mode of a directory made before any bind.
fn umask_before_any_bind() -> u32 {
    let probe = tempfile::tempdir().unwrap();
    let dir = probe.path().join("probe");
    std::fs::DirBuilder::new().create(&dir).unwrap();
    0o777 & !(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777)
}
