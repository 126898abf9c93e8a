//! `node-load`: a load generator for the server's node API (issue 5's benchmark).
//!
//! It starts the real `lanyard server run` (temp data dir, admin socket in it, node API on an
//! ephemeral loopback port) and plays agents against it from this one process: join-token
//! attestation with `lanyard_e2e::node_client::SimAgent`, then mTLS with the agent SVID on
//! connections with TCP_NODELAY, as the real agent makes them.
//!
//! 1. **Propagation**: one agent holds its `SyncEntries` stream open; `--propagation` times, an
//!    entry for it is created through the admin API (t0 = the create call returned), the stream
//!    delivers it (t1), and `BatchNewX509Svid` returns an SVID for it that verifies against the
//!    bundle (t2: the agent holds the new SVID).
//! 2. **Signing throughput**: `--sign-clients` connections of that agent call `BatchNewX509Svid`
//!    with `--sign-batch` pre-generated CSRs, in `--sign-rounds` rounds each followed by the CA's
//!    bare minting from a CSR in this process (`lanyard-ca`, in-memory keys) for the same wall
//!    time; then propagation again while the connections keep signing; then bare ECDSA P-256
//!    signatures and verifications with aws-lc-rs.
//! 3. **Scale**: `--entries` entries (`--big` of them parented to one "big" agent, the rest spread
//!    over the others), `--agents` agents attested with join tokens, each holding a `SyncEntries`
//!    stream; then the server's CPU over `--idle-seconds` of nothing changing, its RSS, the big
//!    agent's full sync (stream opened → last chunk), single changes while every stream is open
//!    (entry created → it arrives on its agent's stream) and one batch with an entry per agent;
//!    the same changes before the streams open, for comparison.
//!
//! Only loopback is contacted (the server binds 127.0.0.1:0 and the address it logs is checked);
//! every loop is bounded by count, every call and wait by a timeout, and `--max-seconds` ends the
//! run whatever it is doing. This is a benchmark, not a test: its figures move with the machine's
//! load. `tests/tests/node_load_smoke.rs` runs it with tiny numbers so it cannot rot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail, ensure};
use hyper_util::rt::TokioIo;
use lanyard_core::{Bundle, BundleSet, SpiffeId};
use lanyard_e2e::bench::{
    CALL_TIMEOUT, CpuMeter, MAX_MESSAGE, Rng, Samples, ServerProcess, TRUST_DOMAIN, Table, fmt_dur,
    fmt_rate, join_token, load_average, memory_kib, mib, per_second, rate, server_bundle, timed,
};
use lanyard_e2e::node_client::{SimAgent, key_and_csr};
use lanyard_e2e::postgres::FreshDatabase;
use lanyard_proto::admin::{self as admin_pb, admin_client::AdminClient};
use lanyard_proto::node::{self as pb, node_client::NodeClient};
use lanyard_tls::{Authorizer, BundleHandle, SpiffeServerVerifier};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

const USAGE: &str = "\
usage: node-load [options]

  --lanyard PATH        the lanyard binary (default target/release/lanyard)
  --propagation N       propagation samples: entries created one at a time for one agent (default 200)
  --sign-clients N      concurrent BatchNewX509Svid connections (default 4)
  --sign-batch N        CSRs per BatchNewX509Svid call, at most 1000 (default 500)
  --sign-batches N      calls per connection per round (default 2)
  --sign-rounds N       signing rounds, each paired with as long a bare-CA run (default 10)
  --storm-batches N     calls per connection while propagation is timed under signing load (default 10)
  --bare-seconds S      how long each in-process bare rate runs (default 2)
  --agents N            simulated agents for the scale phase, at least 2 (default 1000)
  --entries N           entries for the scale phase (default 100000)
  --big N               of those, entries parented to the one big agent (default 10000)
  --idle-seconds N      how long the server's idle CPU is measured (default 10)
  --full-syncs N        full syncs of the big agent to time (default 5)
  --changes N           single changes timed while every stream is open (default 50)
  --create-batch N      entries per BatchCreateEntries call when filling the server (default 1000)
  --attest-concurrency N  attestations in flight at once (default 8)
  --connect-concurrency N  agents connecting their mTLS channel at once (default 32)
  --no-nodelay          agents' connections without TCP_NODELAY (the real agent sets it)
  --postgres URL        store the entries in a fresh database on this PostgreSQL server
                        (default: the server's embedded SQLite)
  --max-seconds N       give up (and stop the server) after this long (default 1800)
";

/// How long a stream may take to deliver something the run waits for.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Logs the server must keep: its node API address is an info line of `lanyard_server`.
const SERVER_LOG: &str = "warn,lanyard_server=info";

#[derive(Debug, Clone)]
struct Args {
    lanyard: PathBuf,
    propagation: usize,
    sign_clients: usize,
    sign_batch: usize,
    sign_batches: usize,
    sign_rounds: usize,
    storm_batches: usize,
    bare_seconds: f64,
    agents: usize,
    entries: usize,
    big: usize,
    idle_seconds: u64,
    full_syncs: usize,
    changes: usize,
    /// Entries per BatchCreateEntries call when filling the server.
    create_batch: usize,
    /// Agents attesting at once; each is a TLS handshake plus a datastore transaction.
    attest_concurrency: usize,
    /// Agents connecting their mTLS channel at once.
    connect_concurrency: usize,
    nodelay: bool,
    /// A PostgreSQL server to make the run's database on; SQLite when unset.
    postgres: Option<String>,
    max_seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        lanyard: PathBuf::from("target/release/lanyard"),
        propagation: 200,
        sign_clients: 4,
        sign_batch: 500,
        sign_batches: 2,
        sign_rounds: 10,
        storm_batches: 10,
        bare_seconds: 2.0,
        agents: 1_000,
        entries: 100_000,
        big: 10_000,
        idle_seconds: 10,
        full_syncs: 5,
        changes: 50,
        create_batch: 1000,
        attest_concurrency: 8,
        connect_concurrency: 32,
        nodelay: true,
        postgres: None,
        max_seconds: 1_800,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--lanyard" => args.lanyard = PathBuf::from(value()?),
            "--propagation" => args.propagation = number(&flag, &value()?)?,
            "--sign-clients" => args.sign_clients = number(&flag, &value()?)?,
            "--sign-batch" => args.sign_batch = number(&flag, &value()?)?,
            "--sign-batches" => args.sign_batches = number(&flag, &value()?)?,
            "--sign-rounds" => args.sign_rounds = number(&flag, &value()?)?,
            "--storm-batches" => args.storm_batches = number(&flag, &value()?)?,
            "--bare-seconds" => args.bare_seconds = number(&flag, &value()?)?,
            "--agents" => args.agents = number(&flag, &value()?)?,
            "--entries" => args.entries = number(&flag, &value()?)?,
            "--big" => args.big = number(&flag, &value()?)?,
            "--create-batch" => args.create_batch = number(&flag, &value()?)?,
            "--attest-concurrency" => args.attest_concurrency = number(&flag, &value()?)?,
            "--connect-concurrency" => args.connect_concurrency = number(&flag, &value()?)?,
            "--idle-seconds" => args.idle_seconds = number(&flag, &value()?)?,
            "--full-syncs" => args.full_syncs = number(&flag, &value()?)?,
            "--changes" => args.changes = number(&flag, &value()?)?,
            "--max-seconds" => args.max_seconds = number(&flag, &value()?)?,
            "--no-nodelay" => args.nodelay = false,
            "--postgres" => args.postgres = Some(value()?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n\n{USAGE}"),
        }
    }
    ensure!(
        args.propagation > 0,
        "--propagation must be at least 1 (the signing phase uses those entries)"
    );
    ensure!(args.sign_clients > 0, "--sign-clients must be at least 1");
    ensure!(
        (1..=1_000).contains(&args.sign_batch),
        "--sign-batch must be 1..=1000 (the server's limit)"
    );
    ensure!(args.sign_batches > 0, "--sign-batches must be at least 1");
    ensure!(args.sign_rounds > 0, "--sign-rounds must be at least 1");
    ensure!(args.storm_batches > 0, "--storm-batches must be at least 1");
    ensure!(
        args.bare_seconds.is_finite() && (0.01..=60.0).contains(&args.bare_seconds),
        "--bare-seconds must be between 0.01 and 60"
    );
    ensure!(
        args.agents >= 2,
        "--agents must be at least 2 (the big one and others)"
    );
    ensure!(args.big <= args.entries, "--big cannot exceed --entries");
    ensure!(
        args.create_batch > 0 && args.attest_concurrency > 0 && args.connect_concurrency > 0,
        "--create-batch, --attest-concurrency and --connect-concurrency must be at least 1"
    );
    Ok(args)
}

