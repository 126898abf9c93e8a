//! `workload-load`: a load generator for the agent's Workload API (issue 6's benchmark).
//!
//! Part 1 starts the real `lanyard dev` (server and agent in one process, temp directory) and
//! measures, over the agent's Unix socket:
//! - the **first `FetchX509SVID` message**: a new connection, the HTTP/2 handshake, workload
//!   attestation of the caller and the first message of the stream, timed together;
//! - **`FetchJWTSVID`** on an open connection for an audience already cached.
//!
//! Each with one client; with 1,000 other clients connected, each holding an open
//! `FetchX509SVID` stream (what 1,000 workloads using an `X509Source` look like to the agent);
//! and with 1,000 clients sending at the same instant (a burst: every request queues behind the
//! others, so this is throughput seen as latency).
//!
//! Part 2 runs `lanyard server run` and `lanyard agent run` as separate processes (so the agent's
//! memory is its own), registers `--entries` entries for the agent, waits until the agent serves
//! all of their SVIDs, and reads the agent's VmRSS and VmHWM from `/proc`.
//!
//! The load generator runs as the current user; `lanyard dev` gives that user an identity, and the
//! part-2 entries select it (`unix:uid`), so that it can see when all SVIDs are cached. Everything
//! is on this machine: Unix sockets and a loopback port. Every loop is bounded by count and every
//! wait by a timeout; `--max-seconds` bounds the whole run. It prints a Markdown table.
//! `tests/tests/workload_load_smoke.rs` runs it with tiny numbers so that it cannot rot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use lanyard_proto::admin::{self as pb, admin_client::AdminClient};
use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::workload::{JwtsvidRequest, X509svidRequest, X509svidResponse};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

const USAGE: &str = "\
usage: workload-load [options]

  --lanyard PATH     the lanyard binary (default target/release/lanyard)
  --clients N        concurrent clients (default 1000)
  --samples N        timed calls per one-client figure (default 500)
  --rounds N         calls per client in the burst figures (default 3)
  --entries N        entries (cached SVIDs) for the agent RSS figure (default 1000)
  --max-seconds N    give up after this long (default 600)
";

/// Longest any one call may take before the run fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const TRUST_DOMAIN: &str = "example.org";
const AUDIENCE: &str = "bench";
/// Connections opened at a time while setting up the connected clients (setup is not timed).
const SETUP_PARALLELISM: usize = 50;

#[derive(Debug, Clone)]
struct Args {
    lanyard: PathBuf,
    clients: usize,
    samples: usize,
    rounds: usize,
    entries: usize,
    max_seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        lanyard: PathBuf::from("target/release/lanyard"),
        clients: 1000,
        samples: 500,
        rounds: 3,
        entries: 1000,
        max_seconds: 600,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            bail!("help");
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .with_context(|| format!("{flag}: `{value}` is not a number"))
        };
        match flag.as_str() {
            "--lanyard" => args.lanyard = PathBuf::from(&value),
            "--clients" => args.clients = number()?,
            "--samples" => args.samples = number()?,
            "--rounds" => args.rounds = number()?,
            "--entries" => args.entries = number()?,
            "--max-seconds" => args.max_seconds = number()? as u64,
            _ => bail!("unknown option {flag}"),
        }
    }
    ensure!(
        args.clients > 0 && args.samples > 0 && args.rounds > 0 && args.entries > 0,
        "every count must be at least 1"
    );
    ensure!(
        args.lanyard.exists(),
        "{} does not exist: build it with `cargo build --release -p lanyard`",
        args.lanyard.display()
    );
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if e.to_string() != "help" {
                eprintln!("workload-load: {e:#}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("workload-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(args.max_seconds);
    let outcome = runtime.block_on(async { tokio::time::timeout(limit, run(&args)).await });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("workload-load: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("workload-load: gave up after {limit:?} (--max-seconds)");
            ExitCode::FAILURE
        }
    }
}

// === measuring ===

