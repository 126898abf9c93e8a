//! `task-load`: what a task grant costs (issue 10's benchmark).
//!
//! 1. **Bare limits, in this process, in the same run:** minting a task-shaped JWT-SVID with
//!    `lanyard-ca` (ES256 over the same claims the server signs: `lanyard` claim, `jti`), on one
//!    thread; and appending audit records with `lanyard-store` to SQLite (a temp file) and, with
//!    `--postgres URL`, to a fresh PostgreSQL database: one writer, then `--clients` writers.
//! 2. **Grants through the real processes:** for each policy count in `--policies`, a
//!    `lanyard server run --policy-dir` holding that many policies (one that grants the bench
//!    tool, the rest for other tools and workloads) and a `lanyard agent run`; the load generator
//!    is the workload (an entry selects its uid) and calls `lanyard.task.v1.Tasks/BeginTask` on
//!    the agent's socket: first one caller, then `--clients` callers at once, each on its own
//!    connection, for `--seconds` each. Every grant is a Cedar decision, an ES256 signature and a
//!    durable write of the task and its audit record (SQLite, the default datastore).
//!
//! Every wait is bounded; `--max-seconds` bounds the whole run. It prints a Markdown table.
//! `tests/tests/task_load_smoke.rs` runs it with tiny numbers so that it cannot rot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use lanyard_e2e::bench::{
    AgentProcess, CpuMeter, Samples, ServerProcess, TRUST_DOMAIN, Table, fmt_rate, load_average,
    per_second, rate, timed,
};
use lanyard_e2e::postgres::FreshDatabase;
use lanyard_proto::admin as pb;
use lanyard_proto::task::{BeginTaskRequest, tasks_client::TasksClient};
use lanyard_store::{AuditAppend, StoreConfig};
use lanyard_workload::SecurityHeader;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const USAGE: &str = "\
usage: task-load [options]

  --lanyard PATH     the lanyard binary (default target/release/lanyard)
  --policies LIST    policy counts to measure, comma-separated (default 1,100,10000)
  --clients N        concurrent callers (default 50)
  --seconds S        how long each measured phase runs (default 5)
  --records N        audit records per append measurement (default 2000)
  --postgres URL     also measure audit appends on PostgreSQL (a fresh database is made there)
  --revocations N    tasks ended one by one for the revocation latency (default 200; 0: skip);
                     with --postgres also across two servers (at most 100 tasks)
  --max-seconds N    give up after this long (default 900)
";

/// The tool the granting policy names.
const TOOL: &str = "bench-tool";
/// The bench workload's SPIFFE ID (the load generator's own identity).
const WORKLOAD: &str = "spiffe://example.org/bench/agent";
const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/bench";

