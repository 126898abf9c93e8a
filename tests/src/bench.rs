//! Pieces shared by the load generators in `src/bin/` (`admin-load`, `node-load`): the server
//! process they start and measure, the admin client over its Unix socket, latency samples, the
//! table they print, and CPU and memory readings from `/proc`.
//!
//! These are benchmark helpers, not test assertions: every function returns an error instead of
//! panicking, and every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail, ensure};
use hyper_util::rt::TokioIo;
use lanyard_proto::admin::{self as pb, admin_client::AdminClient};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// The trust domain every load generator's server runs in.
pub const TRUST_DOMAIN: &str = "example.org";
/// Largest admin message the server accepts; a page or batch never needs more.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// No single call should take this long; if one does, the run is not worth finishing.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Linux exports CPU times in /proc in USER_HZ, which is 100 on every architecture it supports.
const USER_HZ: f64 = 100.0;

// --- randomness (sampling and names only; nothing secret) ---

/// splitmix64, seeded from the clock: enough to pick samples and make names unique.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        #[allow(
            clippy::cast_possible_truncation,
            reason = "any bits will do for a seed"
        )]
        Self(nanos as u64 ^ u64::from(std::process::id()).rotate_left(32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next_u64() % n64).unwrap_or(0)
    }

    /// `bytes` random bytes as lowercase hex.
    pub fn hex(&mut self, bytes: usize) -> String {
        (0..bytes.div_ceil(8))
            .map(|_| format!("{:016x}", self.next_u64()))
            .collect::<String>()
            .chars()
            .take(bytes * 2)
            .collect()
    }
}

// --- statistics and formatting ---

/// Latency samples.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Nearest-rank percentile; zero without samples.
    pub fn pct(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank between 1 and the number of samples"
        )]
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    /// `p50 / p99 (n = …)`.
    pub fn p50_p99(&self) -> String {
        format!(
            "{} / {} (n = {})",
            fmt_dur(self.pct(50.0)),
            fmt_dur(self.pct(99.0)),
            self.0.len()
        )
    }

    /// `p50 / p99 / max (n = …)`.
    pub fn p50_p99_max(&self) -> String {
        format!(
            "{} / {} / {} (n = {})",
            fmt_dur(self.pct(50.0)),
            fmt_dur(self.pct(99.0)),
            fmt_dur(self.max()),
            self.0.len()
        )
    }
}

/// A duration with three significant digits or so, in ms or s.
pub fn fmt_dur(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 1_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// `n` per second over `d`.
pub fn rate(n: usize, d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let n = n as f64;
    n / d.as_secs_f64().max(1e-9)
}

/// A rate such as `12.3 k entries/s` or `950 SVIDs/s`.
pub fn fmt_rate(r: f64, unit: &str) -> String {
    if r >= 10_000.0 {
        format!("{:.1} k {unit}/s", r / 1e3)
    } else {
        format!("{r:.0} {unit}/s")
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "memory sizes far below 2^52")]
    let m = kib as f64 / 1024.0;
    format!("{m:.1} MiB")
}

/// The figures of one run, in the order they are printed; each is echoed to stderr as it comes.
#[derive(Debug, Default)]
pub struct Table(pub Vec<(String, String)>);

impl Table {
    pub fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        let (figure, value) = (figure.into(), value.into());
        eprintln!("  {figure}: {value}");
        self.0.push((figure, value));
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("| figure | value |\n|---|---|\n");
        for (figure, value) in &self.0 {
            out.push_str(&format!("| {figure} | {value} |\n"));
        }
        out
    }
}

// --- /proc ---

/// VmRSS and VmHWM (peak) of a process (a pid, or `self`), in KiB.
pub fn memory_kib(pid: impl std::fmt::Display) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// User + system CPU seconds a process (a pid, or `self`) has used so far, all threads.
pub fn cpu_seconds(pid: impl std::fmt::Display) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses; the fields after its last `)` do not.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    // After the name: state (field 3), …, utime (14), stime (15).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        let value: u64 = fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
        #[allow(clippy::cast_precision_loss, reason = "clock ticks far below 2^52")]
        Ok(value as f64 / USER_HZ)
    };
    Ok(ticks(11)? + ticks(12)?)
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

/// CPU used by the server and by this process over a phase.
#[derive(Debug)]
pub struct CpuMeter {
    server_pid: String,
    server: f64,
    client: f64,
    start: Instant,
}

/// What a [`CpuMeter`] read: CPU seconds of each side over `wall`.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub wall: Duration,
    pub server_seconds: f64,
    pub client_seconds: f64,
}

impl CpuUse {
    /// The server's CPU as a share of one core, in percent.
    pub fn server_percent(&self) -> f64 {
        self.server_seconds / self.wall.as_secs_f64().max(1e-9) * 100.0
    }

