//! Helpers for Workload API end-to-end tests: a `lanyard dev` process (server and agent in one
//! process, with an entry for the current user) in a temporary directory, and small tools the
//! tests share (registering entries for an executable, placing a program at a second path, a free
//! port).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{CliOutput, lanyard, lanyard_bin, wait_for};

/// The SPIFFE ID `lanyard dev` gives its agent: the parent of every entry a test registers.
pub const DEV_AGENT_ID: &str = "spiffe://example.org/lanyard/agent/dev";

/// How long `lanyard dev` may take to serve its first SVID.
const DEV_START: Duration = Duration::from_secs(60);

/// A running `lanyard dev --dir <tmp>/state`; killed when dropped.
#[derive(Debug)]
pub struct Dev {
    child: Option<Child>,
    /// The state directory (`--dir`).
    pub dir: PathBuf,
    /// The agent's Workload API socket.
    pub socket: PathBuf,
    /// The server's admin socket.
    pub admin_socket: PathBuf,
    log: PathBuf,
    tmp: tempfile::TempDir,
}

impl Dev {
    /// Starts `lanyard dev` in a new temporary directory and waits until `lanyard x509 fetch`
    /// (run as this user) gets the user's SVID.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let log = tmp.path().join("dev.log");
        let out = std::fs::File::create(&log).expect("dev log");
        let child = Command::new(lanyard_bin())
            .args(["dev", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dev log"))
            .stderr(out)
            .env_remove("LANYARD_ADMIN_SOCKET")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .spawn()
            .expect("start lanyard dev");
        let mut dev = Self {
            child: Some(child),
            socket: dir.join("agent.sock"),
            admin_socket: dir.join("admin.sock"),
            dir,
            log,
            tmp,
        };
        dev.wait_serving();
        dev
    }

    fn wait_serving(&mut self) {
        let socket = self.socket.clone();
        let log = self.log.clone();
        let child = self.child.as_mut().expect("running");
        wait_for("lanyard dev to serve an SVID", DEV_START, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "lanyard dev exited with {status} during start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let out = lanyard([
                "x509".as_ref(),
                "fetch".as_ref(),
                "--socket".as_ref(),
                socket.as_os_str(),
            ]);
            out.success.then_some(())
        });
    }

    /// A scratch directory that lives as long as this process.
    pub fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    /// The Workload API endpoint as a SPIFFE client wants it: `unix:///…/agent.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The process id of `lanyard dev`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether `lanyard dev` is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs an admin command: `lanyard <args> --admin-socket <admin socket>`.
    pub fn admin(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        all.push("--admin-socket".into());
        all.push(self.admin_socket.clone().into_os_string());
        lanyard(all)
    }

    /// Registers `spiffe_id` under the dev agent for callers with all of `selectors`; `extra` are
    /// more `entry create` flags (e.g. `--x509-ttl 10s`).
    pub fn create_entry(&self, spiffe_id: &str, selectors: &[&str], extra: &[&str]) {
        let mut args = vec![
            "entry",
            "create",
            "--parent-id",
            DEV_AGENT_ID,
            "--spiffe-id",
            spiffe_id,
        ];
        for selector in selectors {
            args.extend(["--selector", selector]);
        }
        args.extend(extra);
        self.admin(&args).ok();
    }

    /// Runs `program <args> --socket <socket>` (a `lanyard` binary, possibly a copy) to
    /// completion, optionally as another user through `setpriv`.
    pub fn workload_cli(&self, program: &Path, run_as: Option<u32>, args: &[&str]) -> CliOutput {
        let mut command = match run_as {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        let output = command
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .output()
            .expect("run a workload");
        CliOutput::from_output(output)
    }

    /// The SPIFFE IDs `program x509 fetch` gets, or `Err(stderr)` if it fails.
    pub fn fetched_ids(&self, program: &Path, run_as: Option<u32>) -> Result<Vec<String>, String> {
        let out = self.workload_cli(program, run_as, &["x509", "fetch", "--output", "json"]);
        if !out.success {
            return Err(out.stderr);
        }
        let json: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("x509 fetch printed no JSON ({e}):\n{}", out.stdout));
        Ok(json["svids"]
            .as_array()
            .expect("svids")
            .iter()
            .map(|s| s["spiffe_id"].as_str().expect("spiffe_id").to_owned())
            .collect())
    }

    /// Waits until `program x509 fetch` gets exactly `ids` (in the agent's order: by SPIFFE ID),
    /// e.g. after registering an entry: entries reach the agent by push, then SVIDs are minted.
    #[track_caller]
    pub fn wait_for_ids(&self, program: &Path, run_as: Option<u32>, ids: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_millis(10);
        loop {
            let got = self.fetched_ids(program, run_as);
            if got.as_ref().is_ok_and(|got| got == ids) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} (as {run_as:?}) did not get {ids:?} within 30 s; last: {got:?}",
                program.display()
            );
            std::thread::park_timeout(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The log of `lanyard dev` so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lets other users reach the Workload API socket: `lanyard dev` keeps it in its state
    /// directory, which it creates 0700 (as the temporary directory is). The socket itself is
    /// 0777, as the agent binds it: attestation, not file modes, guards it.
    pub fn open_socket_to_other_users(&self) {
        use std::os::unix::fs::PermissionsExt as _;
        for dir in [self.tmp.path(), self.dir.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod 0755");
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Places the `lanyard` binary at `dir/name` (a hard link, or a copy across file systems) and
/// returns that path: a second executable path for `unix:path` selectors. `dir` is made 0755 so
/// that other users can run it.
pub fn lanyard_at(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.join(name);
    let source = lanyard_bin();
    if std::fs::hard_link(&source, &path).is_err() {
        std::fs::copy(&source, &path).expect("copy lanyard");
    }
    path
}

/// A loopback port that was free a moment ago (for programs that cannot report the port they
/// bound, like `openssl s_server`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `command` to completion with its stdout and stderr captured (stdin closed); kills it and
/// panics if it takes longer than `timeout`.
#[track_caller]
pub fn output_within(command: &mut Command, timeout: Duration) -> std::process::Output {
    use std::io::Read as _;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {timeout:?}");
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