/// Latencies of one figure.
#[derive(Debug, Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn percentile(&self, p: usize) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        // Nearest rank: the smallest value with at least p % of the samples at or below it.
        let rank = (sorted.len() * p).div_ceil(100).max(1);
        sorted[rank - 1]
    }

    fn summary(&self) -> String {
        format!(
            "{} / {} (max {}, n = {})",
            fmt_dur(self.percentile(50)),
            fmt_dur(self.percentile(99)),
            fmt_dur(self.0.iter().max().copied().unwrap_or_default()),
            self.0.len()
        )
    }
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The unit of CPU times in `/proc/<pid>/stat` (`USER_HZ`; 100 on Linux).
const USER_HZ: f64 = 100.0;

/// User + system CPU time a process has used (`"self"` for this one).
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) end with `)`: utime and stime are the
    // 12th and 13th after it, in clock ticks.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat is malformed"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat is malformed"))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
}

/// CPU used by `pid` and by this process between `new` and `finish`.
struct CpuMeter {
    pid: String,
    theirs: f64,
    ours: f64,
}

impl CpuMeter {
    fn new(pid: u32) -> anyhow::Result<Self> {
        let pid = pid.to_string();
        Ok(Self {
            theirs: cpu_seconds(&pid)?,
            ours: cpu_seconds("self")?,
            pid,
        })
    }

    fn finish(&self, wall: Duration) -> anyhow::Result<String> {
        Ok(format!(
            "CPU over {:.2} s: lanyard {:.2} s, load generator {:.2} s",
            wall.as_secs_f64(),
            cpu_seconds(&self.pid)? - self.theirs,
            cpu_seconds("self")? - self.ours
        ))
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Markdown rows: figure, value.
#[derive(Debug, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        let (figure, value) = (figure.into(), value.into());
        eprintln!("  {figure}: {value}");
        self.0.push((figure, value));
    }

    fn print(&self) {
        println!("| figure | p50 / p99 (max, samples) or value |");
        println!("|---|---|");
        for (figure, value) in &self.0 {
            println!("| {figure} | {value} |");
        }
    }
}

// === talking to the agent ===

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

async fn timed<T, E: Into<anyhow::Error>>(
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(Into::into).with_context(|| what.to_owned()),
        Err(_) => bail!("{what}: no answer within {CALL_TIMEOUT:?}"),
    }
}

async fn connect(socket: &Path) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let channel = timed("connect", lanyard_workload::connect_channel(socket)).await?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// Opens a `FetchX509SVID` stream on `client` and returns it with its first message.
async fn open_x509_stream(
    client: &mut SpiffeWorkloadApiClient<Channel>,
) -> anyhow::Result<(tonic::Streaming<X509svidResponse>, X509svidResponse)> {
    let mut stream = timed(
        "FetchX509SVID",
        client.fetch_x509svid(with_header(X509svidRequest {})),
    )
    .await?
    .into_inner();
    let first = timed("the first FetchX509SVID message", stream.message())
        .await?
        .ok_or_else(|| anyhow!("the FetchX509SVID stream ended without a message"))?;
    Ok((stream, first))
}

/// One timed first message: a new connection, attestation, the first message of the stream.
async fn first_x509_message(socket: &Path, expected_svids: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut client = connect(socket).await?;
    let (_stream, first) = open_x509_stream(&mut client).await?;
    let elapsed = start.elapsed();
    ensure!(
        first.svids.len() == expected_svids,
        "got {} SVIDs, expected {expected_svids}",
        first.svids.len()
    );
    Ok(elapsed)
}

/// One timed `FetchJWTSVID` on an open connection.
async fn jwt_call(client: &mut SpiffeWorkloadApiClient<Channel>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let response = timed(
        "FetchJWTSVID",
        client.fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![AUDIENCE.to_owned()],
            spiffe_id: String::new(),
        })),
    )
    .await?
    .into_inner();
    let elapsed = start.elapsed();
    ensure!(!response.svids.is_empty(), "FetchJWTSVID returned no SVID");
    Ok(elapsed)
}