/// Entries per second between consecutive `(entries in, time since the start)` marks, e.g.
/// `1.9 k, 1.8 k, … entries/s`: whether the insert rate holds as the table grows.
fn tenth_rates(marks: &[(usize, Duration)]) -> String {
    let mut previous = (0, Duration::ZERO);
    let rates: Vec<String> = marks
        .iter()
        .map(|&(count, at)| {
            let r = rate(count - previous.0, at.saturating_sub(previous.1));
            previous = (count, at);
            format!("{:.1} k", r / 1e3)
        })
        .collect();
    format!("{} entries/s", rates.join(", "))
}

/// Raises the soft limit on open files to the hard one: this process holds one connection per
/// agent, and the server it starts (which inherits the limit) as many again.
fn raise_fd_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).context("raise the open-file limit")?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow!("{flag}: `{value}` is not a non-negative number"))
}

// --- admin calls ---

fn agent_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/lanyard/agent/bench/{name}")
}

fn entry(parent: &str, spiffe_id: String, selectors: Vec<String>) -> admin_pb::Entry {
    admin_pb::Entry {
        spiffe_id,
        parent_id: parent.to_owned(),
        selectors,
        ..Default::default()
    }
}

/// Creates `entries` in one call and returns their ids, failing if any was refused.
async fn create_entries(
    admin: &mut AdminClient<Channel>,
    entries: Vec<admin_pb::Entry>,
) -> anyhow::Result<Vec<String>> {
    let n = entries.len();
    let (response, _) = timed(
        "BatchCreateEntries",
        admin.batch_create_entries(admin_pb::BatchCreateEntriesRequest { entries }),
    )
    .await?;
    ensure!(
        response.results.len() == n,
        "BatchCreateEntries: {} results for {n} entries",
        response.results.len()
    );
    response
        .results
        .into_iter()
        .map(|r| match (r.status, r.entry) {
            (Some(status), Some(entry)) if status.code == 0 => Ok(entry.id),
            (status, _) => Err(anyhow!("BatchCreateEntries refused an entry: {status:?}")),
        })
        .collect()
}

/// Attests with a join token made for `spiffe_id`, within the call timeout.
async fn attest(addr: SocketAddr, bundle: &Bundle, token: &str) -> anyhow::Result<SimAgent> {
    tokio::time::timeout(CALL_TIMEOUT, SimAgent::attest(addr, bundle, token))
        .await
        .map_err(|_| anyhow!("AttestAgent: no answer in {CALL_TIMEOUT:?}"))?
        .map_err(|s| anyhow!("AttestAgent: {:?}: {}", s.code(), s.message()))
}

