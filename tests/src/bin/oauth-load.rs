//! `oauth-load`: what an access token from the OAuth token endpoint costs (issue 12's benchmark).
//!
//! 1. **Bare limits, in this process, in the same run:** minting an RFC 9068 access token with
//!    `lanyard-ca` (`Ca::mint_access_token`, ES256, the claims the server writes), and verifying a
//!    JWT-SVID client assertion with `lanyard-core` (`verify_jwt_svid`), which the server also does
//!    for every request; each on one thread.
//! 2. **Tokens through the real server:** a `lanyard server run` (SQLite, the default datastore)
//!    with `[oauth]` on an ephemeral loopback port and a self-signed certificate for 127.0.0.1 made
//!    here, one policy that permits the bench client `read` on the bench resource, and an entry
//!    for the client. One client assertion, minted through the admin API with `aud` = the issuer,
//!    serves every request (`client_credentials` assertions may be reused). The load generator
//!    POSTs `client_credentials` requests to `/oauth/token` over HTTPS/1.1, each client on one
//!    keep-alive connection with one request in flight: first one client, then `--clients` at
//!    once, for `--seconds` each. Every token is a verification of the assertion, an entry read,
//!    a Cedar decision, an ES256 signature and a durable write of the task and its audit record.
//!
//! Every answer must be 200 with an `access_token`; any other answer, and any broken connection,
//! is counted as a failure, and a failure fails the run (after the table is printed). Every wait
//! is bounded; `--max-seconds` bounds the whole run. It prints a Markdown table.
//! `tests/tests/oauth_load_smoke.rs` runs it with tiny numbers so that it cannot rot.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail, ensure};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use lanyard_e2e::bench::{
    CALL_TIMEOUT, CpuMeter, Samples, ServerProcess, TRUST_DOMAIN, Table, fmt_rate, load_average,
    per_second, rate, timed,
};
use lanyard_proto::admin as pb;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

const USAGE: &str = "\
usage: oauth-load [options]

  --lanyard PATH     the lanyard binary (default target/release/lanyard)
  --clients N        concurrent clients, one keep-alive connection each (default 50)
  --seconds S        how long each measured phase runs (default 5)
  --max-seconds N    give up after this long (default 300)
";

/// The bench client's SPIFFE ID: the workload asking for tokens.
const CLIENT: &str = "spiffe://example.org/bench/oauth-client";
/// The parent of its entry; no agent runs: the token endpoint reads the entry, nothing attests.
const PARENT: &str = "spiffe://example.org/lanyard/agent/bench";
/// The tool server the tokens are for (`resource`, RFC 8707) and the scope asked for.
const RESOURCE: &str = "https://bench-tool.example/mcp";
const SCOPE: &str = "read";
const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
/// The client assertion's lifetime: it must outlive the run, and the server refuses assertions
/// that expire more than an hour from now.
const ASSERTION_TTL: Duration = Duration::from_secs(50 * 60);
/// The longest run allowed, so that the one assertion outlives it.
const MAX_RUN_SECONDS: u64 = 45 * 60;