    /// This process's CPU as a share of one core, in percent.
    pub fn client_percent(&self) -> f64 {
        self.client_seconds / self.wall.as_secs_f64().max(1e-9) * 100.0
    }
}

impl CpuMeter {
    pub fn start(server_pid: u32) -> anyhow::Result<Self> {
        let server_pid = server_pid.to_string();
        Ok(Self {
            server: cpu_seconds(&server_pid)?,
            client: cpu_seconds("self")?,
            server_pid,
            start: Instant::now(),
        })
    }

    /// The CPU used since [`start`](Self::start).
    pub fn read(&self) -> anyhow::Result<CpuUse> {
        Ok(CpuUse {
            wall: self.start.elapsed(),
            server_seconds: cpu_seconds(&self.server_pid)? - self.server,
            client_seconds: cpu_seconds("self")? - self.client,
        })
    }

    /// `server N %, load generator M % (of one core)`.
    pub fn finish(&self) -> anyhow::Result<String> {
        let used = self.read()?;
        Ok(format!(
            "server {:.0} %, load generator {:.0} % (of one core)",
            used.server_percent(),
            used.client_percent()
        ))
    }
}

/// Runs `op` for about `seconds` on `threads` threads; returns operations per second.
pub fn per_second(
    seconds: f64,
    threads: usize,
    op: impl Fn() -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let counts: Vec<anyhow::Result<usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0usize;
                    // Bounded by time, checked every 32 operations.
                    while start.elapsed() < budget {
                        for _ in 0..32 {
                            op()?;
                        }
                        n += 32;
                    }
                    anyhow::Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a bare-rate thread panicked")))
            })
            .collect()
    });
    let took = start.elapsed();
    let mut total = 0;
    for count in counts {
        total += count?;
    }
    Ok(rate(total, took))
}

// --- the server process ---

/// A `lanyard server run` started by a load generator: temp data dir, admin socket in it, node
/// API on an ephemeral loopback port. Killed when dropped; [`stop`](Self::stop) ends it cleanly.
#[derive(Debug)]
pub struct ServerProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub log: PathBuf,
    pub admin_socket: PathBuf,
}