/// The agent's mTLS client, accepting messages as large as the server sends.
///
/// Not `SimAgent::client`: that connects without TCP_NODELAY, and the real agent
/// (`crates/agent/src/node.rs`) sets it. Without it every small request waits for the server's
/// delayed ACK, which adds ~40 ms per call on Linux loopback and would be measured as the
/// server's latency. `--no-nodelay` keeps Nagle on to show that.
async fn agent_client(agent: &SimAgent, nodelay: bool) -> anyhow::Result<NodeClient<Channel>> {
    let addr = agent.addr;
    let server_id = agent
        .bundle
        .trust_domain()
        .id_from_segments(&["lanyard", "server"])?;
    let bundles: BundleSet = [agent.bundle.clone()].into_iter().collect();
    let verifier =
        SpiffeServerVerifier::new(BundleHandle::new(bundles), Authorizer::Exact(server_id));
    let config = Arc::new(lanyard_tls::client_config(
        verifier,
        Some(agent.svid.clone()),
    )?);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_| {
        let config = config.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(nodelay)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect("localhost".try_into().map_err(std::io::Error::other)?, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }));
    let channel = tokio::time::timeout(CALL_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("connect: no answer in {CALL_TIMEOUT:?}"))?
        .context("connect to the node API")?;
    Ok(NodeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

// --- sync streams ---

/// What a followed stream reports, stamped when the message was read off the connection.
#[derive(Debug)]
enum StreamEvent {
    /// The first full set has arrived completely.
    Synced { agent: usize, entries: usize },
    /// A later message.
    Update {
        agent: usize,
        at: Instant,
        spiffe_ids: Vec<String>,
        full_sync: bool,
    },
    /// The stream failed or ended.
    Ended { agent: usize, why: String },
}

/// Reads agent `agent`'s stream until it ends or nobody listens, reporting each message.
async fn follow(
    agent: usize,
    mut client: NodeClient<Channel>,
    events: mpsc::UnboundedSender<StreamEvent>,
) {
    let opened = tokio::time::timeout(
        CALL_TIMEOUT,
        client.sync_entries(pb::SyncEntriesRequest { since_revision: 0 }),
    )
    .await;
    let mut stream = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            let why = format!("SyncEntries: {:?}: {}", status.code(), status.message());
            let _ = events.send(StreamEvent::Ended { agent, why });
            return;
        }
        Err(_) => {
            let why = format!("SyncEntries: no answer in {CALL_TIMEOUT:?}");
            let _ = events.send(StreamEvent::Ended { agent, why });
            return;
        }
    };
    let mut initial = Some(0usize);
    loop {
        let event = match stream.message().await {
            Ok(Some(message)) => {
                let at = Instant::now();
                match initial.as_mut() {
                    Some(count) => {
                        *count += message.entries.len();
                        if message.more {
                            continue;
                        }
                        let entries = *count;
                        initial = None;
                        StreamEvent::Synced { agent, entries }
                    }
                    None => StreamEvent::Update {
                        agent,
                        at,
                        spiffe_ids: message.entries.into_iter().map(|e| e.spiffe_id).collect(),
                        full_sync: message.full_sync,
                    },
                }
            }
            Ok(None) => StreamEvent::Ended {
                agent,
                why: "the server ended the stream".to_owned(),
            },
            Err(status) => StreamEvent::Ended {
                agent,
                why: format!("{:?}: {}", status.code(), status.message()),
            },
        };
        let last = matches!(event, StreamEvent::Ended { .. });
        if events.send(event).is_err() || last {
            return;
        }
    }
}

/// Waits for the stream of `agent` to deliver `spiffe_id`; returns when it was read. Events for
/// other agents or ids are counted in `stray` (there should be none).
async fn delivered(
    events: &mut mpsc::UnboundedReceiver<StreamEvent>,
    agent: usize,
    spiffe_id: &str,
    stray: &mut usize,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                anyhow!("{spiffe_id} did not reach agent {agent} within {DELIVERY_TIMEOUT:?}")
            })?
            .ok_or_else(|| anyhow!("every stream follower has stopped"))?;
        match event {
            StreamEvent::Update {
                agent: a,
                at,
                spiffe_ids,
                ..
            } if a == agent && spiffe_ids.iter().any(|s| s == spiffe_id) => return Ok(at),
            StreamEvent::Update {
                agent,
                full_sync: true,
                ..
            } => {
                // A stream that fell behind is sent everything again: worth knowing about.
                eprintln!("note: agent {agent}'s stream was sent a full set again");
                *stray += 1;
            }
            StreamEvent::Ended { agent, why } => bail!("the stream of agent {agent} ended: {why}"),
            _ => *stray += 1,
        }
    }
}

/// Waits until `n` streams have delivered their full set; returns entries received per agent.
async fn all_synced(
    events: &mut mpsc::UnboundedReceiver<StreamEvent>,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<HashMap<usize, usize>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut synced = HashMap::with_capacity(n);
    while synced.len() < n {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                anyhow!(
                    "only {} of {n} streams delivered their full set within {timeout:?}",
                    synced.len()
                )
            })?
            .ok_or_else(|| anyhow!("every stream follower has stopped"))?;
        match event {
            StreamEvent::Synced { agent, entries } => {
                synced.insert(agent, entries);
            }
            StreamEvent::Ended { agent, why } => bail!("the stream of agent {agent} ended: {why}"),
            StreamEvent::Update { agent, .. } => {
                bail!("agent {agent} got an update before every stream was synced")
            }
        }
    }
    Ok(synced)
}

/// Verifies an X509-SVID chain against the bundle and returns its SPIFFE ID.
fn verify_svid(chain: &[Vec<u8>], bundles: &BundleSet) -> anyhow::Result<SpiffeId> {
    let svid = lanyard_core::x509::verify_x509_svid(chain, bundles, SystemTime::now())
        .map_err(|e| anyhow!("the SVID does not verify: {e}"))?;
    Ok(svid.spiffe_id().clone())
}

// --- 1. propagation ---

/// The agent of phases 1 and 2 and its entries.
#[derive(Debug)]
struct Propagated {
    agent: SimAgent,
    entry_ids: Vec<String>,
    /// The agent's followed stream.
    events: mpsc::UnboundedReceiver<StreamEvent>,
}