#[derive(Debug, Clone)]
struct Args {
    lanyard: PathBuf,
    clients: usize,
    seconds: f64,
    max_seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        lanyard: PathBuf::from("target/release/lanyard"),
        clients: 50,
        seconds: 5.0,
        max_seconds: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            bail!("help");
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        let number = |v: &str| -> anyhow::Result<u64> {
            v.parse()
                .with_context(|| format!("{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "--lanyard" => args.lanyard = PathBuf::from(value),
            "--clients" => args.clients = usize::try_from(number(&value)?)?,
            "--seconds" => {
                args.seconds = value
                    .parse()
                    .with_context(|| format!("{flag}: `{value}` is not a number"))?;
            }
            "--max-seconds" => args.max_seconds = number(&value)?,
            other => bail!("unknown flag {other}"),
        }
    }
    // One connection each; the server takes at most 4096, and the default limit of open files
    // is often 1024.
    ensure!(
        (1..=1000).contains(&args.clients),
        "--clients must be 1 to 1000"
    );
    ensure!(
        args.seconds.is_finite() && (0.01..=600.0).contains(&args.seconds),
        "--seconds must be between 0.01 and 600"
    );
    ensure!(
        (1..=MAX_RUN_SECONDS).contains(&args.max_seconds),
        "--max-seconds must be 1 to {MAX_RUN_SECONDS}"
    );
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            if e.to_string() != "help" {
                eprintln!("oauth-load: {e}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("oauth-load: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(args.max_seconds);
    match runtime.block_on(async { tokio::time::timeout(limit, run(&args)).await }) {
        Ok(Ok(report)) => {
            print!("{}", report.table.markdown());
            if let Some(first) = report.first_failure {
                eprintln!(
                    "oauth-load: {} of {} requests failed; the first: {first}",
                    report.failures, report.requests
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("oauth-load: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("oauth-load: gave up after {limit:?} (--max-seconds)");
            ExitCode::FAILURE
        }
    }
}

/// The figures, and whether every request got its token.
#[derive(Debug, Default)]
struct Report {
    table: Table,
    requests: usize,
    failures: usize,
    first_failure: Option<String>,
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let load_before = load_average();
    eprintln!(
        "oauth-load: {} clients, {} s per phase; load average {load_before}",
        args.clients, args.seconds
    );
    let mut report = Report::default();
    let bare = bare_limits(args, &mut report.table)?;

    let tmp = tempfile::tempdir()?;
    let (server, target) = start_server(&args.lanyard, tmp.path()).await?;
    let target = Arc::new(target);
    let phase = Duration::from_secs_f64(args.seconds);
    let one = measure(&target, 1, phase, server.pid).await?;
    report.table.row(
        "token requests, 1 client: p50 / p99; rate; CPU",
        one.summary(),
    );
    let many = measure(&target, args.clients, phase, server.pid).await?;
    report.table.row(
        format!(
            "**token requests, {} clients**: p50 / p99; rate; CPU",
            args.clients
        ),
        many.summary(),
    );
    server.stop().await;

    report.table.row(
        format!(
            "bare access token minting ÷ token endpoint ({} clients)",
            args.clients
        ),
        format!("{:.0} : 1", bare / many.rate().max(1e-9)),
    );
    for outcome in [&one, &many] {
        report.requests += outcome.samples.len() + outcome.failures;
        report.failures += outcome.failures;
        if report.first_failure.is_none() {
            report.first_failure.clone_from(&outcome.first_failure);
        }
    }
    report.table.row(
        "failed requests (not 200 with an access_token)",
        format!("{} of {}", report.failures, report.requests),
    );
    report.table.row(
        "load average (1, 5, 15 min) at start / at end",
        format!("{load_before} / {}", load_average()),
    );
    Ok(report)
}

/// Mints access tokens and verifies client assertions in this process: the signing and the
/// verification every request needs. Returns the minting rate.
fn bare_limits(args: &Args, table: &mut Table) -> anyhow::Result<f64> {
    use lanyard_ca::{AccessTokenRequest, Ca, CaConfig, JwtSvidRequest, MemoryKeyManager};
    let td = lanyard_core::TrustDomain::new(TRUST_DOMAIN)?;
    let ca = Ca::new(
        CaConfig::new(td),
        Arc::new(MemoryKeyManager::new()),
        Arc::new(lanyard_core::SystemClock),
    )?;
    // The claims the server writes (crates/server/src/oauth/token.rs, `issue`).
    let issuer = "https://127.0.0.1:8443";
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), serde_json::json!(issuer));
    claims.insert("client_id".into(), serde_json::json!(CLIENT));
    claims.insert("scope".into(), serde_json::json!(SCOPE));
    claims.insert(
        "lanyard".into(),
        serde_json::json!({"txn": "0123456789abcdef0123456789abcdef"}),
    );
    let request = AccessTokenRequest {
        subject: CLIENT.to_owned(),
        audience: RESOURCE.to_owned(),
        ttl: Duration::from_secs(300),
        jti: "0123456789abcdef0123456789abcdef".to_owned(),
        extra_claims: claims,
    };
    let minting = per_second(args.seconds, 1, || {
        ca.mint_access_token(&request)?;
        Ok(())
    })?;
    table.row(
        "bare access token minting (`Ca::mint_access_token`, ES256, 1 thread)",
        fmt_rate(minting, "tokens"),
    );

    let mut assertion = JwtSvidRequest::new(CLIENT.parse()?, [issuer]).with_ttl(ASSERTION_TTL);
    assertion.jti = Some("0123456789abcdef0123456789abcdef".to_owned());
    let assertion = ca.mint_jwt_svid(&assertion)?.token;
    let bundles: lanyard_core::BundleSet = [ca.bundle()].into_iter().collect();
    let verifying = per_second(args.seconds, 1, || {
        lanyard_core::verify_jwt_svid(&assertion, issuer, &bundles, SystemTime::now())?;
        Ok(())
    })?;
    table.row(
        "bare client assertion verification (`verify_jwt_svid`, ES256, 1 thread)",
        fmt_rate(verifying, "assertions"),
    );
    Ok(minting)
}

// --- the server ---

/// Where the token endpoint is and what every request sends.
struct Target {
    addr: SocketAddr,
    /// The `Host` header: the issuer's authority.
    authority: String,
    path: String,
    tls: TlsConnector,
    /// The form, the same for every request.
    body: Bytes,
}

/// Starts the server with `[oauth]`, one policy and the client's entry; returns it with what a
/// client needs, once one token request has succeeded.
async fn start_server(lanyard: &Path, dir: &Path) -> anyhow::Result<(ServerProcess, Target)> {
    // A self-signed certificate for 127.0.0.1, trusted by the load generator as its own root.
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&key)?;
    let cert_file = dir.join("oauth-cert.pem");
    let key_file = dir.join("oauth-key.pem");
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[oauth]\nbind = \"127.0.0.1:0\"\ncert_file = {}\nkey_file = {}\naccess_token_ttl = \"5m\"\n",
            toml_string(&cert_file)?,
            toml_string(&key_file)?
        ),
    )?;
    let policy_dir = dir.join("policies");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(
        policy_dir.join("bench.cedar"),
        format!(
            "@id(\"bench\")\npermit(principal == Workload::\"{CLIENT}\", action == Action::\"{SCOPE}\", resource == Tool::\"{RESOURCE}\");\n"
        ),
    )?;
    let server_dir = dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    let extra = [
        "--config".to_owned(),
        config.display().to_string(),
        "--policy-dir".to_owned(),
        policy_dir.display().to_string(),
    ];
    let (server, mut admin) = ServerProcess::start(lanyard, &server_dir, &extra, "info").await?;

    let (metadata, _) = timed(
        "GetOAuthMetadata",
        admin.get_o_auth_metadata(pb::GetOAuthMetadataRequest {}),
    )
    .await?;
    let endpoint =
        serde_json::from_str::<serde_json::Value>(&metadata.metadata_json)?["token_endpoint"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no token_endpoint in the server's metadata"))?;
    let (authority, path) = endpoint
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| anyhow!("token endpoint {endpoint:?} is not https://host:port/path"))?;
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("token endpoint {endpoint:?}: not an IP address and port"))?;
    ensure!(
        addr.ip().is_loopback(),
        "the token endpoint is on {addr}, not loopback; this tool only talks to this machine"
    );

