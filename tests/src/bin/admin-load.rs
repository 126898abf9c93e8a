//! `admin-load`: a load generator for the server's admin API (issue 4's benchmark).
//!
//! It starts the real `lanyard server run` (release build, temp data dir, admin socket in that
//! dir, node API on an ephemeral loopback port), fills it with `--entries` registration entries
//! through `BatchCreateEntries`, times listing and filtering at that size, reads the server's RSS
//! from `/proc`, prints a Markdown table and stops the server. With `--datastore postgres` it first
//! creates a fresh database `lanyard_bench_<random>` on `--postgres-url` (loopback or a Unix
//! socket only) and drops it at the end, also after an error, Ctrl-C or `--max-seconds`.
//!
//! For comparison it then measures the datastore alone (`lanyard-store` in this process, no gRPC,
//! a second fresh database): the same batch inserts and listings. The gap between the two is what
//! the server and gRPC add; the raw figures are the ceiling the server can reach.
//!
//! Every loop is bounded by count and every call by a timeout; nothing but the admin socket and
//! the local PostgreSQL server is contacted. This is a benchmark, not a test: its figures move with
//! the machine's load. `tests/tests/admin_load_smoke.rs` runs it with tiny numbers so it cannot rot.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail, ensure};
use hyper_util::rt::TokioIo;
use lanyard_core::{EntryId, EntrySpec, RegistrationEntry, Selector, SelectorSet, SpiffeId};
use lanyard_proto::admin::{self as pb, admin_client::AdminClient};
use lanyard_store::{DataStore, EntryFilter, PageRequest, StoreConfig};
use sqlx::Connection as _;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

const USAGE: &str = "\
usage: admin-load [options]

  --lanyard PATH        the lanyard binary (default target/release/lanyard)
  --datastore KIND      sqlite (default) or postgres
  --postgres-url URL    PostgreSQL server to create the bench database on, loopback or Unix socket
                        only (default postgres://postgres@127.0.0.1:5432/postgres)
  --entries N           entries to create (default 100000)
  --batch N             entries per BatchCreateEntries call (default 1000)
  --page-size N         page size of every listing (default 1000)
  --samples N           calls per latency figure (default 200)
  --full-lists N        complete listings of all entries (default 5)
  --no-raw              skip the datastore-only comparison
  --max-seconds N       give up (and clean up) after this long (default 3600)
";

const TRUST_DOMAIN: &str = "example.org";
/// Largest admin message the server accepts; a page or batch never needs more.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// No single call should take this long; if one does, the run is not worth finishing.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Defaults the server gives entries whose TTLs are 0; the raw phase writes the same values.
const X509_TTL: Duration = Duration::from_secs(3600);
const JWT_TTL: Duration = Duration::from_secs(300);
/// Linux exports CPU times in /proc in USER_HZ, which is 100 on every architecture it supports.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datastore {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
struct Args {
    lanyard: PathBuf,
    datastore: Datastore,
    postgres_url: String,
    entries: usize,
    batch: usize,
    page_size: u32,
    samples: usize,
    full_lists: usize,
    raw: bool,
    max_seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        lanyard: PathBuf::from("target/release/lanyard"),
        datastore: Datastore::Sqlite,
        postgres_url: "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
        entries: 100_000,
        batch: 1_000,
        page_size: 1_000,
        samples: 200,
        full_lists: 5,
        raw: true,
        max_seconds: 3_600,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--lanyard" => args.lanyard = PathBuf::from(value()?),
            "--datastore" => {
                args.datastore = match value()?.as_str() {
                    "sqlite" => Datastore::Sqlite,
                    "postgres" => Datastore::Postgres,
                    other => bail!("--datastore: `{other}` is not sqlite or postgres"),
                }
            }
            "--postgres-url" => args.postgres_url = value()?,
            "--entries" => args.entries = number(&flag, &value()?)?,
            "--batch" => args.batch = number(&flag, &value()?)?,
            "--page-size" => args.page_size = number(&flag, &value()?)?,
            "--samples" => args.samples = number(&flag, &value()?)?,
            "--full-lists" => args.full_lists = number(&flag, &value()?)?,
            "--max-seconds" => args.max_seconds = number(&flag, &value()?)?,
            "--no-raw" => args.raw = false,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n\n{USAGE}"),
        }
    }
    ensure!(args.entries > 0, "--entries must be at least 1");
    ensure!(
        (1..=10_000).contains(&args.batch),
        "--batch must be 1..=10000 (the server's limit)"
    );
    ensure!(
        (1..=10_000).contains(&args.page_size),
        "--page-size must be 1..=10000 (the server's limit)"
    );
    ensure!(args.samples > 0, "--samples must be at least 1");
    Ok(args)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow!("{flag}: `{value}` is not a non-negative number"))
}