async fn propagation(
    args: &Args,
    ctx: &mut Context,
    table: &mut Table,
) -> anyhow::Result<Propagated> {
    let id = agent_id("propagation");
    let token = join_token(&mut ctx.admin, &id, 3_600).await?;
    let agent = attest(ctx.addr, &ctx.bundle, &token).await?;
    let mut client = agent_client(&agent, args.nodelay).await?;
    let (tx, mut events) = mpsc::unbounded_channel();
    // The stream shares the agent's one connection with its minting calls, as in a real agent.
    ctx.followers.spawn(follow(0, client.clone(), tx));
    all_synced(&mut events, 1, DELIVERY_TIMEOUT).await?;

    eprintln!("propagation: {} entries, one at a time", args.propagation);
    let mut create = Samples::default();
    let mut from_sent = Samples::default();
    let mut to_stream = Samples::default();
    let mut to_svid = Samples::default();
    let mut early = 0usize;
    let mut stray = 0usize;
    let mut entry_ids = Vec::with_capacity(args.propagation);
    let cpu = CpuMeter::start(ctx.server_pid)?;
    for i in 0..args.propagation {
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/bench/propagation/w-{i}");
        let sent = Instant::now();
        let ids = create_entries(
            &mut ctx.admin,
            vec![entry(&id, spiffe_id.clone(), vec![format!("unix:uid:{i}")])],
        )
        .await?;
        let t0 = Instant::now();
        let entry_id = ids
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("BatchCreateEntries returned no id"))?;
        let t1 = delivered(&mut events, 0, &spiffe_id, &mut stray).await?;
        // What an agent does on the news: a key, a CSR, and the SVID.
        let (_key, csr) = key_and_csr()?;
        let (response, _) = timed(
            "BatchNewX509Svid",
            client.batch_new_x509_svid(pb::BatchNewX509SvidRequest {
                params: vec![pb::X509SvidParams {
                    entry_id: entry_id.clone(),
                    csr,
                }],
            }),
        )
        .await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| anyhow!("BatchNewX509Svid returned no result"))?;
        ensure!(
            result.code == 0,
            "BatchNewX509Svid refused {entry_id}: {} {}",
            result.code,
            result.message
        );
        let got = verify_svid(&result.cert_chain, &ctx.bundles)?;
        ensure!(
            got.as_str() == spiffe_id,
            "the SVID is for {got}, not {spiffe_id}"
        );
        let t2 = Instant::now();
        create.push(t0 - sent);
        from_sent.push(t1.saturating_duration_since(sent));
        if t1 < t0 {
            early += 1;
        }
        to_stream.push(t1.saturating_duration_since(t0));
        to_svid.push(t2 - t0);
        entry_ids.push(entry_id);
    }
    let used = cpu.read()?;
    ensure!(stray == 0, "{stray} unexpected stream messages");
    table.row(
        "propagation: entry create call (`BatchCreateEntries` of 1, admin socket), p50 / p99 / max",
        create.p50_p99_max(),
    );
    table.row(
        "propagation: create call sent → entry on the agent's stream, p50 / p99 / max",
        from_sent.p50_p99_max(),
    );
    table.row(
        "**propagation: create returned → entry on the agent's stream** (t1 − t0), p50 / p99 / max",
        format!(
            "{}; {early} of {} arrived before the create call returned (counted as 0)",
            to_stream.p50_p99_max(),
            to_stream.len()
        ),
    );
    table.row(
        "**propagation: create returned → agent holds a verified SVID** (t2 − t0), p50 / p99 / max",
        to_svid.p50_p99_max(),
    );
    table.row(
        "server CPU per propagation sample (create + push to 1 stream + 1 SVID)",
        format!(
            "{:.1} ms",
            used.server_seconds * 1e3 / args.propagation as f64
        ),
    );
    Ok(Propagated {
        agent,
        entry_ids,
        events,
    })
}

// --- 2. signing throughput ---

async fn signing(
    args: &Args,
    ctx: &mut Context,
    propagated: &mut Propagated,
    table: &mut Table,
) -> anyhow::Result<()> {
    // Distinct keys per CSR, made before the clock starts so this process is not the bottleneck;
    // each connection sends its own CSRs every round (the server's work per CSR is the same).
    let pool_size = args.sign_clients * args.sign_batch;
    let started = Instant::now();
    let csrs: Vec<Vec<u8>> = (0..pool_size)
        .map(|_| key_and_csr().map(|(_, csr)| csr))
        .collect::<anyhow::Result<_>>()?;
    eprintln!(
        "signing: {pool_size} CSRs made in {}; {} rounds of {} connections × {} calls × {} CSRs",
        fmt_dur(started.elapsed()),
        args.sign_rounds,
        args.sign_clients,
        args.sign_batches,
        args.sign_batch
    );
    let ids = &propagated.entry_ids;
    let mut workers = Vec::with_capacity(args.sign_clients);
    for c in 0..args.sign_clients {
        let params = (0..args.sign_batch)
            .map(|k| {
                let n = c * args.sign_batch + k;
                pb::X509SvidParams {
                    entry_id: ids[n % ids.len()].clone(),
                    csr: csrs[n].clone(),
                }
            })
            .collect();
        let request = pb::BatchNewX509SvidRequest { params };
        let mut client = agent_client(&propagated.agent, args.nodelay).await?;
        // One call each before the clock starts: connections warm, code paths paged in.
        sign_batch(&mut client, request.clone(), &ctx.bundles).await?;
        workers.push(SignWorker { client, request });
    }
    let workers = Arc::new(workers);
    let bare_ca = Arc::new(BareCa::new()?);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);

    // Rounds alternate the network and the bare CA for the same wall time, so that load from
    // other processes on the machine shifts both alike; the ratio is taken per round.
    let mut minted = 0;
    let mut network_time = Duration::ZERO;
    let mut server_cpu = 0.0;
    let mut client_cpu = 0.0;
    let mut bare_count = 0.0;
    let mut bare_time = Duration::ZERO;
    let mut latencies = Samples::default();
    let mut ratios = Vec::with_capacity(args.sign_rounds);
    for _ in 0..args.sign_rounds {
        let cpu = CpuMeter::start(ctx.server_pid)?;
        let round = tokio::spawn(sign_round(
            workers.clone(),
            args.sign_batches,
            ctx.bundles.clone(),
        ));
        let (n, took, samples) = round.await.context("a signing round failed")??;
        let used = cpu.read()?;
        server_cpu += used.server_seconds;
        client_cpu += used.client_seconds;
        minted += n;
        network_time += took;
        latencies.0.extend(samples.0);
        let ca = bare_ca.clone();
        let seconds = took.as_secs_f64();
        let bare = tokio::task::spawn_blocking(move || per_second(seconds, threads, || ca.mint()))
            .await
            .context("the bare-rate task failed")??;
        bare_count += bare * seconds;
        bare_time += took;
        ratios.push(rate(n, took) / bare.max(1e-9));
    }
    let over_network = rate(minted, network_time);
    table.row(
        format!(
            "**`BatchNewX509Svid` over TLS**: {} rounds × {} connections × {} calls × {} CSRs = {minted} SVIDs",
            args.sign_rounds, args.sign_clients, args.sign_batches, args.sign_batch
        ),
        format!(
            "{}, **{}**",
            fmt_dur(network_time),
            fmt_rate(over_network, "SVIDs")
        ),
    );
    table.row(
        format!(
            "`BatchNewX509Svid` call of {} latency p50 / p99",
            args.sign_batch
        ),
        latencies.p50_p99(),
    );
    let wall = network_time.as_secs_f64().max(1e-9);
    table.row(
        "CPU during signing (one core = 100 %)",
        format!(
            "server {:.0} %, load generator {:.0} %; server CPU per SVID {:.1} µs",
            server_cpu / wall * 100.0,
            client_cpu / wall * 100.0,
            server_cpu / minted.max(1) as f64 * 1e6
        ),
    );
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an operation count"
    )]
    let bare_total = bare_count as usize;
    table.row(
        format!(
            "bare CA in this process: `Ca::mint_x509_svid_from_csr` (MemoryKeyManager), {threads} threads, same wall time as each round"
        ),
        fmt_rate(rate(bare_total, bare_time), "SVIDs"),
    );
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or_default();
    table.row(
        "**over TLS ÷ bare CA**, paired per round: median (min–max)",
        format!(
            "**{median:.2}** ({:.2}–{:.2})",
            ratios.first().copied().unwrap_or_default(),
            ratios.last().copied().unwrap_or_default()
        ),
    );

    eprintln!(
        "signing: propagation while the signing connections make {} calls each",
        args.storm_batches
    );
    let round = tokio::spawn(sign_round(
        workers.clone(),
        args.storm_batches,
        ctx.bundles.clone(),
    ));
    let mut during = Samples::default();
    let mut stray = 0;
    // Bounded by count as well as by the round's end.
    for k in 0..10_000 {
        if round.is_finished() {
            break;
        }
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/bench/under-load/u-{k}");
        let sent = Instant::now();
        create_entries(
            &mut ctx.admin,
            vec![entry(
                propagated.agent.spiffe_id.as_str(),
                spiffe_id.clone(),
                vec![format!("unix:uid:{k}")],
            )],
        )
        .await?;
        let at = delivered(&mut propagated.events, 0, &spiffe_id, &mut stray).await?;
        during.push(at.saturating_duration_since(sent));
    }
    round.await.context("a signing round failed")??;
    ensure!(stray == 0, "{stray} unexpected stream messages");
    table.row(
        format!(
            "propagation while {} connections call `BatchNewX509Svid` ({} × {} CSRs each): create call sent → on the stream, p50 / p99 / max",
            args.sign_clients, args.storm_batches, args.sign_batch
        ),
        during.p50_p99_max(),
    );

    eprintln!("bare rates in this process, {} s each", args.bare_seconds);
    let seconds = args.bare_seconds;
    let ca = bare_ca.clone();
    let bare = tokio::task::spawn_blocking(move || bare_rates(&ca, seconds))
        .await
        .context("the bare-rate task failed")??;
    table.row(
        "bare CA (`Ca::mint_x509_svid_from_csr`), 1 thread",
        fmt_rate(bare.mint_one, "SVIDs"),
    );
    table.row(
        "bare ECDSA P-256 sign (aws-lc-rs, ASN.1), 1 thread",
        fmt_rate(bare.sign, "signatures"),
    );
    table.row(
        "bare ECDSA P-256 parse key + verify (aws-lc-rs), 1 thread",
        fmt_rate(bare.verify, "verifications"),
    );
    let ceiling = 1.0 / (1.0 / bare.sign + 1.0 / bare.verify);
    table.row(
        "one verify + one sign, 1 thread (1 / (1/sign + 1/verify))",
        fmt_rate(ceiling, "SVIDs"),
    );
    Ok(())
}

