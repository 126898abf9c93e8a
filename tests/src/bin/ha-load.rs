//! `ha-load`: how fast a write through one server reaches the agents of another server on the same
//! PostgreSQL database (the change notices of issue 13).
//!
//! It makes a fresh database on `--postgres`, starts two real `lanyard server run` processes on it
//! (A and B, node APIs on ephemeral loopback ports, `datastore_poll_interval` from
//! `--poll-interval`), attests a simulated agent through A and holds its `SyncEntries` stream open
//! on both servers. Then:
//!
//! 1. **Entries**, `--entries` times one after the other: an entry for the agent is created through
//!    A's admin API; timed from the call's return (A's ack) to its arrival on B's stream, and on
//!    A's stream for comparison (the server that wrote it); and from the call's start, since A
//!    answers only after its own catch-up and gauge refresh, so B often has the entry first.
//! 2. **A burst**: one `BatchCreateEntries` of `--burst` entries through A; timed from A's ack
//!    until B's stream has delivered all of them.
//! 3. **Evictions**, `--evictions` times: a new agent attested through A opens a stream on B;
//!    `EvictAgent` through A; timed from its return until B ends the stream (`PermissionDenied`).
//!
//! Arrival times are taken by a task per stream as each message is read. Only loopback and the
//! given database are contacted; every wait has a timeout and `--max-seconds` bounds the run. This
//! is a benchmark, not a test: its figures move with the machine's load.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use lanyard_e2e::bench::{
    CALL_TIMEOUT, Samples, ServerProcess, TRUST_DOMAIN, Table, fmt_dur, join_token, load_average,
    server_bundle, timed,
};
use lanyard_e2e::node_client::SimAgent;
use lanyard_e2e::postgres::FreshDatabase;
use lanyard_proto::admin::{self as admin_pb, admin_client::AdminClient};
use lanyard_proto::node as pb;
use tokio::sync::mpsc;
use tonic::transport::Channel;

const USAGE: &str = "\
usage: ha-load [options]

  --lanyard PATH        the lanyard binary (default target/release/lanyard)
  --postgres URL        a PostgreSQL server to make a fresh database on
                        (default postgres://postgres@127.0.0.1:5432/postgres)
  --entries N           entries created one at a time through A (default 500)
  --burst N             entries in the one burst through A, at most 1000 (default 1000)
  --evictions N         agents evicted one at a time through A (default 100)
  --poll-interval D     the servers' datastore_poll_interval (default 5s, the server's default)
  --max-seconds N       give up (and stop the servers) after this long (default 900)
";

/// How long a stream may take to deliver what the run waits for.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Logs the servers must keep: the node API address is an info line of `lanyard_server`.
const SERVER_LOG: &str = "warn,lanyard_server=info";

#[derive(Debug, Clone)]
struct Args {
    lanyard: PathBuf,
    postgres: String,
    entries: usize,
    burst: usize,
    evictions: usize,
    poll_interval: String,
    max_seconds: u64,
}

/// What a stream-reading task reports: when a message arrived and the SPIFFE IDs of the entries
/// it carried, or when and how the stream ended.
type Arrival = (Instant, Result<Vec<String>, tonic::Code>);

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        lanyard: PathBuf::from("target/release/lanyard"),
        postgres: "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
        entries: 500,
        burst: 1000,
        evictions: 100,
        poll_interval: "5s".to_owned(),
        max_seconds: 900,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--lanyard" => args.lanyard = PathBuf::from(value()?),
            "--postgres" => args.postgres = value()?,
            "--entries" => args.entries = number(&flag, &value()?)?,
            "--burst" => args.burst = number(&flag, &value()?)?,
            "--evictions" => args.evictions = number(&flag, &value()?)?,
            "--poll-interval" => args.poll_interval = value()?,
            "--max-seconds" => args.max_seconds = number(&flag, &value()?)?,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n\n{USAGE}"),
        }
    }
    ensure!(
        args.burst <= 1000,
        "--burst must be at most 1000 (one call)"
    );
    ensure!(
        args.poll_interval
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()),
        "--poll-interval: a duration like 5s or 1h"
    );
    Ok(args)
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow!("{flag}: `{value}` is not a non-negative number"))
}

// --- admin calls ---

