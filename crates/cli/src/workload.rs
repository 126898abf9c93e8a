//! Workload API client commands: `x509 fetch|watch`, `jwt fetch|validate`, `agent healthcheck`.
//! They talk to the agent's socket like any SPIFFE client would.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::Args;
use lanyard_core::{EndpointAddress, SpiffeId};
use lanyard_workload::{WorkloadClient, X509Context};

use crate::admin::write_svid_files;
use crate::duration::format_duration;
use crate::output::{OutputFormat, print_json, table};
use crate::output::{out, outln};
use crate::pem;

/// Where the Workload API is, for every client command.
#[derive(Debug, Clone, Args)]
pub(crate) struct SocketOpts {
    /// The agent's Workload API socket (default: $SPIFFE_ENDPOINT_SOCKET, then
    /// /run/lanyard/agent/public/api.sock if it exists, else /tmp/lanyard-agent/public/api.sock).
    /// Accepts a path or a unix:///path URI.
    #[arg(long, global = true)]
    socket: Option<String>,
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct X509FetchArgs {
    /// Write svid.pem, svid.key (0600) and bundle.pem of the default SVID into this directory.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct X509WatchArgs {
    /// Rewrite svid.pem, svid.key and bundle.pem here on every change.
    #[arg(long)]
    write: PathBuf,
    /// Run this command (through `sh -c`) after each rewrite, e.g. to reload a server.
    #[arg(long)]
    exec: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct JwtFetchArgs {
    #[arg(long = "audience", required = true)]
    audience: Vec<String>,
    /// Only this identity (default: every identity of the caller).
    #[arg(long)]
    spiffe_id: Option<SpiffeId>,
}

#[derive(Debug, Args)]
pub(crate) struct JwtValidateArgs {
    #[arg(long)]
    audience: String,
    #[arg(long)]
    token: String,
}

impl SocketOpts {
    pub(crate) fn path(&self) -> anyhow::Result<PathBuf> {
        let (value, from) = match (
            &self.socket,
            std::env::var(lanyard_core::ENDPOINT_SOCKET_ENV),
        ) {
            (Some(flag), _) => (flag.clone(), "--socket"),
            (None, Ok(env)) if !env.is_empty() => (env, lanyard_core::ENDPOINT_SOCKET_ENV),
            _ => {
                return Ok(crate::paths::WORKLOAD_SOCKET
                    .to_dial(crate::paths::running_as_root(), std::path::Path::exists));
            }
        };
        if value.starts_with('/') {
            return Ok(PathBuf::from(value));
        }
        let address: EndpointAddress = value
            .parse()
            .with_context(|| format!("{from}: `{value}`"))?;
        match address {
            EndpointAddress::Unix(path) => Ok(path),
            EndpointAddress::Tcp(_) => {
                bail!("{from}: lanyard serves the Workload API on a Unix socket only")
            }
        }
    }

    async fn client(&self) -> anyhow::Result<WorkloadClient> {
        let path = self.path()?;
        if !path.exists() {
            bail!(
                "no Workload API socket at {}: is the agent running? (set --socket or SPIFFE_ENDPOINT_SOCKET)",
                path.display()
            );
        }
        WorkloadClient::connect(&path)
            .await
            .with_context(|| format!("cannot connect to the Workload API at {}", path.display()))
    }
}

fn expiry(chain: &[Vec<u8>]) -> Option<SystemTime> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(lanyard_core::x509::validity(&cert).1)
}

fn in_how_long(at: Option<SystemTime>) -> String {
    match at.map(|t| t.duration_since(SystemTime::now())) {
        Some(Ok(left)) => format!("in {}", format_duration(left)),
        Some(Err(_)) => "expired".to_owned(),
        None => "-".to_owned(),
    }
}

fn print_context(context: &X509Context, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        let svids: Vec<serde_json::Value> = context
            .svids
            .iter()
            .map(|svid| {
                serde_json::json!({
                    "spiffe_id": svid.spiffe_id.to_string(),
                    "hint": svid.hint,
                    "expires_at": expiry(&svid.chain).map(crate::unix_seconds),
                    "svid_pem": svid.chain.iter().map(|der| pem::encode("CERTIFICATE", der)).collect::<String>(),
                    "bundle_pem": svid.bundle.x509_authorities_pem(),
                })
            })
            .collect();
        return print_json(&serde_json::json!({ "svids": svids }));
    }
    let rows: Vec<Vec<String>> = context
        .svids
        .iter()
        .map(|svid| {
            vec![
                svid.spiffe_id.to_string(),
                svid.hint.clone(),
                in_how_long(expiry(&svid.chain)),
            ]
        })
        .collect();
    out!("{}", table(&["SPIFFE ID", "HINT", "EXPIRES"], &rows));
    Ok(())
}