/// One signing connection and the call it repeats.
#[derive(Debug)]
struct SignWorker {
    client: NodeClient<Channel>,
    request: pb::BatchNewX509SvidRequest,
}

/// Every worker makes `batches` calls, all workers at once. Returns SVIDs, wall time, latencies.
async fn sign_round(
    workers: Arc<Vec<SignWorker>>,
    batches: usize,
    bundles: BundleSet,
) -> anyhow::Result<(usize, Duration, Samples)> {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in workers.iter() {
        let (mut client, request) = (worker.client.clone(), worker.request.clone());
        let bundles = bundles.clone();
        tasks.spawn(async move {
            let mut latencies = Samples::default();
            let mut minted = 0;
            for _ in 0..batches {
                let (n, took) = sign_batch(&mut client, request.clone(), &bundles).await?;
                minted += n;
                latencies.push(took);
            }
            anyhow::Ok((minted, latencies))
        });
    }
    let mut minted = 0;
    let mut latencies = Samples::default();
    while let Some(done) = tasks.join_next().await {
        let (n, samples) = done.context("a signing task failed")??;
        minted += n;
        latencies.0.extend(samples.0);
    }
    Ok((minted, start.elapsed(), latencies))
}

/// One BatchNewX509Svid call; every result must be an SVID, and the first must verify.
async fn sign_batch(
    client: &mut NodeClient<Channel>,
    request: pb::BatchNewX509SvidRequest,
    bundles: &BundleSet,
) -> anyhow::Result<(usize, Duration)> {
    let n = request.params.len();
    let (response, took) = timed("BatchNewX509Svid", client.batch_new_x509_svid(request)).await?;
    ensure!(
        response.results.len() == n,
        "BatchNewX509Svid: {} results for {n} CSRs",
        response.results.len()
    );
    if let Some(bad) = response.results.iter().find(|r| r.code != 0) {
        bail!(
            "BatchNewX509Svid refused a CSR: {} {}",
            bad.code,
            bad.message
        );
    }
    // One verification per call keeps the check without making this process the bottleneck.
    if let Some(first) = response.results.first() {
        verify_svid(&first.cert_chain, bundles)?;
    }
    Ok((n, took))
}

/// The CA alone, in this process: what the server's minting would cost without gRPC and TLS.
struct BareCa {
    ca: lanyard_ca::Ca,
    csr: Vec<u8>,
    request: lanyard_ca::X509SvidRequest,
}

impl std::fmt::Debug for BareCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareCa").finish_non_exhaustive()
    }
}

impl BareCa {
    fn new() -> anyhow::Result<Self> {
        use lanyard_ca::{Ca, CaConfig, MemoryKeyManager, X509SvidRequest};
        let td = lanyard_core::TrustDomain::new(TRUST_DOMAIN)?;
        let ca = Ca::new(
            CaConfig::new(td),
            Arc::new(MemoryKeyManager::new()),
            Arc::new(lanyard_core::SystemClock),
        )?;
        let request = X509SvidRequest::new(SpiffeId::parse(&format!(
            "spiffe://{TRUST_DOMAIN}/bench/propagation/w-0"
        ))?);
        let (_, csr) = key_and_csr()?;
        Ok(Self { ca, csr, request })
    }

    /// What the server does per CSR: verify the CSR's signature, build and sign the SVID.
    fn mint(&self) -> anyhow::Result<()> {
        self.ca.mint_x509_svid_from_csr(&self.csr, &self.request)?;
        Ok(())
    }
}

#[derive(Debug)]
struct BareRates {
    mint_one: f64,
    sign: f64,
    verify: f64,
}

