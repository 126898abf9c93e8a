//! A task token from the real `lanyard dev` (and its example policy) checked by PyJWT, a JWT
//! library nobody here wrote, the way a tool server that knows nothing of lanyard would: the
//! trust domain's JWKS, ES256, its own audience. The token is accepted, its extra claim is only
//! extra, a token for another tool is refused, and the token is refused after `exp`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lanyard_e2e::python::{ensure_python_packages, repo_root};
use lanyard_e2e::wait_for;
use lanyard_e2e::workload::{Dev, output_within};

/// How long one Python run may take.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// PyJWT's verdict: the claims, or what it printed on refusal.
fn pyjwt(bundle: &Path, audience: &str, token: &str) -> Result<serde_json::Value, String> {
    let out = output_within(
        Command::new("python3")
            .arg(repo_root().join("tests/python/validate_task_token.py"))
            .arg(bundle)
            .arg(audience)
            .arg(token),
        PROGRAM_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(serde_json::from_str(&stdout).unwrap())
    } else {
        assert_eq!(
            out.status.code(),
            Some(1),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Err(stdout)
    }
}

fn begin_task(dev: &Dev, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["task", "begin", "--output", "json"];
    all.extend(args);
    dev.workload_cli(&lanyard_e2e::lanyard_bin(), None, &all)
        .json()
}

#[test]
fn pyjwt_accepts_a_task_token_for_its_tool_until_it_expires() {
    ensure_python_packages("jwt, cryptography", "tests/python/requirements-jwt.txt");
    let dev = Dev::start();
    let bundle = dev.scratch().join("bundle.json");
    std::fs::write(
        &bundle,
        dev.admin(&["bundle", "show", "--format", "spiffe"]).ok(),
    )
    .unwrap();

    let granted = begin_task(
        &dev,
        &[
            "--audience",
            "tickets",
            "--op",
            "read",
            "--purpose",
            "triage",
        ],
    );
    let token = granted["token"].as_str().unwrap();
    let task = &granted["task"];
    let claims = pyjwt(&bundle, "tickets", token).expect("PyJWT refused the token");
    assert_eq!(claims["sub"], task["spiffe_id"]);
    assert_eq!(claims["aud"], serde_json::json!(["tickets"]));
    assert_eq!(claims["lanyard"]["txn"], task["id"]);
    assert_eq!(claims["lanyard"]["ops"], serde_json::json!(["read"]));
    assert_eq!(claims["lanyard"]["purpose"], "triage");
    assert_eq!(claims["jti"], task["token_id"]);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    // The example policy's @max_ttl("5m") caps the default (the longest allowed).
    assert_eq!(lifetime, 300);

    // A tool checks its own audience: the token is no good for another.
    let other = pyjwt(&bundle, "payroll", token).unwrap_err();
    assert!(other.starts_with("invalid:"), "{other}");

    // A one-second task: accepted, then refused once `exp` has passed.
    let short = begin_task(
        &dev,
        &["--audience", "tickets", "--op", "list", "--ttl", "1s"],
    );
    let short = short["token"].as_str().unwrap().to_owned();
    let verdict = wait_for(
        "PyJWT to refuse the expired task token",
        Duration::from_secs(20),
        || pyjwt(&bundle, "tickets", &short).err(),
    );
    assert_eq!(verdict, "expired");
}