/// Writes the default (first) SVID of `context` into `dir`.
fn write_default(context: &X509Context, dir: &std::path::Path) -> anyhow::Result<()> {
    let svid = context
        .svids
        .first()
        .context("the Workload API returned no SVID")?;
    let chain: String = svid
        .chain
        .iter()
        .map(|der| pem::encode("CERTIFICATE", der))
        .collect();
    let key = pem::encode("PRIVATE KEY", svid.key.as_pkcs8_der());
    write_svid_files(dir, &chain, &key, &svid.bundle.x509_authorities_pem())
}

pub(crate) async fn x509_fetch(args: X509FetchArgs, opts: &SocketOpts) -> anyhow::Result<()> {
    let context = opts.client().await?.fetch_x509_context().await?;
    if let Some(dir) = &args.write {
        write_default(&context, dir)?;
    }
    print_context(&context, opts.output)?;
    if let (Some(dir), OutputFormat::Text) = (&args.write, opts.output) {
        outln!(
            "Wrote svid.pem, svid.key and bundle.pem to {}",
            dir.display()
        );
    }
    Ok(())
}

pub(crate) async fn x509_watch(args: X509WatchArgs, opts: &SocketOpts) -> anyhow::Result<()> {
    // Like every SPIFFE client: while the agent is away or has no identity for us yet, retry
    // with backoff; only a request the agent calls malformed is final.
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut updates = opts.client().await?.watch_x509_context().await?;
            loop {
                let context = updates.next().await?;
                write_default(&context, &args.write)?;
                run_after_write(&context, &args).await?;
            }
        };
        let error: anyhow::Error = tokio::select! {
            result = attempt => match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let invalid = error
            .downcast_ref::<lanyard_workload::Error>()
            .and_then(lanyard_workload::Error::status)
            .is_some_and(|s| s.code() == tonic::Code::InvalidArgument);
        if invalid {
            return Err(error);
        }
        eprintln!("{error:#}; retrying in {backoff:?}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// After a rewrite: says what was written and runs `--exec`.
async fn run_after_write(context: &X509Context, args: &X509WatchArgs) -> anyhow::Result<()> {
    let first = context
        .svids
        .first()
        .map(|s| s.spiffe_id.to_string())
        .unwrap_or_default();
    eprintln!("wrote {} to {}", first, args.write.display());
    if let Some(command) = &args.exec {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .await
            .with_context(|| format!("cannot run `{command}`"))?;
        if !status.success() {
            eprintln!("`{command}` exited with {status}");
        }
    }
    Ok(())
}

pub(crate) async fn jwt_fetch(args: JwtFetchArgs, opts: &SocketOpts) -> anyhow::Result<()> {
    let svids = opts
        .client()
        .await?
        .fetch_jwt_svids(&args.audience, args.spiffe_id.as_ref())
        .await?;
    match opts.output {
        OutputFormat::Json => print_json(
            &svids
                .iter()
                .map(|s| serde_json::json!({ "spiffe_id": s.spiffe_id.to_string(), "hint": s.hint, "token": s.token }))
                .collect::<Vec<_>>(),
        ),
        OutputFormat::Text => {
            for svid in &svids {
                outln!("{}", svid.token);
            }
            Ok(())
        }
    }
}

pub(crate) async fn jwt_validate(args: JwtValidateArgs, opts: &SocketOpts) -> anyhow::Result<()> {
    let validated = opts
        .client()
        .await?
        .validate_jwt_svid(&args.audience, &args.token)
        .await
        .context("the token is not valid")?;
    match opts.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "spiffe_id": validated.spiffe_id.to_string(),
            "claims": validated.claims,
        })),
        OutputFormat::Text => {
            outln!("valid: {}", validated.spiffe_id);
            Ok(())
        }
    }
}

pub(crate) async fn agent_healthcheck(opts: &SocketOpts) -> anyhow::Result<()> {
    // A live agent answers the bundle stream for an attested caller, or says who it cannot
    // serve: either way it is up. Only a dead socket or an internal failure is unhealthy.
    let result = opts.client().await?.fetch_x509_bundles().await;
    match result {
        Ok(_) => outln!("agent is healthy"),
        Err(e)
            if e.status()
                .is_some_and(|s| s.code() == tonic::Code::PermissionDenied) =>
        {
            outln!("agent is healthy (this caller has no identity)")
        }
        Err(e) => return Err(e).context("agent is not healthy"),
    }
    Ok(())
}