fn bare_rates(ca: &BareCa, seconds: f64) -> anyhow::Result<BareRates> {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
        ParsedPublicKey,
    };

    let mint_one = per_second(seconds, 1, || ca.mint())?;
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| anyhow!("cannot generate a P-256 key"))?;
    // About the size of a leaf's TBSCertificate.
    let message = vec![0x5a_u8; 420];
    let sign = per_second(seconds, 1, || {
        key.sign(&rng, &message)
            .map_err(|_| anyhow!("ECDSA signing failed"))?;
        Ok(())
    })?;
    let signature = key
        .sign(&rng, &message)
        .map_err(|_| anyhow!("ECDSA signing failed"))?;
    let public = key.public_key().as_ref().to_vec();
    let verify = per_second(seconds, 1, || {
        ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
            .map_err(|_| anyhow!("cannot parse the public key"))?
            .verify_sig(&message, signature.as_ref())
            .map_err(|_| anyhow!("the signature does not verify"))?;
        Ok(())
    })?;
    Ok(BareRates {
        mint_one,
        sign,
        verify,
    })
}

// --- 3. scale ---

async fn scale(args: &Args, ctx: &mut Context, table: &mut Table) -> anyhow::Result<()> {
    let pid = ctx.server_pid;
    let names: Vec<String> = (0..args.agents)
        .map(|i| {
            if i == 0 {
                agent_id("big")
            } else {
                agent_id(&format!("a-{i}"))
            }
        })
        .collect();
    // Entry e: the first `big` go to agent 0, the rest round-robin over agents 1..
    let others = args.agents - 1;
    let parent_of = |e: usize| {
        if e < args.big {
            0
        } else {
            1 + (e - args.big) % others
        }
    };
    let mut expected = vec![0usize; args.agents];
    for e in 0..args.entries {
        expected[parent_of(e)] += 1;
    }

    eprintln!("scale: creating {} entries", args.entries);
    let start = Instant::now();
    // When each tenth of the entries was in: whether the insert rate holds as the table grows.
    let tenth = args.entries.div_ceil(10).max(1);
    let mut tenths = Vec::with_capacity(10);
    let mut e = 0;
    while e < args.entries {
        let end = (e + args.create_batch).min(args.entries);
        let batch = (e..end)
            .map(|e| {
                entry(
                    &names[parent_of(e)],
                    format!("spiffe://{TRUST_DOMAIN}/bench/ns-{}/w-{e}", e % 100),
                    vec![format!("k8s:ns:ns-{}", e % 100), format!("k8s:sa:w-{e}")],
                )
            })
            .collect();
        create_entries(&mut ctx.admin, batch).await?;
        if end / tenth > e / tenth || end == args.entries {
            tenths.push((end, start.elapsed()));
            eprintln!("scale: {end} entries in {}", fmt_dur(start.elapsed()));
        }
        e = end;
    }
    let took = start.elapsed();
    table.row(
        format!(
            "scale: create {} entries (`BatchCreateEntries` of {}; context)",
            args.entries, args.create_batch
        ),
        format!(
            "{}, {}",
            fmt_dur(took),
            fmt_rate(rate(args.entries, took), "entries")
        ),
    );
    table.row(
        "scale: insert rate per tenth of the entries, first → last",
        tenth_rates(&tenths),
    );
    let (rss, _) = memory_kib(pid)?;
    table.row(
        format!("server RSS with {} entries, no agents", args.entries),
        mib(rss),
    );

    eprintln!("scale: attesting {} agents", args.agents);
    let start = Instant::now();
    let mut tokens = Vec::with_capacity(args.agents);
    for name in &names {
        tokens.push(join_token(&mut ctx.admin, name, 3_600).await?);
    }
    let token_time = start.elapsed();
    let start = Instant::now();
    let limit = Arc::new(Semaphore::new(args.attest_concurrency));
    let mut attesting = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (limit, addr, bundle) = (limit.clone(), ctx.addr, ctx.bundle.clone());
        attesting.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            anyhow::Ok((i, attest(addr, &bundle, &token).await?))
        });
    }
    let mut agents: Vec<Option<SimAgent>> = vec![None; args.agents];
    while let Some(done) = attesting.join_next().await {
        let (i, agent) = done.context("an attestation task failed")??;
        ensure!(
            agent.spiffe_id.as_str() == names[i],
            "agent {i} attested as {}, expected {}",
            agent.spiffe_id,
            names[i]
        );
        agents[i] = Some(agent);
    }
    let agents: Vec<SimAgent> = agents.into_iter().flatten().collect();
    ensure!(agents.len() == args.agents, "not every agent attested");
    let took = start.elapsed();
    table.row(
        format!(
            "scale: {} join tokens (one `GenerateJoinToken` each) / {} attestations ({} at a time)",
            args.agents, args.agents, args.attest_concurrency
        ),
        format!(
            "{} / {} = {}",
            fmt_dur(token_time),
            fmt_dur(took),
            fmt_rate(rate(args.agents, took), "agents")
        ),
    );

    // The cost of a change with (almost) no stream to push to: the datastore write and the
    // server's bookkeeping. The parent is no agent's, so no agent's set changes; only the
    // propagation agent's stream is open and wakes.
    eprintln!("scale: {} single changes with no stream open", args.changes);
    let nobody = agent_id("nobody");
    let mut quiet = Samples::default();
    let cpu = CpuMeter::start(pid)?;
    for i in 0..args.changes {
        let sent = Instant::now();
        create_entries(
            &mut ctx.admin,
            vec![entry(
                &nobody,
                format!("spiffe://{TRUST_DOMAIN}/bench/quiet/q-{i}"),
                vec![format!("k8s:sa:q-{i}")],
            )],
        )
        .await?;
        quiet.push(sent.elapsed());
    }
    if args.changes > 0 {
        let used = cpu.read()?;
        table.row(
            format!(
                "one change, {} entries, only the propagation agent's stream open: create call p50 / p99 / max; server CPU per change",
                args.entries
            ),
            format!(
                "{}; {:.1} ms",
                quiet.p50_p99_max(),
                used.server_seconds * 1e3 / args.changes as f64
            ),
        );
    }

    let batch: Vec<admin_pb::Entry> = (0..args.agents)
        .map(|i| {
            entry(
                &nobody,
                format!("spiffe://{TRUST_DOMAIN}/bench/quiet-fleet/f-{i}"),
                vec![format!("k8s:sa:qf-{i}")],
            )
        })
        .collect();
    let cpu = CpuMeter::start(pid)?;
    let sent = Instant::now();
    create_entries(&mut ctx.admin, batch).await?;
    let took = sent.elapsed();
    let used = cpu.read()?;
    table.row(
        format!(
            "one `BatchCreateEntries` of {} entries, only the propagation agent's stream open: call; server CPU",
            args.agents
        ),
        format!("{}; {:.0} ms", fmt_dur(took), used.server_seconds * 1e3),
    );

    eprintln!("scale: opening {} sync streams", args.agents);
    let (tx, mut events) = mpsc::unbounded_channel();
    let start = Instant::now();
    let limit = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut connecting = JoinSet::new();
    for (i, agent) in agents.iter().enumerate() {
        let (limit, agent, nodelay) = (limit.clone(), agent.clone(), args.nodelay);
        connecting.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            anyhow::Ok((i, agent_client(&agent, nodelay).await?))
        });
    }
    let mut big_client = None;
    while let Some(done) = connecting.join_next().await {
        let (i, client) = done.context("a connect task failed")??;
        if i == 0 {
            big_client = Some(client.clone());
        }
        ctx.followers.spawn(follow(i, client, tx.clone()));
    }
    drop(tx);
    let mut big_client = big_client.ok_or_else(|| anyhow!("the big agent did not connect"))?;
    let synced = all_synced(&mut events, args.agents, CALL_TIMEOUT).await?;
    let took = start.elapsed();
    for (agent, count) in &synced {
        ensure!(
            *count == expected[*agent],
            "agent {agent} received {count} entries, expected {}",
            expected[*agent]
        );
    }
    table.row(
        format!(
            "scale: {} agents connect (mTLS) and receive their full sets ({} + {} × ~{} entries)",
            args.agents,
            args.big,
            others,
            (args.entries - args.big) / others.max(1)
        ),
        fmt_dur(took),
    );
    let (server_rss, _) = memory_kib(pid)?;
    let (own_rss, _) = memory_kib("self")?;
    table.row(
        format!(
            "**server RSS with {} entries and {} open streams**",
            args.entries, args.agents
        ),
        format!("**{}** (load generator: {})", mib(server_rss), mib(own_rss)),
    );

    // Let the connect burst's aftermath (buffers, lazily freed memory) settle before calling it idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("scale: measuring idle CPU for {} s", args.idle_seconds);
    let cpu = CpuMeter::start(pid)?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle = cpu.read()?;
    let mut quiet = 0;
    while let Ok(event) = events.try_recv() {
        match event {
            StreamEvent::Ended { agent, why } => bail!("the stream of agent {agent} ended: {why}"),
            _ => quiet += 1,
        }
    }
    table.row(
        format!(
            "**server CPU, nothing changing, {} streams open, over {} s**",
            args.agents, args.idle_seconds
        ),
        format!(
            "**{:.2} %** of one core ({:.0} ms CPU); load generator {:.2} %; stream messages meanwhile: {quiet}",
            idle.server_percent(),
            idle.server_seconds * 1e3,
            idle.client_percent()
        ),
    );
    // The same memory once the server has been idle that long: the steady state of a server
    // holding this many entries and streams, after its allocator has returned what the connect
    // burst freed.
    let (server_rss, _) = memory_kib(pid)?;
    table.row(
        format!(
            "**server RSS with {} entries and {} open streams, after {} s idle**",
            args.entries,
            args.agents,
            args.idle_seconds + 2
        ),
        format!("**{}**", mib(server_rss)),
    );

    eprintln!("scale: {} full syncs of the big agent", args.full_syncs);
    let mut full = Samples::default();
    let cpu = CpuMeter::start(pid)?;
    for _ in 0..args.full_syncs {
        let (count, took) = full_sync(&mut big_client).await?;
        ensure!(
            count == args.big,
            "the big agent's full sync had {count} entries, expected {}",
            args.big
        );
        full.push(took);
    }
    if !full.is_empty() {
        let used = cpu.read()?;
        table.row(
            format!(
                "**big agent full sync: {} entries** (SyncEntries opened → last chunk, on its open connection), p50 / max",
                args.big
            ),
            format!(
                "**{}** / {} (n = {}) = {}; server CPU {:.0} ms per sync",
                fmt_dur(full.pct(50.0)),
                fmt_dur(full.max()),
                full.len(),
                fmt_rate(rate(args.big, full.pct(50.0)), "entries"),
                used.server_seconds * 1e3 / full.len() as f64
            ),
        );
    }

    eprintln!("scale: {} single changes", args.changes);
    let mut rng = Rng::from_clock();
    let mut create = Samples::default();
    let mut from_sent = Samples::default();
    let mut arrive = Samples::default();
    let mut early = 0;
    let mut stray = 0;
    let cpu = CpuMeter::start(pid)?;
    for i in 0..args.changes {
        let agent = rng.below(args.agents);
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/bench/change/c-{i}");
        let sent = Instant::now();
        create_entries(
            &mut ctx.admin,
            vec![entry(
                &names[agent],
                spiffe_id.clone(),
                vec![format!("k8s:sa:c-{i}")],
            )],
        )
        .await?;
        let t0 = Instant::now();
        let t1 = delivered(&mut events, agent, &spiffe_id, &mut stray).await?;
        create.push(t0 - sent);
        from_sent.push(t1.saturating_duration_since(sent));
        if t1 < t0 {
            early += 1;
        }
        arrive.push(t1.saturating_duration_since(t0));
    }
    if args.changes > 0 {
        let used = cpu.read()?;
        ensure!(
            stray == 0,
            "{stray} stream messages went to agents the changes were not for"
        );
        table.row(
            format!(
                "one change with {} streams open: entry create call, p50 / p99 / max",
                args.agents
            ),
            create.p50_p99_max(),
        );
        table.row(
            format!(
                "one change with {} streams open: create call sent → on its agent's stream, p50 / p99 / max",
                args.agents
            ),
            from_sent.p50_p99_max(),
        );
        table.row(
            format!(
                "**one change with {} streams open: create returned → on its agent's stream**, p50 / p99 / max",
                args.agents
            ),
            format!(
                "{}; {early} of {} arrived before the create call returned",
                arrive.p50_p99_max(),
                arrive.len()
            ),
        );
        table.row(
            "server CPU per change (create + index catch-up + fan-out to every stream)",
            format!("{:.1} ms", used.server_seconds * 1e3 / args.changes as f64),
        );
    }
    // A fleet-wide change: one BatchCreateEntries with an entry for every agent, as when a
    // deployment registers a workload on every node. Timed until the last stream has its entry.
    eprintln!("scale: one batch of {} entries, one per agent", args.agents);
    let batch: Vec<admin_pb::Entry> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            entry(
                name,
                format!("spiffe://{TRUST_DOMAIN}/bench/fleet/f-{i}"),
                vec![format!("k8s:sa:f-{i}")],
            )
        })
        .collect();
    let cpu = CpuMeter::start(pid)?;
    let sent = Instant::now();
    create_entries(&mut ctx.admin, batch).await?;
    let returned = sent.elapsed();
    let mut pending: std::collections::HashSet<usize> = (0..args.agents).collect();
    let mut last = sent;
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    while !pending.is_empty() {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                anyhow!(
                    "{} agents did not get their fleet entry within {CALL_TIMEOUT:?}",
                    pending.len()
                )
            })?
            .ok_or_else(|| anyhow!("every stream follower has stopped"))?;
        match event {
            StreamEvent::Update {
                agent,
                at,
                spiffe_ids,
                ..
            } => {
                let mine = format!("spiffe://{TRUST_DOMAIN}/bench/fleet/f-{agent}");
                ensure!(
                    spiffe_ids.iter().all(|s| *s == mine),
                    "agent {agent} was sent entries of others: {spiffe_ids:?}"
                );
                if pending.remove(&agent) {
                    last = last.max(at);
                }
            }
            StreamEvent::Ended { agent, why } => bail!("the stream of agent {agent} ended: {why}"),
            StreamEvent::Synced { agent, .. } => bail!("agent {agent} synced again"),
        }
    }
    let used = cpu.read()?;
    table.row(
        format!(
            "one `BatchCreateEntries` of {} entries, one per agent, {} streams open: call returned / last agent has its entry (from the call sent); server CPU",
            args.agents, args.agents
        ),
        format!(
            "{} / {}; {:.0} ms",
            fmt_dur(returned),
            fmt_dur(last.saturating_duration_since(sent)),
            used.server_seconds * 1e3
        ),
    );

    let (rss, peak) = memory_kib(pid)?;
    let (own, own_peak) = memory_kib("self")?;
    table.row(
        "server RSS at the end / peak (VmHWM)",
        format!("{} / {}", mib(rss), mib(peak)),
    );
    table.row(
        "load generator RSS at the end / peak",
        format!("{} / {}", mib(own), mib(own_peak)),
    );
    Ok(())
}