    let (created, _) = timed(
        "BatchCreateEntries",
        admin.batch_create_entries(pb::BatchCreateEntriesRequest {
            entries: vec![pb::Entry {
                spiffe_id: CLIENT.to_owned(),
                parent_id: PARENT.to_owned(),
                selectors: vec!["unix:uid:0".to_owned()],
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
        "the bench entry was not created: {created:?}"
    );
    let (assertion, _) = timed(
        "MintJwtSvid",
        admin.mint_jwt_svid(pb::MintJwtSvidRequest {
            spiffe_id: CLIENT.to_owned(),
            audience: vec![metadata.issuer.clone()],
            ttl_seconds: i64::try_from(ASSERTION_TTL.as_secs())?,
        }),
    )
    .await?;
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_assertion_type", JWT_SPIFFE)
        .append_pair("client_assertion", &assertion.token)
        .append_pair("resource", RESOURCE)
        .append_pair("scope", SCOPE)
        .finish();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(lanyard_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let target = Target {
        addr,
        authority: authority.to_owned(),
        path: format!("/{path}"),
        tls: TlsConnector::from(Arc::new(tls)),
        body: Bytes::from(body),
    };

    // The first token, so that a setup mistake stops the run before anything is measured.
    let mut sender = connect(&target).await?;
    match token_request(&mut sender, &target).await {
        Ok(Answer::Token) => {}
        Ok(Answer::Refused(why)) => bail!("the first token request failed: {why}"),
        Err(e) => bail!(
            "the first token request failed: {e:#}\nserver log:\n{}",
            server.log_tail()
        ),
    }
    Ok((server, target))
}

/// A TOML basic string for `path`; temporary paths need no escapes, so none are written.
fn toml_string(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
    ensure!(
        !text
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control()),
        "{text:?} would need escaping in TOML"
    );
    Ok(format!("\"{text}\""))
}

// --- the clients ---

type Sender = SendRequest<Full<Bytes>>;

/// What a token request got.
enum Answer {
    /// 200 with an `access_token`.
    Token,
    /// Anything else, said in a line.
    Refused(String),
}

/// Opens a keep-alive HTTPS/1.1 connection to the token endpoint.
async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let open = async {
        let tcp = TcpStream::connect(target.addr).await?;
        // Requests and answers are small; Nagle's algorithm would only delay them.
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(target.addr.ip().into());
        let tls = target.tls.connect(name, tcp).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        // Ends when the sender is dropped or the server closes the connection.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        anyhow::Ok(sender)
    };
    tokio::time::timeout(CALL_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("no connection to {} in {CALL_TIMEOUT:?}", target.addr))?
        .with_context(|| format!("connect to the token endpoint at {}", target.addr))
}

/// One `client_credentials` request on `sender`'s connection, read to the end of its answer.
/// An error means the connection is unusable.
async fn token_request(sender: &mut Sender, target: &Target) -> anyhow::Result<Answer> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(&target.path)
        .header(header::HOST, &target.authority)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(target.body.clone()))?;
    let exchange = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer in {CALL_TIMEOUT:?}"))??;
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let has_token = json
        .as_ref()
        .and_then(|j| j["access_token"].as_str())
        .is_some_and(|t| !t.is_empty());
    Ok(if status == StatusCode::OK && has_token {
        Answer::Token
    } else {
        let mut text = String::from_utf8_lossy(&body).into_owned();
        text.truncate(300);
        Answer::Refused(format!("{status}: {text}"))
    })
}

/// What the clients of a phase saw.
#[derive(Debug, Default)]
struct Outcome {
    /// The latency of each request answered with a token.
    samples: Samples,
    failures: usize,
    first_failure: Option<String>,
    took: Duration,
    /// `server N %, load generator M % (of one core)`.
    cpu: String,
}

impl Outcome {
    fn fail(&mut self, why: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(why);
    }