/// Creates entries for `parent` named `spiffe://<td>/ha/<name>`; fails if any was refused.
async fn create_entries(
    admin: &mut AdminClient<Channel>,
    parent: &str,
    names: &[String],
) -> anyhow::Result<()> {
    let entries = names
        .iter()
        .map(|name| admin_pb::Entry {
            spiffe_id: format!("spiffe://{TRUST_DOMAIN}/ha/{name}"),
            parent_id: parent.to_owned(),
            selectors: vec![format!("unix:user:{name}")],
            ..Default::default()
        })
        .collect();
    let (response, _) = timed(
        "BatchCreateEntries",
        admin.batch_create_entries(admin_pb::BatchCreateEntriesRequest { entries }),
    )
    .await?;
    for result in response.results {
        match result.status {
            Some(status) if status.code != 0 => bail!("an entry was refused: {status:?}"),
            _ => {}
        }
    }
    Ok(())
}

// --- streams ---

/// Opens `agent`'s entry stream, waits for its first message, and hands every later message (or
/// the stream's end) to the returned receiver with the time it was read.
async fn follow(agent: &SimAgent) -> anyhow::Result<mpsc::UnboundedReceiver<Arrival>> {
    let mut client = agent.client().await?;
    let mut stream = tokio::time::timeout(
        CALL_TIMEOUT,
        client.sync_entries(pb::SyncEntriesRequest { since_revision: 0 }),
    )
    .await
    .map_err(|_| anyhow!("SyncEntries: no answer"))?
    .map_err(|s| anyhow!("SyncEntries: {s}"))?
    .into_inner();
    // The full set, possibly in chunks.
    loop {
        let first = tokio::time::timeout(DELIVERY_TIMEOUT, stream.message())
            .await
            .map_err(|_| anyhow!("no first message on the entry stream"))??
            .ok_or_else(|| anyhow!("the entry stream ended at once"))?;
        if !first.more {
            break;
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // The client's connection lives as long as the stream is read.
        let _client = client;
        loop {
            let next = stream.message().await;
            let at = Instant::now();
            let arrival = match next {
                Ok(Some(message)) => Ok(message.entries.into_iter().map(|e| e.spiffe_id).collect()),
                Ok(None) => Err(tonic::Code::Ok),
                Err(status) => Err(status.code()),
            };
            let ended = arrival.is_err();
            if tx.send((at, arrival)).is_err() || ended {
                return;
            }
        }
    });
    Ok(rx)
}

/// Waits until every one of `wanted` has arrived on the stream; returns when the last did.
async fn arrival_of(
    stream: &mut mpsc::UnboundedReceiver<Arrival>,
    mut wanted: HashSet<String>,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let (at, arrival) = tokio::time::timeout_at(deadline, stream.recv())
            .await
            .map_err(|_| {
                anyhow!(
                    "{} entries did not arrive in {DELIVERY_TIMEOUT:?}",
                    wanted.len()
                )
            })?
            .ok_or_else(|| anyhow!("the stream reader stopped"))?;
        let ids = arrival.map_err(|code| anyhow!("the entry stream ended: {code:?}"))?;
        for id in ids {
            wanted.remove(&id);
        }
        if wanted.is_empty() {
            return Ok(at);
        }
    }
}

// --- the run ---

async fn run(args: &Args, table: &mut Table) -> anyhow::Result<()> {
    let database = FreshDatabase::create(&args.postgres, "lanyard_ha_load").await?;
    let tmp = tempfile::Builder::new().prefix("ha-load-").tempdir()?;
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        format!("datastore_poll_interval = \"{}\"\n", args.poll_interval),
    )?;
    let extra = [
        "--datastore".to_owned(),
        database.url.clone(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let (mut server, admin) =
            ServerProcess::start(&args.lanyard, &dir, &extra, SERVER_LOG).await?;
        let addr = server.node_addr().await?;
        servers.push((server, admin, addr));
    }
    let outcome = measure(args, table, &mut servers).await;
    for (server, _, _) in servers {
        server.stop().await;
    }
    outcome
}