/// One full sync on an open connection: entries received and the time to the last chunk.
async fn full_sync(client: &mut NodeClient<Channel>) -> anyhow::Result<(usize, Duration)> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    let mut stream = tokio::time::timeout_at(
        deadline,
        client.sync_entries(pb::SyncEntriesRequest { since_revision: 0 }),
    )
    .await
    .map_err(|_| anyhow!("SyncEntries: no answer in {CALL_TIMEOUT:?}"))?
    .map_err(|s| anyhow!("SyncEntries: {:?}: {}", s.code(), s.message()))?
    .into_inner();
    let mut count = 0;
    let mut first = true;
    loop {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| anyhow!("the full sync did not finish in {CALL_TIMEOUT:?}"))?
            .map_err(|s| anyhow!("SyncEntries: {:?}: {}", s.code(), s.message()))?
            .ok_or_else(|| anyhow!("the stream ended inside the full set"))?;
        ensure!(
            !first || message.full_sync,
            "the first message is not a full set"
        );
        first = false;
        count += message.entries.len();
        if !message.more {
            return Ok((count, start.elapsed()));
        }
    }
}

// --- main ---

/// What the phases share.
#[derive(Debug)]
struct Context {
    admin: AdminClient<Channel>,
    addr: SocketAddr,
    bundle: Bundle,
    bundles: BundleSet,
    server_pid: u32,
    /// Every stream follower; dropping the set aborts them.
    followers: JoinSet<()>,
}