impl ServerProcess {
    /// Starts `lanyard server run` in `dir` with `extra_args` and `RUST_LOG=rust_log`, and waits
    /// until its Health call reports the store and CA ok.
    pub async fn start(
        lanyard: &Path,
        dir: &Path,
        extra_args: &[String],
        rust_log: &str,
    ) -> anyhow::Result<(Self, AdminClient<Channel>)> {
        ensure!(
            lanyard.is_file(),
            "{} is missing: build it with `cargo build --release -p lanyard` or pass --lanyard",
            lanyard.display()
        );
        let log = dir.join("server.log");
        let admin_socket = dir.join("admin.sock");
        let log_file = std::fs::File::create(&log).context("create server log")?;
        let mut command = tokio::process::Command::new(lanyard);
        command
            .args([
                "server",
                "run",
                "--trust-domain",
                TRUST_DOMAIN,
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .arg("--admin-socket")
            .arg(&admin_socket)
            // An ephemeral loopback port: parallel runs do not clash, and nothing leaves the host.
            .args(["--bind", "127.0.0.1:0"])
            .args(extra_args);
        let child = command
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("server log")?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", lanyard.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        let mut server = Self {
            child,
            pid,
            log,
            admin_socket,
        };
        let client = server.wait_healthy().await?;
        Ok((server, client))
    }

    /// Waits until the Health call answers with the store and CA ok.
    async fn wait_healthy(&mut self) -> anyhow::Result<AdminClient<Channel>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited with {status} while starting:\n{}",
                    self.log_tail()
                );
            }
            if self.admin_socket.exists()
                && let Ok(channel) = connect_admin(&self.admin_socket).await
            {
                let mut client = admin_client(channel);
                if let Ok(Ok(health)) =
                    tokio::time::timeout(CALL_TIMEOUT, client.health(pb::HealthRequest {})).await
                    && health.get_ref().store_ok
                    && health.get_ref().ca_ok
                {
                    return Ok(client);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not become healthy in 60 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// The node API's address from the log line `node API listening addr=…` (logged at info, so
    /// `rust_log` must let `lanyard_server=info` through). Refuses any address not on loopback.
    pub async fn node_addr(&mut self) -> anyhow::Result<std::net::SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let addr = log
                .lines()
                .find(|l| l.contains("node API listening"))
                .and_then(|line| line.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok());
            if let Some(addr) = addr {
                ensure!(
                    addr.ip().is_loopback(),
                    "the node API is on {addr}, not loopback; this tool only talks to this machine"
                );
                return Ok(addr);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited with {status}:\n{}", self.log_tail());
            }
            ensure!(
                Instant::now() < deadline,
                "no `node API listening addr=` line in the server log after 30 s (is RUST_LOG \
                 letting lanyard_server=info through?):\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last 20 lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// SIGTERM, then SIGKILL if it has not exited in 30 s.
    pub async fn stop(mut self) {
        stop_child(&mut self.child, self.pid, "server", &self.log).await;
    }
}

/// The last 20 lines of a process's log file.
fn log_tail(log: &Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// SIGTERM, then SIGKILL if the process has not exited in 30 s; says so if it failed.
async fn stop_child(child: &mut tokio::process::Child, pid: u32, name: &str, log: &Path) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("the {name} exited with {status}:\n{}", log_tail(log)),
        Ok(Err(e)) => eprintln!("waiting for the {name}: {e}"),
        Err(_) => {
            eprintln!("the {name} did not stop in 30 s after SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

// --- the admin API ---

/// Connects a gRPC channel to the Unix socket at `path` (as `crates/cli/src/uds.rs` does).
///
/// The URI is a placeholder: the connector ignores it, and `localhost` is the authority h2 accepts.
pub async fn connect_admin(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .context("connect to the admin socket")
}

/// An admin client that accepts messages up to [`MAX_MESSAGE`].
pub fn admin_client(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Runs one call with [`CALL_TIMEOUT`] and times it.
pub async fn timed<T>(
    what: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<(T, Duration)> {
    let start = Instant::now();
    let response = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("{what}: no answer in {CALL_TIMEOUT:?}"))?
        .map_err(|s| anyhow!("{what}: {:?}: {}", s.code(), s.message()))?;
    Ok((response.into_inner(), start.elapsed()))
}

/// A join token for the agent ID `spiffe_id`, valid for `ttl_seconds`.
pub async fn join_token(
    admin: &mut AdminClient<Channel>,
    spiffe_id: &str,
    ttl_seconds: i64,
) -> anyhow::Result<String> {
    let (token, _) = timed(
        "GenerateJoinToken",
        admin.generate_join_token(pb::GenerateJoinTokenRequest {
            ttl_seconds,
            spiffe_id: spiffe_id.to_owned(),
        }),
    )
    .await?;
    Ok(token.token)
}

/// The server's trust bundle, as SPIFFE bundle JSON.
pub async fn bundle_json(admin: &mut AdminClient<Channel>) -> anyhow::Result<String> {
    let (bundle, _) = timed("GetBundle", admin.get_bundle(pb::GetBundleRequest {})).await?;
    Ok(bundle.spiffe_json)
}

/// The server's trust bundle, parsed.
pub async fn server_bundle(
    admin: &mut AdminClient<Channel>,
) -> anyhow::Result<lanyard_core::Bundle> {
    crate::node_client::parse_bundle(TRUST_DOMAIN, &bundle_json(admin).await?)
}

// --- the agent process ---

/// A `lanyard agent run` attested with a join token to a [`ServerProcess`], serving its Workload
/// API (and task service) on `socket`. Killed when dropped.
#[derive(Debug)]
pub struct AgentProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl AgentProcess {
    /// Starts an agent in `dir` that attests to the node API at `node_addr` with a join token for
    /// `agent_id` made through `admin`, and waits until it answers on its socket.
    pub async fn start(
        lanyard: &Path,
        dir: &Path,
        admin: &mut AdminClient<Channel>,
        node_addr: std::net::SocketAddr,
        agent_id: &str,
    ) -> anyhow::Result<Self> {
        let token = join_token(admin, agent_id, 600).await?;
        let bundle_file = dir.join("bundle.json");
        std::fs::write(&bundle_file, bundle_json(admin).await?).context("write the bundle")?;
        let socket = dir.join("agent.sock");
        let log = dir.join("agent.log");
        let log_file = std::fs::File::create(&log).context("create agent log")?;
        let child = tokio::process::Command::new(lanyard)
            .args(["agent", "run", "--trust-domain", TRUST_DOMAIN, "--server"])
            .arg(node_addr.to_string())
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("agent"))
            .arg("--trust-bundle")
            .arg(&bundle_file)
            .env("LANYARD_JOIN_TOKEN", token)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("agent log")?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", lanyard.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the agent exited at once"))?;
        let mut agent = Self {
            child,
            pid,
            log,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(10);
        while !agent.socket.exists() {
            if let Some(status) = agent.child.try_wait()? {
                bail!("the agent exited with {status}:\n{}", agent.log_tail());
            }
            ensure!(
                Instant::now() < deadline,
                "the agent did not bind its socket in 60 s:\n{}",
                agent.log_tail()
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        Ok(agent)
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// SIGTERM, then SIGKILL if it has not exited in 30 s.
    pub async fn stop(mut self) {
        stop_child(&mut self.child, self.pid, "agent", &self.log).await;
    }
}