#[derive(Debug, Clone)]
struct Args {
    lanyard: PathBuf,
    policies: Vec<usize>,
    clients: usize,
    seconds: f64,
    records: usize,
    postgres: Option<String>,
    revocations: usize,
    max_seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        lanyard: PathBuf::from("target/release/lanyard"),
        policies: vec![1, 100, 10_000],
        clients: 50,
        seconds: 5.0,
        records: 2000,
        postgres: None,
        revocations: 200,
        max_seconds: 900,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            bail!("help");
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        let number = |v: &str| -> anyhow::Result<usize> {
            v.parse()
                .with_context(|| format!("{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "--lanyard" => args.lanyard = PathBuf::from(value),
            "--policies" => {
                args.policies = value
                    .split(',')
                    .map(number)
                    .collect::<anyhow::Result<_>>()?;
            }
            "--clients" => args.clients = number(&value)?,
            "--seconds" => {
                args.seconds = value
                    .parse()
                    .with_context(|| format!("{flag}: `{value}` is not a number"))?;
            }
            "--records" => args.records = number(&value)?,
            "--postgres" => args.postgres = Some(value),
            "--revocations" => args.revocations = number(&value)?,
            "--max-seconds" => args.max_seconds = u64::try_from(number(&value)?)?,
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(
        args.policies.iter().all(|n| (1..=100_000).contains(n)),
        "--policies: each count must be 1 to 100000"
    );
    ensure!(
        (1..=10_000).contains(&args.clients),
        "--clients must be 1 to 10000"
    );
    ensure!(
        args.seconds.is_finite() && (0.01..=600.0).contains(&args.seconds),
        "--seconds must be between 0.01 and 600"
    );
    ensure!(args.records >= 1, "--records must be at least 1");
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if e.to_string() != "help" {
                eprintln!("task-load: {e}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("task-load: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(args.max_seconds);
    match runtime.block_on(async { tokio::time::timeout(limit, run(&args)).await }) {
        Ok(Ok(table)) => {
            print!("{}", table.markdown());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("task-load: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("task-load: gave up after {limit:?} (--max-seconds)");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Table> {
    let mut table = Table::default();
    eprintln!(
        "task-load: policies {:?}, {} clients, {} s per phase; load average {}",
        args.policies,
        args.clients,
        args.seconds,
        load_average()
    );
    bare_jwt(args, &mut table)?;
    let tmp = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", tmp.path().join("audit.sqlite3").display());
    audit_appends("SQLite", &sqlite, args, &mut table).await?;
    if let Some(admin_url) = &args.postgres {
        let database = FreshDatabase::create(admin_url, "lanyard_task_load").await?;
        audit_appends("PostgreSQL", &database.url, args, &mut table).await?;
    }
    for &policies in &args.policies {
        grants(args, policies, &mut table).await?;
    }
    if args.revocations > 0 {
        revocation_latency(args, &mut table, None, args.revocations).await?;
        if let Some(admin_url) = &args.postgres {
            // Across servers the bound is the audit-log follower's tick (1 s): fewer tasks.
            let database = FreshDatabase::create(admin_url, "lanyard_task_load").await?;
            let tasks = args.revocations.min(100);
            revocation_latency(args, &mut table, Some(&database.url), tasks).await?;
        }
    }
    Ok(table)
}

/// Mints task-shaped JWT-SVIDs in this process: the signing every grant must do.
fn bare_jwt(args: &Args, table: &mut Table) -> anyhow::Result<()> {
    use lanyard_ca::{Ca, CaConfig, JwtSvidRequest, MemoryKeyManager};
    let td = lanyard_core::TrustDomain::new(TRUST_DOMAIN)?;
    let ca = Ca::new(
        CaConfig::new(td),
        Arc::new(MemoryKeyManager::new()),
        Arc::new(lanyard_core::SystemClock),
    )?;
    let mut claims = serde_json::Map::new();
    claims.insert(
        "lanyard".into(),
        serde_json::json!({"txn": "0123456789abcdef0123456789abcdef", "ops": ["read"]}),
    );
    let request = JwtSvidRequest {
        spiffe_id: WORKLOAD.parse()?,
        audience: vec![TOOL.to_owned()],
        ttl: Some(Duration::from_secs(60)),
        jti: Some("0123456789abcdef0123456789abcdef".to_owned()),
        extra_claims: claims,
    };
    let one = per_second(args.seconds, 1, || {
        ca.mint_jwt_svid(&request)?;
        Ok(())
    })?;
    table.row(
        "bare task JWT-SVID minting (lanyard-ca, ES256, 1 thread)",
        fmt_rate(one, "tokens"),
    );
    Ok(())
}

/// Appends audit records: one writer, then `--clients` writers at once.
async fn audit_appends(
    name: &str,
    url: &str,
    args: &Args,
    table: &mut Table,
) -> anyhow::Result<()> {
    let mut config = StoreConfig::new(url);
    config.max_connections = u32::try_from(args.clients.min(64))?;
    let store = lanyard_store::open(config).await?;
    let record = |i: usize| AuditAppend {
        kind: "task.granted".to_owned(),
        actor: WORKLOAD.to_owned(),
        subject: format!("task-{i:08}"),
        details: format!(
            r#"{{"agent":"{AGENT_ID}","audience":"{TOOL}","jti":"{i:032x}","operations":["read"],"policy_ids":["grant"]}}"#
        ),
    };
    let start = Instant::now();
    for i in 0..args.records {
        store.append_audit(&record(i)).await?;
    }
    let one = rate(args.records, start.elapsed());
    let writers = args.clients;
    let per_writer = args.records.div_ceil(writers);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let records: Vec<AuditAppend> = (0..per_writer)
            .map(|i| record(w * per_writer + i))
            .collect();
        tasks.spawn(async move {
            for r in &records {
                store.append_audit(r).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let many = rate(per_writer * writers, start.elapsed());
    table.row(
        format!("audit appends, {name}, durable, 1 writer / {writers} writers"),
        format!(
            "{} / {}",
            fmt_rate(one, "records"),
            fmt_rate(many, "records")
        ),
    );
    store.close().await;
    Ok(())
}

/// The policy files for a run with `count` policies: one grants `read` on the bench tool to the
/// bench workload; the others grant other operations on other tools to other workloads, as a
/// large deployment's policies would.
fn write_policies(dir: &Path, count: usize) -> anyhow::Result<()> {
    /// Policies per file: the server reads at most 1 MiB per file.
    const PER_FILE: usize = 1000;
    std::fs::create_dir_all(dir)?;
    let mut text = format!(
        "@id(\"grant\")\n@max_ttl(\"5m\")\npermit(principal == Workload::\"{WORKLOAD}\", action == Action::\"read\", resource == Tool::\"{TOOL}\")\nwhen {{ principal.trust_domain == \"{TRUST_DOMAIN}\" }};\n"
    );
    for i in 1..count {
        if i % PER_FILE == 0 {
            std::fs::write(
                dir.join(format!("bench-{:03}.cedar", i / PER_FILE - 1)),
                &text,
            )?;
            text.clear();
        }
        text.push_str(&format!(
            "permit(principal == Workload::\"spiffe://{TRUST_DOMAIN}/svc-{i}\", action == Action::\"op-{}\", resource == Tool::\"tool-{i}\")\nwhen {{ context.ttl_seconds <= 600 }};\n",
            i % 100
        ));
    }
    std::fs::write(
        dir.join(format!("bench-{:03}.cedar", count / PER_FILE)),
        text,
    )?;
    Ok(())
}

type Tasks = TasksClient<InterceptedService<Channel, SecurityHeader>>;

async fn tasks_client(socket: &Path) -> anyhow::Result<Tasks> {
    let channel = lanyard_workload::connect_channel(socket).await?;
    Ok(TasksClient::with_interceptor(channel, SecurityHeader))
}

fn grant_request() -> BeginTaskRequest {
    BeginTaskRequest {
        audience: TOOL.to_owned(),
        operations: vec!["read".to_owned()],
        ttl_seconds: 60,
        purpose: "benchmark".to_owned(),
        ..BeginTaskRequest::default()
    }
}

/// One grant, timed.
async fn grant(client: &mut Tasks) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let response = client.begin_task(grant_request()).await;
    let took = start.elapsed();
    let response = response.map_err(|s| anyhow!("BeginTask: {:?}: {}", s.code(), s.message()))?;
    ensure!(
        !response.get_ref().token.is_empty(),
        "a grant without a token"
    );
    Ok(took)
}

/// Calls BeginTask on `client` until `until`; returns the latencies.
async fn caller(mut client: Tasks, until: Instant) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    while Instant::now() < until {
        samples.push(grant(&mut client).await?);
    }
    Ok(samples)
}

async fn grants(args: &Args, policies: usize, table: &mut Table) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let policy_dir = tmp.path().join("policies");
    write_policies(&policy_dir, policies)?;
    let server_dir = tmp.path().join("server");
    std::fs::create_dir_all(&server_dir)?;
    let extra = vec!["--policy-dir".to_owned(), policy_dir.display().to_string()];
    let (mut server, mut admin) =
        ServerProcess::start(&args.lanyard, &server_dir, &extra, "info").await?;
    let node_addr = server.node_addr().await?;
    let agent_dir = tmp.path().join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let agent =
        AgentProcess::start(&args.lanyard, &agent_dir, &mut admin, node_addr, AGENT_ID).await?;
    let uid = rustix::process::getuid().as_raw();
    let (created, _) = timed(
        "BatchCreateEntries",
        admin.batch_create_entries(pb::BatchCreateEntriesRequest {
            entries: vec![pb::Entry {
                spiffe_id: WORKLOAD.to_owned(),
                parent_id: AGENT_ID.to_owned(),
                selectors: vec![format!("unix:uid:{uid}")],
                ..Default::default()
            }],
        }),
    )
    .await?;
    ensure!(
        created
            .results
            .iter()
            .all(|r| r.status.as_ref().is_some_and(|s| s.code == 0)),
        "the bench entry was not created"
    );
    // Ready when the agent has the entry: the first grant succeeds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = tasks_client(&agent.socket).await?;
    let mut pause = Duration::from_millis(10);
    while let Err(e) = grant(&mut client).await {
        ensure!(
            Instant::now() < deadline,
            "no grant within 60 s: {e:#}\nserver:\n{}\nagent:\n{}",
            server.log_tail(),
            agent.log_tail()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }

    let phase = Duration::from_secs_f64(args.seconds);
    let one = caller(client, Instant::now() + phase).await?;
    table.row(
        format!("grant latency, {policies} policies, 1 caller: p50 / p99"),
        one.p50_p99(),
    );

    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(tasks_client(&agent.socket).await?);
    }
    let meter = CpuMeter::start(server.pid)?;
    let start = Instant::now();
    let until = start + phase;
    let mut callers = tokio::task::JoinSet::new();
    for client in clients {
        callers.spawn(caller(client, until));
    }
    let mut all = Samples::default();
    while let Some(done) = callers.join_next().await {
        all.0.extend(done??.0);
    }
    let took = start.elapsed();
    let cpu = meter.finish()?;
    table.row(
        format!(
            "**grants, {policies} policies, {} callers**: p50 / p99; rate; CPU",
            args.clients
        ),
        format!(
            "{}; {}; {cpu}",
            all.p50_p99(),
            fmt_rate(rate(all.len(), took), "grants")
        ),
    );
    agent.stop().await;
    server.stop().await;
    Ok(())
}

/// How long from `EndTask` returning at agent A until agent B's `ValidateJWTSVID` refuses the
/// token, for `--revocations` tasks one after the other. B is polled back to back, so the figure
/// includes one validation round trip (~0.3 ms) of resolution.
async fn revocation_latency(
    args: &Args,
    table: &mut Table,
    shared_datastore: Option<&str>,
    tasks_to_end: usize,
) -> anyhow::Result<()> {
    use lanyard_proto::task::EndTaskRequest;
    use lanyard_proto::workload::ValidateJwtsvidRequest;
    use lanyard_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;

    let tmp = tempfile::tempdir()?;
    let policy_dir = tmp.path().join("policies");
    write_policies(&policy_dir, 1)?;
    let mut extra = vec!["--policy-dir".to_owned(), policy_dir.display().to_string()];
    if let Some(url) = shared_datastore {
        extra.extend(["--datastore".to_owned(), url.to_owned()]);
    }
    // One server, or two on one PostgreSQL database: agent A on the first, B on the last.
    let mut servers = Vec::new();
    for name in if shared_datastore.is_some() {
        &["s1", "s2"][..]
    } else {
        &["s1"][..]
    } {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let (mut server, admin) = ServerProcess::start(&args.lanyard, &dir, &extra, "info").await?;
        let node_addr = server.node_addr().await?;
        servers.push((server, admin, node_addr));
    }
    let mut agents = Vec::new();
    for (name, index) in [("a", 0), ("b", servers.len() - 1)] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let id = format!("spiffe://{TRUST_DOMAIN}/lanyard/agent/{name}");
        let (_, admin, node_addr) = &mut servers[index];
        agents.push(AgentProcess::start(&args.lanyard, &dir, admin, *node_addr, &id).await?);
    }
    let admin = &mut servers[0].1;
    let (a, b) = (&agents[0], &agents[1]);
    let uid = rustix::process::getuid().as_raw();
    timed(
        "BatchCreateEntries",
        admin.batch_create_entries(pb::BatchCreateEntriesRequest {
            entries: vec![pb::Entry {
                spiffe_id: WORKLOAD.to_owned(),
                parent_id: format!("spiffe://{TRUST_DOMAIN}/lanyard/agent/a"),
                selectors: vec![format!("unix:uid:{uid}")],
                ..Default::default()
            }],
        }),
    )
    .await?;
    let mut tasks = tasks_client(&a.socket).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while grant(&mut tasks).await.is_err() {
        ensure!(Instant::now() < deadline, "no grant at agent A within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut validator =
        SpiffeWorkloadApiClient::new(lanyard_workload::connect_channel(&b.socket).await?);
    let validate = |token: String| {
        let mut request = tonic::Request::new(ValidateJwtsvidRequest {
            audience: TOOL.to_owned(),
            svid: token,
        });
        request.metadata_mut().insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        request
    };
    let mut samples = Samples::default();
    for _ in 0..tasks_to_end {
        let granted = tasks.begin_task(grant_request()).await?.into_inner();
        let task_id = granted.task.map(|t| t.id).unwrap_or_default();
        // B accepts it first (so that what is measured is the revocation, not the token's arrival).
        let accept_by = Instant::now() + Duration::from_secs(10);
        while validator
            .validate_jwtsvid(validate(granted.token.clone()))
            .await
            .is_err()
        {
            ensure!(
                Instant::now() < accept_by,
                "agent B never accepted a fresh token"
            );
        }
        tasks.end_task(EndTaskRequest { task_id }).await?;
        let ended = Instant::now();
        let refuse_by = ended + Duration::from_secs(10);
        loop {
            match validator
                .validate_jwtsvid(validate(granted.token.clone()))
                .await
            {
                Err(status) if status.message().contains("revoked") => break,
                _ => ensure!(
                    Instant::now() < refuse_by,
                    "agent B still accepted an ended task's token after 10 s"
                ),
            }
        }
        samples.push(ended.elapsed());
    }
    let servers_label = if shared_datastore.is_some() {
        "two servers on one PostgreSQL (A on one, B on the other)"
    } else {
        "one server"
    };
    table.row(
        format!(
            "**revocation: EndTask returned at agent A → agent B refuses the token**, {servers_label}, {} tasks: p50 / p99 / max",
            samples.len()
        ),
        samples.p50_p99_max(),
    );
    for agent in agents {
        agent.stop().await;
    }
    for (server, _, _) in servers {
        server.stop().await;
    }
    Ok(())
}