    fn merge(&mut self, other: Self) {
        self.samples.0.extend(other.samples.0);
        self.failures += other.failures;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }

    /// Tokens per second.
    fn rate(&self) -> f64 {
        rate(self.samples.len(), self.took)
    }

    fn summary(&self) -> String {
        format!(
            "{}; {}; {}",
            self.samples.p50_p99(),
            fmt_rate(self.rate(), "tokens"),
            self.cpu
        )
    }
}

/// Sends token requests on one connection until `until`, one at a time.
async fn client(
    target: Arc<Target>,
    mut sender: Sender,
    until: Instant,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    while Instant::now() < until {
        let start = Instant::now();
        match token_request(&mut sender, &target).await {
            Ok(Answer::Token) => outcome.samples.push(start.elapsed()),
            Ok(Answer::Refused(why)) => outcome.fail(why),
            Err(e) => {
                outcome.fail(format!("{e:#}"));
                sender = connect(&target).await?;
            }
        }
    }
    Ok(outcome)
}

/// `clients` clients, each on a connection opened beforehand, for `phase`.
async fn measure(
    target: &Arc<Target>,
    clients: usize,
    phase: Duration,
    server_pid: u32,
) -> anyhow::Result<Outcome> {
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(connect(target).await?);
    }
    let meter = CpuMeter::start(server_pid)?;
    let start = Instant::now();
    let until = start + phase;
    let mut running = tokio::task::JoinSet::new();
    for sender in senders {
        running.spawn(client(target.clone(), sender, until));
    }
    let mut all = Outcome::default();
    while let Some(done) = running.join_next().await {
        all.merge(done??);
    }
    all.took = start.elapsed();
    all.cpu = meter.finish()?;
    Ok(all)
}