/// What must be cleaned up however the run ends.
#[derive(Debug)]
struct Resources {
    dir: tempfile::TempDir,
    server: Option<ServerProcess>,
    /// Dropped (and so removed) after the server has stopped.
    database: Option<FreshDatabase>,
}

async fn run(args: &Args, resources: &mut Resources, table: &mut Table) -> anyhow::Result<()> {
    let dir = resources.dir.path().join("server");
    std::fs::create_dir_all(&dir).context("create the server's directory")?;
    let mut extra = Vec::new();
    if let Some(postgres) = &args.postgres {
        let database = FreshDatabase::create(postgres, "lanyard_node_load").await?;
        extra = vec!["--datastore".to_owned(), database.url.clone()];
        resources.database = Some(database);
    }
    eprintln!("starting {}", args.lanyard.display());
    let (mut server, mut admin) =
        ServerProcess::start(&args.lanyard, &dir, &extra, SERVER_LOG).await?;
    let addr = server.node_addr().await;
    let server_pid = server.pid;
    resources.server = Some(server);
    let addr = addr?;
    let bundle = server_bundle(&mut admin).await?;
    let bundles: BundleSet = [bundle.clone()].into_iter().collect();
    let mut ctx = Context {
        admin,
        addr,
        bundle,
        bundles,
        server_pid,
        followers: JoinSet::new(),
    };

    // Let start-up work (CA creation, migrations) settle before calling the server idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, _) = memory_kib(server_pid)?;
    table.row("server RSS idle after start", mib(rss));
    let idle_for = Duration::from_secs(args.idle_seconds.min(5));
    let cpu = CpuMeter::start(server_pid)?;
    tokio::time::sleep(idle_for).await;
    let idle = cpu.read()?;
    table.row(
        format!(
            "server CPU idle, no agents, no entries, over {} s",
            idle_for.as_secs()
        ),
        format!(
            "{:.2} % of one core ({:.0} ms CPU)",
            idle.server_percent(),
            idle.server_seconds * 1e3
        ),
    );

    let mut propagated = propagation(args, &mut ctx, table).await?;
    signing(args, &mut ctx, &mut propagated, table).await?;
    scale(args, &mut ctx, table).await?;

    ctx.followers.abort_all();
    if let Some(server) = resources.server.take() {
        server.stop().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("node-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match raise_fd_limit() {
        Ok(files) if files < 2 * args.agents as u64 + 256 => {
            eprintln!(
                "node-load: warning: {files} open files allowed, {} agents need about twice that",
                args.agents
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!("node-load: warning: {e:#}"),
    }
    let dir = match tempfile::Builder::new().prefix("node-load-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("node-load: cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut resources = Resources {
        dir,
        server: None,
        database: None,
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
    if let Some(server) = resources.server.take() {
        server.stop().await;
    }
    drop(resources.database.take());

    println!(
        "## node-load: {} agents, {} entries ({} on the big agent), {} propagation samples, {}{}\n",
        args.agents,
        args.entries,
        args.big,
        args.propagation,
        if args.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        if args.nodelay {
            ""
        } else {
            ", agents without TCP_NODELAY"
        }
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
            eprintln!("node-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