// --- the entries ---

/// The generated population. Entry `i` has SPIFFE ID `…/ns/ns-{i%namespaces}/sa/sa-{i}`
/// (unique), one of `parents` parent IDs, and three selectors: its namespace, its service account
/// (unique) and a uid shared by about 10 entries. With the defaults (100,000 entries, pages of
/// 1,000) there are 100 parents and 100 namespaces of 1,000 entries each.
#[derive(Debug, Clone, Copy)]
struct Population {
    n: usize,
    parents: usize,
    uids: usize,
    namespaces: usize,
}

#[derive(Debug)]
struct EntryText {
    spiffe_id: String,
    parent_id: String,
    selectors: Vec<String>,
}

impl Population {
    /// Parents and namespaces group at most `min(page, 1000)` entries each, so that listing one
    /// of them fits one page.
    fn new(n: usize, page: u32) -> Self {
        let group = usize::try_from(page).unwrap_or(1_000).clamp(1, 1_000);
        Self {
            n,
            parents: n.div_ceil(group),
            uids: n.div_ceil(10),
            namespaces: n.div_ceil(group),
        }
    }

    fn entry(&self, i: usize) -> EntryText {
        EntryText {
            spiffe_id: self.spiffe_id(i),
            parent_id: self.parent(i % self.parents),
            selectors: vec![
                self.namespace_selector(i % self.namespaces),
                format!("k8s:sa:sa-{i}"),
                self.uid_selector(i % self.uids),
            ],
        }
    }

    fn spiffe_id(&self, i: usize) -> String {
        format!(
            "spiffe://{TRUST_DOMAIN}/ns/ns-{}/sa/sa-{i}",
            i % self.namespaces
        )
    }

    fn parent(&self, p: usize) -> String {
        format!("spiffe://{TRUST_DOMAIN}/spire/agent/node-{p}")
    }

    fn namespace_selector(&self, ns: usize) -> String {
        format!("k8s:ns:ns-{ns}")
    }

    fn uid_selector(&self, uid: usize) -> String {
        format!("unix:uid:{uid}")
    }

    /// How many of `0..n` are `r` modulo `m`.
    fn count_mod(&self, m: usize, r: usize) -> usize {
        if r >= self.n {
            0
        } else {
            (self.n - r).div_ceil(m)
        }
    }
}

// --- randomness (sampling and names only; nothing secret) ---

#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        #[allow(
            clippy::cast_possible_truncation,
            reason = "any bits will do for a seed"
        )]
        Self(nanos as u64 ^ u64::from(std::process::id()).rotate_left(32))
    }

    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next() % n64).unwrap_or(0)
    }

    fn hex(&mut self, bytes: usize) -> String {
        (0..bytes.div_ceil(8))
            .map(|_| format!("{:016x}", self.next()))
            .collect::<String>()
            .chars()
            .take(bytes * 2)
            .collect()
    }
}

// --- statistics ---

#[derive(Debug, Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
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

    fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    fn p50_p99(&self) -> String {
        format!(
            "{} / {} (n = {})",
            fmt_dur(self.pct(50.0)),
            fmt_dur(self.pct(99.0)),
            self.0.len()
        )
    }
}