async fn measure(
    args: &Args,
    table: &mut Table,
    servers: &mut [(ServerProcess, AdminClient<Channel>, std::net::SocketAddr)],
) -> anyhow::Result<()> {
    let addr_a = servers[0].2;
    let addr_b = servers[1].2;
    // Both servers' roots in the bundle A hands out: then an agent of A also trusts B.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let bundle = loop {
        let bundle = server_bundle(&mut servers[0].1).await?;
        if bundle.x509_authorities().len() == 2 {
            break bundle;
        }
        ensure!(
            Instant::now() < deadline,
            "server A's bundle never held both roots"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let admin_a = &mut servers[0].1;

    let agent_id = format!("spiffe://{TRUST_DOMAIN}/lanyard/agent/ha/main");
    let token = join_token(admin_a, &agent_id, 3_600).await?;
    let on_a = SimAgent::attest(addr_a, &bundle, &token)
        .await
        .map_err(|s| anyhow!("AttestAgent: {s}"))?;
    let on_b = SimAgent {
        addr: addr_b,
        ..on_a.clone()
    };
    let mut stream_a = follow(&on_a).await?;
    let mut stream_b = follow(&on_b).await?;

    let (mut to_b, mut to_a, mut call_to_b) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut before_ack = 0;
    for i in 0..args.entries {
        let name = format!("one-{i}");
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/ha/{name}");
        let start = Instant::now();
        create_entries(admin_a, &agent_id, std::slice::from_ref(&name)).await?;
        let ack = Instant::now();
        let at_b = arrival_of(&mut stream_b, HashSet::from([spiffe_id.clone()])).await?;
        let at_a = arrival_of(&mut stream_a, HashSet::from([spiffe_id])).await?;
        if at_b < ack {
            before_ack += 1;
        }
        to_b.push(at_b.saturating_duration_since(ack));
        to_a.push(at_a.saturating_duration_since(ack));
        call_to_b.push(at_b.saturating_duration_since(start));
    }
    if !to_b.is_empty() {
        let n = to_b.len();
        table.row(
            format!("**entry: A's ack → on B's stream**, {n} entries: p50 / p99 / max"),
            to_b.p50_p99_max(),
        );
        table.row(
            format!("entry: A's ack → on A's stream (the writing server), {n} entries"),
            to_a.p50_p99_max(),
        );
        table.row(
            format!("entry: create call sent → on B's stream, {n} entries"),
            call_to_b.p50_p99_max(),
        );
        table.row(
            "entries on B's stream before A's ack returned",
            format!("{before_ack} of {n}"),
        );
    }

    if args.burst > 0 {
        let names: Vec<String> = (0..args.burst).map(|i| format!("burst-{i}")).collect();
        let wanted: HashSet<String> = names
            .iter()
            .map(|n| format!("spiffe://{TRUST_DOMAIN}/ha/{n}"))
            .collect();
        create_entries(admin_a, &agent_id, &names).await?;
        let ack = Instant::now();
        let at_b = arrival_of(&mut stream_b, wanted.clone()).await?;
        let at_a = arrival_of(&mut stream_a, wanted).await?;
        table.row(
            format!(
                "burst: one BatchCreateEntries of {}, A's ack → all on B's stream (on A's)",
                args.burst
            ),
            format!(
                "{} ({})",
                fmt_dur(at_b.saturating_duration_since(ack)),
                fmt_dur(at_a.saturating_duration_since(ack))
            ),
        );
    }
    drop((stream_a, stream_b));

    let mut evictions = Samples::default();
    for i in 0..args.evictions {
        let id = format!("spiffe://{TRUST_DOMAIN}/lanyard/agent/ha/evicted-{i}");
        let token = join_token(admin_a, &id, 3_600).await?;
        let agent = SimAgent::attest(addr_a, &bundle, &token)
            .await
            .map_err(|s| anyhow!("AttestAgent: {s}"))?;
        let mut stream = follow(&SimAgent {
            addr: addr_b,
            ..agent
        })
        .await?;
        timed(
            "EvictAgent",
            admin_a.evict_agent(admin_pb::EvictAgentRequest {
                spiffe_id: id.clone(),
            }),
        )
        .await?;
        let ack = Instant::now();
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        // Messages that carry something else (a bundle, revoked tokens) come before the end.
        let (at, arrival) = loop {
            let next = tokio::time::timeout_at(deadline, stream.recv())
                .await
                .map_err(|_| anyhow!("B did not end {id}'s stream in {DELIVERY_TIMEOUT:?}"))?
                .context("the stream reader stopped")?;
            if next.1.is_err() {
                break next;
            }
        };
        ensure!(
            arrival == Err(tonic::Code::PermissionDenied),
            "B's stream of an evicted agent gave {arrival:?}, not PermissionDenied"
        );
        evictions.push(at.saturating_duration_since(ack));
    }
    if !evictions.is_empty() {
        table.row(
            format!(
                "**eviction: EvictAgent's ack at A → B ends the agent's stream**, {} agents: p50 / p99 / max",
                evictions.len()
            ),
            evictions.p50_p99_max(),
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ha-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let load_before = load_average();
    let mut table = Table::default();
    let outcome = tokio::select! {
        result = run(&args, &mut table) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        () = tokio::time::sleep(Duration::from_secs(args.max_seconds)) => {
            Err(anyhow!("gave up after --max-seconds {}", args.max_seconds))
        }
    };
    println!(
        "ha-load: two servers on one PostgreSQL, datastore_poll_interval {}; load average {load_before} before, {} after\n",
        args.poll_interval,
        load_average()
    );
    println!("{}", table.markdown());
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
