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
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use lanyard_core::{EntryId, EntrySpec, RegistrationEntry, Selector, SelectorSet, SpiffeId};
use lanyard_e2e::bench::{
    CALL_TIMEOUT, CpuMeter, Rng, Samples, ServerProcess, TRUST_DOMAIN, Table, fmt_dur,
    load_average, memory_kib, mib, rate, timed,
};
use lanyard_proto::admin::{self as pb, admin_client::AdminClient};
use lanyard_store::{DataStore, EntryFilter, PageRequest, StoreConfig};
use sqlx::Connection as _;
use tonic::transport::Channel;

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

/// Defaults the server gives entries whose TTLs are 0; the raw phase writes the same values.
const X509_TTL: Duration = Duration::from_secs(3600);
const JWT_TTL: Duration = Duration::from_secs(300);

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

// --- the measurements through the admin API ---

/// Entries per second, as the tables print them.
fn fmt_rate(r: f64) -> String {
    lanyard_e2e::bench::fmt_rate(r, "entries")
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
    let extra_args: Vec<String> = match &datastore_url {
        Some(url) => vec!["--datastore".to_owned(), url.clone()],
        None => Vec::new(),
    };
    let (server, mut client) =
        ServerProcess::start(&args.lanyard, &dir, &extra_args, "warn").await?;
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