fn fmt_dur(d: Duration) -> String {
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

fn rate(n: usize, d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let n = n as f64;
    n / d.as_secs_f64().max(1e-9)
}

fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.1} k entries/s", r / 1e3)
    } else {
        format!("{r:.0} entries/s")
    }
}

fn mib(kib: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "memory sizes far below 2^52")]
    let m = kib as f64 / 1024.0;
    format!("{m:.1} MiB")
}

/// The figures of one run, in the order they are printed.
#[derive(Debug, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        let (figure, value) = (figure.into(), value.into());
        eprintln!("  {figure}: {value}");
        self.0.push((figure, value));
    }

    fn markdown(&self) -> String {
        let mut out = String::from("| figure | value |\n|---|---|\n");
        for (figure, value) in &self.0 {
            out.push_str(&format!("| {figure} | {value} |\n"));
        }
        out
    }
}

// --- /proc ---

/// VmRSS and VmHWM (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
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

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

/// CPU used by the server and by this process over a phase, as a share of one core.
#[derive(Debug)]
struct CpuMeter {
    server_pid: String,
    server: f64,
    client: f64,
    start: Instant,
}

impl CpuMeter {
    fn start(server_pid: u32) -> anyhow::Result<Self> {
        let server_pid = server_pid.to_string();
        Ok(Self {
            server: cpu_seconds(&server_pid)?,
            client: cpu_seconds("self")?,
            server_pid,
            start: Instant::now(),
        })
    }

    fn finish(&self) -> anyhow::Result<String> {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let server = (cpu_seconds(&self.server_pid)? - self.server) / wall * 100.0;
        let client = (cpu_seconds("self")? - self.client) / wall * 100.0;
        Ok(format!(
            "server {server:.0} %, load generator {client:.0} % (of one core)"
        ))
    }
}

// --- PostgreSQL databases ---

/// Databases this run created on the PostgreSQL server; dropped at the end, whatever happens.
#[derive(Debug, Default)]
struct Databases {
    admin_url: String,
    names: Vec<String>,
}

impl Databases {
    /// Refuses any PostgreSQL server that is not on this machine.
    fn check_local(url: &str) -> anyhow::Result<()> {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|_| anyhow!("--postgres-url: not a PostgreSQL URL"))?;
        let host = options.get_host();
        let local = host.starts_with('/')
            || host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        ensure!(
            local,
            "--postgres-url: host `{host}` is not loopback or a Unix socket; this tool only talks to this machine"
        );
        Ok(())
    }

    async fn create(&mut self, rng: &mut Rng) -> anyhow::Result<String> {
        let name = format!("lanyard_bench_{}", rng.hex(8));
        let mut admin = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .context("connect to --postgres-url")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        self.names.push(name.clone());
        let _ = admin.close().await;
        Ok(database_url(&self.admin_url, &name))
    }

    async fn drop_all(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let mut admin = match sqlx::PgConnection::connect(&self.admin_url).await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!(
                    "cannot connect to drop {:?}: {e}; drop them by hand",
                    self.names
                );
                return;
            }
        };
        for name in self.names.drain(..) {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
            {
                Ok(_) => eprintln!("dropped database {name}"),
                Err(e) => eprintln!("cannot drop database {name}: {e}; drop it by hand"),
            }
        }
        let _ = admin.close().await;
    }
}

/// `postgres://user@host:port/olddb?opts` with the database replaced.
fn database_url(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{host_part}/{database}{query}")
}

// --- the server process ---

#[derive(Debug)]
struct ServerProcess {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    admin_socket: PathBuf,
}

