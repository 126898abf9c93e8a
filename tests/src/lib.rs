//! A harness for end-to-end tests: it starts real `lanyard` processes in temporary directories and
//! talks to them only through their sockets and the `lanyard` CLI.
//!
//! The binary is the one cargo built next to the test executable (`target/<profile>/lanyard`);
//! `cargo test --workspace` builds it because the `lanyard` package has integration tests of its
//! own. Set `LANYARD_BIN` to test another build.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a failure is a test failure"
)]

pub mod agent_process;
pub mod bench;
pub mod node_client;
pub mod postgres;
pub mod python;
pub mod running;
pub mod tasks;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `lanyard` binary under test.
pub fn lanyard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LANYARD_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/lanyard; a benchmark binary
    // (target/<profile>/<bin>) has it beside itself.
    let exe = std::env::current_exe().expect("test executable path");
    let beside = exe.parent().map(|dir| dir.join("lanyard"));
    if let Some(bin) = beside.filter(|b| b.exists() && b != &exe) {
        return bin;
    }
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("lanyard");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p lanyard` or run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// The result of one CLI call.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    fn from_output(output: Output) -> Self {
        Self {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.success,
            "command failed ({:?}):\n{}",
            self.code, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure with one line on stderr and returns that line.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert!(
            !self.success,
            "command should have failed; stdout:\n{}",
            self.stdout
        );
        let line = self.stderr.trim_end();
        assert!(!line.is_empty(), "a failure must say why on stderr");
        line
    }

    /// Parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `lanyard <args>` to completion.
pub fn lanyard<I, S>(args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(lanyard_bin())
        .args(args)
        .stdin(Stdio::null())
        .env_remove("LANYARD_ADMIN_SOCKET")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .output()
        .expect("run lanyard");
    CliOutput::from_output(output)
}

/// Calls `probe` until it returns `Some`, for at most `timeout`, with a short backoff between tries.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// When a `lanyard` log line was written: its leading RFC 3339 UTC timestamp
/// (`2026-12-06T19:51:54.123456Z  INFO …`, tracing's default), so that a test or benchmark can
/// time events from the processes' own clock instead of from when it happened to read the log.
pub fn log_line_time(line: &str) -> Option<std::time::SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(str::parse::<i64>);
    let (year, month, day) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let mut hms = time.split(':');
    let hours: u64 = hms.next()?.parse().ok()?;
    let minutes: u64 = hms.next()?.parse().ok()?;
    let text = hms.next()?;
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: u64 = seconds.parse().ok()?;
    // Up to nanoseconds: "5" is 500 ms, "123456" is 123.456 ms.
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let whole = days * 86_400 + hours * 3600 + minutes * 60 + seconds;
    Some(std::time::UNIX_EPOCH + Duration::new(whole, nanos))
}

/// A `lanyard server run` process with its own data directory and admin socket.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    pub admin_socket: PathBuf,
    pub trust_domain: String,
    extra_args: Vec<String>,
    /// The node API address to bind: a free port at first, then the same one on restarts.
    node_bind: Option<String>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on SQLite in a new temporary directory and waits until it is healthy.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra `server run` flags.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_full("example.org", extra_args)
    }

    /// Like [`start`](Self::start), for another trust domain.
    pub fn start_in_trust_domain(trust_domain: &str) -> Self {
        Self::start_full(trust_domain, &[])
    }

    fn start_full(trust_domain: &str, extra_args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let mut server = Self {
            child: None,
            admin_socket: dir.join("admin.sock"),
            dir,
            trust_domain: trust_domain.to_owned(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            node_bind: None,
            log: PathBuf::new(),
            _tmp: Some(tmp),
        };
        server.log = server.dir.join("server.log");
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = Command::new(lanyard_bin())
            .args([
                "server",
                "run",
                "--trust-domain",
                &self.trust_domain,
                "--data-dir",
            ])
            .arg(self.dir.join("data"))
            .arg("--admin-socket")
            .arg(&self.admin_socket)
            .arg("--bind")
            .arg(self.node_bind.as_deref().unwrap_or("127.0.0.1:0"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start lanyard server");
        self.child = Some(child);
        self.wait_healthy();
        // A restart keeps the node API's port, so that agents find the server again.
        if self.node_bind.is_none() {
            self.node_bind = Some(self.node_addr().to_string());
        }
    }

    /// Waits until `lanyard server healthcheck` succeeds.
    pub fn wait_healthy(&mut self) {
        let socket = self.admin_socket.clone();
        let log = self.log.clone();
        let child = self.child.as_mut().expect("running");
        wait_for(
            "the server to become healthy",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "server exited with {status} during start:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                let out = lanyard(
                    ["server", "healthcheck", "--admin-socket"]
                        .map(Into::into)
                        .into_iter()
                        .chain([socket.clone().into_os_string()]),
                );
                out.success.then_some(())
            },
        );
    }

    /// Runs an admin command against this server: `lanyard <args> --admin-socket <socket>`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        all.push("--admin-socket".into());
        all.push(self.admin_socket.clone().into_os_string());
        lanyard(all)
    }

    /// The server's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the server with SIGKILL: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts a server that was killed (or terminated) again, on the same data directory and
    /// node API port, and waits until it is healthy; the time it was down is the caller's.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// The node API's address, as the server logged it (start it with `--bind 127.0.0.1:0`).
    pub fn node_addr(&self) -> std::net::SocketAddr {
        self.logged_addr("node API listening")
    }

    /// The `addr=` of the first log line containing `marker`.
    pub fn logged_addr(&self, marker: &str) -> std::net::SocketAddr {
        wait_for(marker, Duration::from_secs(30), || {
            let log = self.log();
            let line = log.lines().rev().find(|l| l.contains(marker))?;
            line.split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// This trust domain's bundle, as `lanyard bundle show --format spiffe` prints it.
    pub fn bundle(&self) -> lanyard_core::Bundle {
        let json = self.cli(&["bundle", "show", "--format", "spiffe"]);
        node_client::parse_bundle(&self.trust_domain, json.ok()).expect("the server's bundle")
    }

    /// A new join token from `lanyard token generate <args>`.
    pub fn join_token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "generate", "--output", "json"];
        all.extend_from_slice(args);
        self.cli(&all).json()["token"]
            .as_str()
            .expect("a token in the JSON output")
            .to_owned()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::log_line_time;

    #[test]
    fn log_line_times_are_read_from_the_timestamp() {
        let at = |line: &str| log_line_time(line).map(|t| t.duration_since(UNIX_EPOCH).unwrap());
        assert_eq!(
            at("2026-12-06T19:51:54.123456Z  INFO lanyard_agent::sync: entry stream open"),
            Some(Duration::from_secs(1_796_586_714) + Duration::from_micros(123_456))
        );
        assert_eq!(
            at("2000-02-29T00:00:00Z x"),
            Some(Duration::from_secs(951_782_400))
        );
        assert_eq!(
            at("1970-01-01T00:00:01.5Z"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(at("no timestamp here"), None);
        assert_eq!(at(""), None);
    }
}
