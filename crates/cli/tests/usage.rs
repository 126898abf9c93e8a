//! The binary's own smoke tests. Having an integration test here also makes `cargo test
//! --workspace` build `target/<profile>/lanyard`, which the end-to-end tests in `tests/` start.

use std::process::Command;

fn lanyard(args: &[&str]) -> std::process::Output {
    match Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("cannot run lanyard: {e}"),
    }
}

#[test]
fn version_and_help_work() {
    let version = lanyard(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("lanyard "));
    let help = lanyard(&["entry", "create", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--parent-id",
        "--spiffe-id",
        "--selector",
        "--x509-ttl",
        "--jwt-ttl",
        "--dns",
        "--federates-with",
        "--hint",
        "--admin",
        "--downstream",
        "--admin-socket",
        "--output",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let out = lanyard(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
