//! Python packages for the interop tests that drive lanyard with Python libraries nobody here
//! wrote (grpcio, PyJWT): installed with pip, pinned, only when they do not import already.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::workload::output_within;

/// How long one import probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long pip may take on a fresh machine.
const PIP_TIMEOUT: Duration = Duration::from_secs(300);

/// The repository's root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Makes sure `python3 -c "import <modules>"` works, installing `requirements` (a pip
/// requirements file, relative to the repository root) if it does not. Panics with pip's
/// output if that fails: the test cannot run.
pub fn ensure_python_packages(modules: &str, requirements: &str) {
    let probe = || {
        output_within(
            Command::new("python3").args(["-c", &format!("import {modules}")]),
            PROBE_TIMEOUT,
        )
    };
    if probe().status.success() {
        return;
    }
    let install = output_within(
        // flock: another test binary may be installing packages at the same moment.
        Command::new("flock")
            .args([
                "/tmp/lanyard-pip-install.lock",
                "python3",
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(repo_root().join(requirements)),
        PIP_TIMEOUT,
    );
    assert!(
        install.status.success(),
        "pip install -r {requirements} failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let after = probe();
    assert!(
        after.status.success(),
        "`import {modules}` still fails after pip: {}",
        String::from_utf8_lossy(&after.stderr)
    );
}