impl ServerProcess {
    async fn start(
        lanyard: &Path,
        dir: &Path,
        datastore_url: Option<&str>,
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
            // The node API is not served yet; an ephemeral port keeps parallel runs from clashing
            // once it is.
            .args(["--bind", "127.0.0.1:0"]);
        if let Some(url) = datastore_url {
            command.args(["--datastore", url]);
        }
        let child = command
            .env("RUST_LOG", "warn")
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
                && let Ok(channel) = connect(&self.admin_socket).await
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

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited in 30 s.
    async fn stop(mut self) {
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => eprintln!("the server exited with {status}:\n{}", self.log_tail()),
            Ok(Err(e)) => eprintln!("waiting for the server: {e}"),
            Err(_) => {
                eprintln!("the server did not stop in 30 s after SIGTERM; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

/// Connects a gRPC channel to the Unix socket at `path` (as `crates/cli/src/uds.rs` does).
///
/// The URI is a placeholder: the connector ignores it, and `localhost` is the authority h2 accepts.
async fn connect(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .context("connect to the admin socket")
}

fn admin_client(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

// --- the measurements through the admin API ---

/// Runs one call with the call timeout and times it.
async fn timed<T>(
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

async fn create_all(
    client: &mut AdminClient<Channel>,
    population: &Population,
    batch: usize,
    table: &mut Table,
    server_pid: u32,
) -> anyhow::Result<()> {
    let cpu = CpuMeter::start(server_pid)?;
    let mut latencies = Samples::default();
    let start = Instant::now();
    let mut i = 0;
    while i < population.n {
        let end = (i + batch).min(population.n);
        let entries = (i..end)
            .map(|i| {
                let e = population.entry(i);
                pb::Entry {
                    spiffe_id: e.spiffe_id,
                    parent_id: e.parent_id,
                    selectors: e.selectors,
                    ..Default::default()
                }
            })
            .collect();
        let (response, took) = timed(
            "BatchCreateEntries",
            client.batch_create_entries(pb::BatchCreateEntriesRequest { entries }),
        )
        .await?;
        ensure!(
            response.results.len() == end - i,
            "BatchCreateEntries: {} results for {} entries",
            response.results.len(),
            end - i
        );
        if let Some(bad) = response
            .results
            .iter()
            .find(|r| r.status.as_ref().is_none_or(|s| s.code != 0))
        {
            bail!("BatchCreateEntries refused an entry: {:?}", bad.status);
        }
        latencies.push(took);
        i = end;
    }
    let total = start.elapsed();
    let calls = latencies.0.len();
    table.row(
        format!(
            "create {} entries ({calls} × BatchCreateEntries of {batch}, one call in flight)",
            population.n
        ),
        format!(
            "{}, **{}**",
            fmt_dur(total),
            fmt_rate(rate(population.n, total))
        ),
    );
    table.row("BatchCreateEntries latency p50 / p99", latencies.p50_p99());
    // Does writing slow down as the tables grow? Compare the first and last tenth of the calls.
    let tenth = (calls / 10).max(1);
    let sum = |d: &[Duration]| d.iter().sum::<Duration>();
    if calls >= 10 {
        table.row(
            "create rate, first / last tenth of the calls",
            format!(
                "{} / {}",
                fmt_rate(rate(tenth * batch, sum(&latencies.0[..tenth]))),
                fmt_rate(rate(tenth * batch, sum(&latencies.0[calls - tenth..])))
            ),
        );
    }
    table.row("CPU during create", cpu.finish()?);
    Ok(())
}

/// One page of a listing: its size and the next token.
async fn list_page(
    client: &mut AdminClient<Channel>,
    mut request: pb::ListEntriesRequest,
    token: String,
) -> anyhow::Result<(usize, String, Duration)> {
    request.page_token = token;
    let (response, took) = timed("ListEntries", client.list_entries(request)).await?;
    Ok((response.entries.len(), response.next_page_token, took))
}

/// Lists every entry page by page. Returns the count, the time, and the token of every full page.
async fn list_everything(
    client: &mut AdminClient<Channel>,
    page_size: u32,
    expected: usize,
) -> anyhow::Result<(usize, Duration, Vec<String>)> {
    let request = pb::ListEntriesRequest {
        page_size,
        ..Default::default()
    };
    let page = usize::try_from(page_size).unwrap_or(usize::MAX);
    // Bounded: a server that never ends the listing cannot keep this running.
    let max_pages = expected / page + 2;
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut count = 0;
    let start = Instant::now();
    for _ in 0..max_pages {
        let (n, next, _) = list_page(client, request.clone(), token.clone()).await?;
        if n == page {
            tokens.push(token);
        }
        count += n;
        if next.is_empty() {
            return Ok((count, start.elapsed(), tokens));
        }
        token = next;
    }
    bail!("ListEntries: still more pages after {max_pages} pages")
}

/// A filtered listing that must fit one page: `samples` calls, each request made by `make` with
/// the number of entries it must return.
async fn filter_latency(
    client: &mut AdminClient<Channel>,
    rng: &mut Rng,
    samples: usize,
    what: &str,
    mut make: impl FnMut(&mut Rng) -> (pb::ListEntriesRequest, usize),
) -> anyhow::Result<Samples> {
    let mut latencies = Samples::default();
    for _ in 0..samples {
        let (request, expected) = make(rng);
        let (n, next, took) = list_page(client, request, String::new()).await?;
        ensure!(
            n == expected && next.is_empty(),
            "{what}: {n} entries (more pages: {}), expected {expected}",
            !next.is_empty()
        );
        latencies.push(took);
    }
    Ok(latencies)
}

async fn measure_server(
    args: &Args,
    rng: &mut Rng,
    resources: &mut Resources,
    table: &mut Table,
) -> anyhow::Result<()> {
    let population = Population::new(args.entries, args.page_size);
    let datastore_url = match args.datastore {
        Datastore::Sqlite => None,
        Datastore::Postgres => Some(resources.databases.create(rng).await?),
    };
    let dir = resources.dir.path().join("server");
    std::fs::create_dir_all(&dir).context("create the server's directory")?;
    eprintln!("starting {}", args.lanyard.display());
    let (server, mut client) =
        ServerProcess::start(&args.lanyard, &dir, datastore_url.as_deref()).await?;
    let pid = server.pid;
    resources.server = Some(server);

    // Let start-up work (CA creation, migrations) settle before calling the server idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, _) = memory_kib(pid)?;
    table.row("server RSS idle after start", mib(idle));

    eprintln!("creating {} entries", population.n);
    create_all(&mut client, &population, args.batch, table, pid).await?;
    let (after_create, _) = memory_kib(pid)?;
    table.row("server RSS after create", mib(after_create));

    eprintln!("listing everything {} times", args.full_lists);
    let page = args.page_size;
    let mut full = Samples::default();
    let mut tokens = vec![String::new()];
    for _ in 0..args.full_lists {
        let (count, took, full_pages) = list_everything(&mut client, page, population.n).await?;
        ensure!(
            count == population.n,
            "a full listing returned {count} entries, expected {}",
            population.n
        );
        full.push(took);
        tokens = full_pages;
    }
    if args.full_lists > 0 {
        let pages = population.n.div_ceil(usize::try_from(page).unwrap_or(1));
        table.row(
            format!(
                "ListEntries: all {} entries in pages of {page} ({pages} calls), p50 / max",
                population.n
            ),
            format!(
                "{} / {} (n = {}) = {}",
                fmt_dur(full.pct(50.0)),
                fmt_dur(full.max()),
                full.0.len(),
                fmt_rate(rate(population.n, full.pct(50.0)))
            ),
        );
        let (rss, _) = memory_kib(pid)?;
        table.row(
            format!(
                "server RSS with {} entries, after the full lists",
                population.n
            ),
            mib(rss),
        );
        if args.datastore == Datastore::Sqlite {
            table.row(
                "SQLite database + WAL on disk",
                mib(sqlite_size_kib(&dir.join("data"))),
            );
        }
    }

    eprintln!(
        "timing single pages and filters, {} calls each",
        args.samples
    );
    let mut one_page = Samples::default();
    let page_len = usize::try_from(page)
        .unwrap_or(usize::MAX)
        .min(population.n);
    for _ in 0..args.samples {
        // A page at a random position (the tokens of full pages seen in the last full listing).
        let token = tokens
            .get(rng.below(tokens.len()))
            .cloned()
            .unwrap_or_default();
        let request = pb::ListEntriesRequest {
            page_size: page,
            ..Default::default()
        };
        let (n, _, took) = list_page(&mut client, request, token).await?;
        ensure!(n == page_len, "one page: {n} entries, expected {page_len}");
        one_page.push(took);
    }
    table.row(
        format!("ListEntries: one page of {page_len}, random position, p50 / p99"),
        one_page.p50_p99(),
    );

    let filters = measure_filters(&mut client, rng, &population, page, args.samples).await?;
    let mut after_analyze = Vec::new();
    if let Some(url) = &datastore_url {
        // A table filled seconds ago has no planner statistics until autovacuum's next pass;
        // say whether it had them, then time the filters again with them.
        let (analyzed, modified) = postgres_entry_stats(url).await?;
        table.row(
            "PostgreSQL: `entries` analyzed (auto or manual) before the filters ran?",
            format!(
                "{} (rows modified since the last analyze: {modified})",
                if analyzed { "yes" } else { "no" }
            ),
        );
        postgres_analyze(url).await?;
        after_analyze = measure_filters(&mut client, rng, &population, page, args.samples).await?;
    }
    for (i, (what, samples)) in filters.iter().enumerate() {
        let mut value = samples.p50_p99();
        if let Some((_, again)) = after_analyze.get(i) {
            value.push_str(&format!("; after `ANALYZE entries`: {}", again.p50_p99()));
        }
        table.row(format!("ListEntries {what}, p50 / p99"), value);
    }

    let (rss, peak) = memory_kib(pid)?;
    table.row(
        "server RSS at the end / peak (VmHWM)",
        format!("{} / {}", mib(rss), mib(peak)),
    );

    if let Some(server) = resources.server.take() {
        server.stop().await;
    }
    Ok(())
}

/// Times every filter, `samples` calls each; each call must return what the population says.
async fn measure_filters(
    client: &mut AdminClient<Channel>,
    rng: &mut Rng,
    population: &Population,
    page: u32,
    samples: usize,
) -> anyhow::Result<Vec<(String, Samples)>> {
    let p = *population;
    let page_len = usize::try_from(page).unwrap_or(usize::MAX).min(p.n);
    let listing = |selectors: Vec<String>, mode: pb::SelectorMatch| pb::ListEntriesRequest {
        by_selectors: selectors,
        selector_match: mode as i32,
        page_size: page,
        ..Default::default()
    };
    let fits = |n: usize| n <= page_len;
    let mut filters: Vec<(String, Samples)> = Vec::new();
    let s = filter_latency(client, rng, samples, "by spiffe_id", |rng| {
        let i = rng.below(p.n);
        let request = pb::ListEntriesRequest {
            by_spiffe_id: p.spiffe_id(i),
            page_size: page,
            ..Default::default()
        };
        (request, 1)
    })
    .await?;
    filters.push(("by spiffe_id (1 match)".to_owned(), s));

    let per_parent = p.count_mod(p.parents, 0);
    if fits(per_parent) {
        let s = filter_latency(client, rng, samples, "by parent_id", |rng| {
            let parent = rng.below(p.parents);
            let request = pb::ListEntriesRequest {
                by_parent_id: p.parent(parent),
                page_size: page,
                ..Default::default()
            };
            (request, p.count_mod(p.parents, parent))
        })
        .await?;
        filters.push((format!("by parent_id (~{per_parent} matches)"), s));
    }

    let per_uid = p.count_mod(p.uids, 0);
    let s = filter_latency(client, rng, samples, "superset, rare", |rng| {
        let uid = rng.below(p.uids);
        let request = listing(vec![p.uid_selector(uid)], pb::SelectorMatch::Superset);
        (request, p.count_mod(p.uids, uid))
    })
    .await?;
    filters.push((
        format!("by selector, superset of 1 rare selector (~{per_uid} matches)"),
        s,
    ));

    let per_ns = p.count_mod(p.namespaces, 0);
    if fits(per_ns) {
        let s = filter_latency(client, rng, samples, "superset, common", |rng| {
            let ns = rng.below(p.namespaces);
            let request = listing(vec![p.namespace_selector(ns)], pb::SelectorMatch::Superset);
            (request, p.count_mod(p.namespaces, ns))
        })
        .await?;
        filters.push((
            format!("by selector, superset of 1 common selector (~{per_ns} matches)"),
            s,
        ));
    }

    let s = filter_latency(client, rng, samples, "exact", |rng| {
        let i = rng.below(p.n);
        (listing(p.entry(i).selectors, pb::SelectorMatch::Exact), 1)
    })
    .await?;
    filters.push(("by selector, exact (3 selectors, 1 match)".to_owned(), s));

    let s = filter_latency(client, rng, samples, "subset", |rng| {
        let i = rng.below(p.n);
        let mut selectors = p.entry(i).selectors;
        selectors.push("k8s:pod-label:app:bench".to_owned());
        (listing(selectors, pb::SelectorMatch::Subset), 1)
    })
    .await?;
    filters.push((
        "by selector, subset of an entry's 3 + 1 other (1 match)".to_owned(),
        s,
    ));

    let s = filter_latency(client, rng, samples, "any, rare", |rng| {
        let uid = rng.below(p.uids);
        let request = listing(vec![p.uid_selector(uid)], pb::SelectorMatch::Any);
        (request, p.count_mod(p.uids, uid))
    })
    .await?;
    filters.push((
        format!("by selector, any of 1 rare selector (~{per_uid} matches)"),
        s,
    ));

    Ok(filters)
}

/// Whether PostgreSQL has statistics on `entries`, and how many rows changed since they were taken.
async fn postgres_entry_stats(url: &str) -> anyhow::Result<(bool, i64)> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("connect to the bench database")?;
    let row: (bool, i64) = sqlx::query_as(
        "SELECT last_autoanalyze IS NOT NULL OR last_analyze IS NOT NULL, n_mod_since_analyze \
         FROM pg_stat_user_tables WHERE relname = 'entries'",
    )
    .fetch_one(&mut conn)
    .await
    .context("read pg_stat_user_tables")?;
    let _ = conn.close().await;
    Ok(row)
}

async fn postgres_analyze(url: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("connect to the bench database")?;
    sqlx::raw_sql("ANALYZE entries, entry_selectors")
        .execute(&mut conn)
        .await
        .context("ANALYZE")?;
    let _ = conn.close().await;
    Ok(())
}

/// Size of the SQLite database and its write-ahead log in the server's data directory, in KiB.
fn sqlite_size_kib(data_dir: &Path) -> u64 {
    ["datastore.sqlite3", "datastore.sqlite3-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(data_dir.join(name)).ok())
        .map(|m| m.len() / 1024)
        .sum()
}

// --- the same work on the datastore alone ---

async fn measure_raw(
    args: &Args,
    rng: &mut Rng,
    resources: &mut Resources,
    table: &mut Table,
) -> anyhow::Result<()> {
    let population = Population::new(args.entries, args.page_size);
    let url = match args.datastore {
        Datastore::Sqlite => {
            let dir = resources.dir.path().join("raw");
            std::fs::create_dir_all(&dir).context("create the raw store's directory")?;
            format!("sqlite://{}", dir.join("datastore.sqlite3").display())
        }
        Datastore::Postgres => resources.databases.create(rng).await?,
    };
    let store: Arc<dyn DataStore> = lanyard_store::open(StoreConfig::new(url))
        .await
        .context("open the raw datastore")?;
    let result = raw_work(args, &population, &*store, table).await;
    store.close().await;
    result
}

async fn raw_work(
    args: &Args,
    population: &Population,
    store: &dyn DataStore,
    table: &mut Table,
) -> anyhow::Result<()> {
    let mut rng = Rng::from_clock();
    let mut entries = Vec::with_capacity(population.n);
    for i in 0..population.n {
        let e = population.entry(i);
        let selectors: SelectorSet = e
            .selectors
            .iter()
            .map(|s| s.parse::<Selector>())
            .collect::<Result<_, _>>()?;
        entries.push(RegistrationEntry::new(EntrySpec {
            id: EntryId::new(&rng.hex(16))?,
            spiffe_id: SpiffeId::parse(&e.spiffe_id)?,
            parent_id: SpiffeId::parse(&e.parent_id)?,
            selectors,
            x509_svid_ttl: X509_TTL,
            jwt_svid_ttl: JWT_TTL,
            dns_names: Vec::new(),
            federates_with: Vec::new(),
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            revision: 0,
        })?);
    }
    let start = Instant::now();
    let mut created = 0;
    let mut rest = entries.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<RegistrationEntry> = rest.by_ref().take(args.batch).collect();
        let n = batch.len();
        let results = tokio::time::timeout(CALL_TIMEOUT, store.create_entries(batch))
            .await
            .map_err(|_| anyhow!("raw create_entries: no answer in {CALL_TIMEOUT:?}"))??;
        ensure!(
            results.len() == n && results.iter().all(Result::is_ok),
            "raw create_entries refused entries"
        );
        created += n;
    }
    let took = start.elapsed();
    table.row(
        format!(
            "raw datastore (no server, no gRPC): create {created} in batches of {}",
            args.batch
        ),
        format!("{}, **{}**", fmt_dur(took), fmt_rate(rate(created, took))),
    );

    let filter = EntryFilter::default();
    let mut full = Samples::default();
    let max_pages = population.n / usize::try_from(args.page_size).unwrap_or(1) + 2;
    for _ in 0..args.full_lists.max(1) {
        let start = Instant::now();
        let mut token = None;
        let mut count = 0;
        for _ in 0..max_pages {
            let page = PageRequest {
                token,
                size: args.page_size,
            };
            let page = store.list_entries(&filter, &page).await?;
            count += page.items.len();
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        ensure!(count == population.n, "raw full listing: {count} entries");
        full.push(start.elapsed());
    }
    table.row(
        format!(
            "raw datastore: list all {} (pages of {}) p50",
            population.n, args.page_size
        ),
        format!(
            "{} = {}",
            fmt_dur(full.pct(50.0)),
            fmt_rate(rate(population.n, full.pct(50.0)))
        ),
    );
    Ok(())
}

// --- main ---

/// What must be cleaned up however the run ends.
#[derive(Debug)]
struct Resources {
    dir: tempfile::TempDir,
    server: Option<ServerProcess>,
    databases: Databases,
}

impl Resources {
    async fn cleanup(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.databases.drop_all().await;
    }
}

async fn run(args: &Args, resources: &mut Resources, table: &mut Table) -> anyhow::Result<()> {
    let mut rng = Rng::from_clock();
    measure_server(args, &mut rng, resources, table).await?;
    if args.raw {
        eprintln!("the same on the datastore alone");
        measure_raw(args, &mut rng, resources, table).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("admin-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.datastore == Datastore::Postgres
        && let Err(e) = Databases::check_local(&args.postgres_url)
    {
        eprintln!("admin-load: {e}");
        return std::process::ExitCode::from(2);
    }
    let dir = match tempfile::Builder::new().prefix("admin-load-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("admin-load: cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut resources = Resources {
        dir,
        server: None,
        databases: Databases {
            admin_url: args.postgres_url.clone(),
            names: Vec::new(),
        },
    };
    let load_before = load_average();
    let started = Instant::now();
    let mut table = Table::default();
    let outcome = tokio::select! {
        result = run(&args, &mut resources, &mut table) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        () = tokio::time::sleep(Duration::from_secs(args.max_seconds)) => {
            Err(anyhow!("gave up after --max-seconds {}", args.max_seconds))
        }
    };
    resources.cleanup().await;

    let datastore = match args.datastore {
        Datastore::Sqlite => "SQLite",
        Datastore::Postgres => "PostgreSQL",
    };
    println!(
        "## admin-load: {datastore}, {} entries, batches of {}\n",
        args.entries, args.batch
    );
    print!("{}", table.markdown());
    println!(
        "\nrun took {}; load average (1/5/15 min) before: {load_before}, after: {}",
        fmt_dur(started.elapsed()),
        load_average()
    );
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("admin-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