/// Runs `f(i)` for every `i` in `0..n`, at most `parallel` at a time.
async fn for_each_parallel<T, F, Fut>(n: usize, parallel: usize, f: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < n || !set.is_empty() {
        while next < n && set.len() < parallel {
            set.spawn(f(next));
            next += 1;
        }
        if let Some(joined) = set.join_next().await {
            out.push(joined.context("a client task failed")??);
        }
    }
    Ok(out)
}

/// `clients` tasks start at the same instant, each making `rounds` calls of `call` one after
/// another; returns every latency and the wall time of the whole burst.
async fn burst<S, F, Fut>(
    states: Vec<S>,
    rounds: usize,
    call: F,
) -> anyhow::Result<(Samples, Duration)>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<(S, Duration)>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(states.len() + 1));
    let call = Arc::new(call);
    let mut set = tokio::task::JoinSet::new();
    for state in states {
        let barrier = barrier.clone();
        let call = call.clone();
        set.spawn(async move {
            barrier.wait().await;
            let mut state = state;
            let mut latencies = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let (next, latency) = call(state).await?;
                state = next;
                latencies.push(latency);
            }
            anyhow::Ok(latencies)
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut samples = Samples::default();
    while let Some(joined) = set.join_next().await {
        samples.0.extend(joined.context("a client task failed")??);
    }
    Ok((samples, start.elapsed()))
}

// === processes ===

/// A child process, killed when dropped, with its output in a log file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(lanyard: &Path, args: &[&std::ffi::OsStr], log: PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(lanyard)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env_remove("LANYARD_ADMIN_SOCKET")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", lanyard.display()))?;
        Ok(Self { child, log })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .ok_or_else(|| anyhow!("the process has exited"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the log if the process has exited.
    fn check_alive(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{name} exited with {status}:\n{}", self.log());
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Retries `probe` with backoff until it succeeds, `process` dies, or [`START_TIMEOUT`] passes.
async fn wait_until<T, Fut>(
    what: &str,
    process: &mut Process,
    name: &str,
    mut probe: impl FnMut() -> Fut,
) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_millis(10);
    loop {
        process.check_alive(name)?;
        match probe().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{what} within {START_TIMEOUT:?}")));
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

// === the run ===

async fn run(args: &Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut table = Table::default();
    eprintln!(
        "workload-load: {} clients, {} samples, {} rounds, {} entries; load average {}",
        args.clients,
        args.samples,
        args.rounds,
        args.entries,
        load_average()
    );
    latency(args, tmp.path(), &mut table).await?;
    agent_memory(args, tmp.path(), &mut table).await?;
    table.print();
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Part 1: latencies against `lanyard dev`.
async fn latency(args: &Args, tmp: &Path, table: &mut Table) -> anyhow::Result<()> {
    let dir = tmp.join("dev");
    let socket = dir.join("agent.sock");
    let mut dev = Process::spawn(
        &args.lanyard,
        &["dev".as_ref(), "--dir".as_ref(), dir.as_os_str()],
        tmp.join("dev.log"),
    )?;
    // `lanyard dev` gives this user one identity.
    wait_until(
        "lanyard dev serving an SVID",
        &mut dev,
        "lanyard dev",
        || first_x509_message(&socket, 1),
    )
    .await?;
    // The JWT-SVID cache holds (ID, audience) from the first call on.
    jwt_call(&mut connect(&socket).await?).await?;

    // One client.
    let mut one = Samples::default();
    for _ in 0..args.samples {
        one.0.push(first_x509_message(&socket, 1).await?);
    }
    table.row(
        "first FetchX509SVID message (new connection + attestation), 1 client",
        one.summary(),
    );
    let mut client = connect(&socket).await?;
    let mut one = Samples::default();
    for _ in 0..args.samples {
        one.0.push(jwt_call(&mut client).await?);
    }
    table.row("FetchJWTSVID (cached), 1 client", one.summary());

    let (before, _) = memory_kib(dev.pid()?)?;

    // `clients` connected, each with an open FetchX509SVID stream, while one more is timed.
    let socket_for = |_: usize| {
        let socket = socket.clone();
        async move {
            let mut client = connect(&socket).await?;
            let (stream, _) = open_x509_stream(&mut client).await?;
            anyhow::Ok((client, stream))
        }
    };
    let connected = for_each_parallel(args.clients, SETUP_PARALLELISM, socket_for).await?;
    dev.check_alive("lanyard dev")?;
    let (with_clients, _) = memory_kib(dev.pid()?)?;
    table.row(
        format!(
            "lanyard dev (server + agent in one process) RSS before → with {} clients holding open streams",
            args.clients
        ),
        format!(
            "{} → {} ({:.0} KiB per client)",
            mib(before),
            mib(with_clients),
            with_clients.saturating_sub(before) as f64 / args.clients as f64
        ),
    );
    let mut probe = Samples::default();
    for _ in 0..args.samples {
        probe.0.push(first_x509_message(&socket, 1).await?);
    }
    table.row(
        format!(
            "first FetchX509SVID message, 1 client timed while {} others hold open streams",
            args.clients
        ),
        probe.summary(),
    );
    let mut probe = Samples::default();
    for _ in 0..args.samples {
        probe.0.push(jwt_call(&mut client).await?);
    }
    table.row(
        format!(
            "FetchJWTSVID (cached), 1 client timed while {} others hold open streams",
            args.clients
        ),
        probe.summary(),
    );

    // A burst: all `clients` at the same instant, over the connections they already have (JWT)
    // or over new ones (first X.509 message).
    let (clients, streams): (Vec<_>, Vec<_>) = connected.into_iter().unzip();
    let cpu = CpuMeter::new(dev.pid()?)?;
    let (jwt, wall) = burst(clients, args.rounds, |mut client| async move {
        let latency = jwt_call(&mut client).await?;
        Ok((client, latency))
    })
    .await?;
    table.row(
        format!(
            "FetchJWTSVID (cached), {} clients at once × {} calls each ({:.0} calls/s)",
            args.clients,
            args.rounds,
            jwt.0.len() as f64 / wall.as_secs_f64()
        ),
        format!("{}; {}", jwt.summary(), cpu.finish(wall)?),
    );
    let cpu = CpuMeter::new(dev.pid()?)?;
    let sockets = vec![socket.clone(); args.clients];
    let (x509, wall) = burst(sockets, args.rounds, |socket| async move {
        let latency = first_x509_message(&socket, 1).await?;
        Ok((socket, latency))
    })
    .await?;
    table.row(
        format!(
            "first FetchX509SVID message, {} new clients at once × {} each ({:.0} first messages/s)",
            args.clients,
            args.rounds,
            x509.0.len() as f64 / wall.as_secs_f64()
        ),
        format!("{}; {}", x509.summary(), cpu.finish(wall)?),
    );

    dev.check_alive("lanyard dev")?;
    let (rss, hwm) = memory_kib(dev.pid()?)?;
    drop(streams);
    table.row(
        "lanyard dev (server + agent in one process) RSS / peak after the above",
        format!("{} / {}", mib(rss), mib(hwm)),
    );
    dev.stop().await;
    Ok(())
}

/// The `addr=` of the log line with `marker`.
fn logged_addr(log: &str, marker: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(marker))?;
    Some(
        line.split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

/// Part 2: the agent's memory with `entries` cached SVIDs, server and agent as two processes.
async fn agent_memory(args: &Args, tmp: &Path, table: &mut Table) -> anyhow::Result<()> {
    let server_dir = tmp.join("server");
    let admin_socket = tmp.join("admin.sock");
    let mut server = Process::spawn(
        &args.lanyard,
        &[
            "server".as_ref(),
            "run".as_ref(),
            "--trust-domain".as_ref(),
            TRUST_DOMAIN.as_ref(),
            "--data-dir".as_ref(),
            server_dir.as_os_str(),
            "--admin-socket".as_ref(),
            admin_socket.as_os_str(),
            "--bind".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        tmp.join("server.log"),
    )?;
    let mut admin = wait_until("the server's admin API", &mut server, "the server", || {
        let admin_socket = admin_socket.clone();
        async move {
            let channel = lanyard_workload::connect_channel(&admin_socket).await?;
            let mut admin = AdminClient::new(channel);
            admin.health(pb::HealthRequest {}).await?;
            anyhow::Ok(admin)
        }
    })
    .await?;
    let node_addr = wait_until("the node API address", &mut server, "the server", || {
        let log = server_log(&tmp.join("server.log"));
        async move { logged_addr(&log, "node API listening").ok_or_else(|| anyhow!("not yet")) }
    })
    .await?;

    let agent_id = format!("spiffe://{TRUST_DOMAIN}/lanyard/agent/bench");
    let token = timed(
        "GenerateJoinToken",
        admin.generate_join_token(pb::GenerateJoinTokenRequest {
            ttl_seconds: 600,
            spiffe_id: agent_id.clone(),
        }),
    )
    .await?
    .into_inner()
    .token;
    let bundle = timed("GetBundle", admin.get_bundle(pb::GetBundleRequest {}))
        .await?
        .into_inner()
        .spiffe_json;
    let bundle_file = tmp.join("bundle.json");
    std::fs::write(&bundle_file, bundle)?;

    let socket = tmp.join("agent.sock");
    let agent_dir = tmp.join("agent");
    let mut agent = Process::spawn(
        &args.lanyard,
        &[
            "agent".as_ref(),
            "run".as_ref(),
            "--trust-domain".as_ref(),
            TRUST_DOMAIN.as_ref(),
            "--server".as_ref(),
            node_addr.as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--data-dir".as_ref(),
            agent_dir.as_os_str(),
            "--trust-bundle".as_ref(),
            bundle_file.as_os_str(),
            "--join-token".as_ref(),
            token.as_ref(),
        ],
        tmp.join("agent.log"),
    )?;
    // Up and attested: it answers a caller with no identity with PermissionDenied.
    wait_until("the agent answering", &mut agent, "the agent", || {
        let socket = socket.clone();
        async move {
            let mut client = connect(&socket).await?;
            match client.fetch_x509svid(with_header(X509svidRequest {})).await {
                Err(status) if status.code() == tonic::Code::PermissionDenied => Ok(()),
                Err(status) => Err(anyhow!("{status:?}")),
                Ok(response) => match response.into_inner().message().await {
                    Err(status) if status.code() == tonic::Code::PermissionDenied => Ok(()),
                    other => Err(anyhow!("unexpected answer {other:?}")),
                },
            }
        }
    })
    .await?;
    let agent_pid = agent.pid()?;
    let (rss, _) = memory_kib(agent_pid)?;
    table.row("agent RSS, attested, no entries", mib(rss));

    // The entries select this process's uid, so that it can see when every SVID is cached.
    let uid = rustix::process::getuid().as_raw();
    let start = Instant::now();
    for chunk in (0..args.entries).collect::<Vec<_>>().chunks(1000) {
        let entries = chunk
            .iter()
            .map(|i| pb::Entry {
                spiffe_id: format!("spiffe://{TRUST_DOMAIN}/bench/svc-{i}"),
                parent_id: agent_id.clone(),
                selectors: vec![format!("unix:uid:{uid}")],
                ..Default::default()
            })
            .collect();
        let response = timed(
            "BatchCreateEntries",
            admin.batch_create_entries(pb::BatchCreateEntriesRequest { entries }),
        )
        .await?
        .into_inner();
        let failed = response
            .results
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.code != 0))
            .count();
        ensure!(failed == 0, "{failed} entries were not created");
    }
    let entries = args.entries;
    wait_until(
        "the agent serving every SVID",
        &mut agent,
        "the agent",
        || first_x509_message(&socket, entries),
    )
    .await?;
    table.row(
        format!("{entries} entries created → all {entries} SVIDs served by the agent"),
        fmt_dur(start.elapsed()),
    );
    // The stream that delivered them is closed; what remains is the cache.
    let (rss, hwm) = memory_kib(agent_pid)?;
    table.row(
        format!("**agent RSS with {entries} cached SVIDs** / peak"),
        format!("{} / {}", mib(rss), mib(hwm)),
    );
    agent.stop().await;
    server.stop().await;
    Ok(())
}

fn server_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
