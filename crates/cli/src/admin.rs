//! Admin commands: talk to `lanyard server run` over its admin socket.
//!
//! Every argument that names something is parsed with lanyard-core before anything is sent, so a
//! typo is reported here, naming the flag. The server checks everything again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use lanyard_core::{DnsName, Selector, SpiffeId, TrustDomain};
use lanyard_proto::admin::{self as pb, admin_client::AdminClient};
use tonic::transport::Channel;

use crate::duration::{HumanDuration, format_duration};
use crate::output::{OutputFormat, print_json, table};
use crate::output::{out, outln};
use crate::{pem, uds};

/// Flags every admin command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct AdminOpts {
    /// Path of the server's admin socket (default: /run/lanyard/server/admin.sock if it exists,
    /// else /tmp/lanyard-server/admin.sock).
    #[arg(long, global = true, env = "LANYARD_ADMIN_SOCKET")]
    pub(crate) admin_socket: Option<PathBuf>,
    /// How to print the result.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EntryCommand {
    /// Register a workload: callers under PARENT_ID with these selectors get SPIFFE_ID.
    Create(EntryFields),
    /// Show one entry.
    Show {
        #[arg(long)]
        id: String,
    },
    /// List entries, optionally filtered.
    List(EntryFilter),
    /// Replace every field of an entry.
    Update {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        fields: EntryFields,
    },
    /// Delete entries.
    Delete {
        #[arg(long = "id", required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct EntryFields {
    /// The parent: an agent's SPIFFE ID (or a node alias).
    #[arg(long)]
    parent_id: SpiffeId,
    /// The SPIFFE ID the workload gets.
    #[arg(long)]
    spiffe_id: SpiffeId,
    /// A selector TYPE:VALUE the caller must have (repeat for several), e.g. unix:uid:1000.
    #[arg(long = "selector", required = true)]
    selectors: Vec<Selector>,
    /// X509-SVID lifetime (server default 1h).
    #[arg(long)]
    x509_ttl: Option<HumanDuration>,
    /// JWT-SVID lifetime (server default 5m).
    #[arg(long)]
    jwt_ttl: Option<HumanDuration>,
    /// A DNS name for the X509-SVID (repeatable).
    #[arg(long = "dns")]
    dns_names: Vec<DnsName>,
    /// A trust domain whose bundle the workload also receives (repeatable).
    #[arg(long = "federates-with")]
    federates_with: Vec<TrustDomain>,
    /// A hint that tells this SVID apart from the caller's others.
    #[arg(long, default_value = "")]
    hint: String,
    /// The workload may use the admin API.
    #[arg(long)]
    admin: bool,
    /// The workload may mint SVIDs for others (a downstream CA).
    #[arg(long)]
    downstream: bool,
    /// When the entry stops granting anything, in seconds since the Unix epoch (SPIRE's
    /// `-entryExpiry`); default never.
    #[arg(long, value_name = "UNIX_SECONDS", value_parser = clap::value_parser!(i64).range(1..))]
    expires_at: Option<i64>,
}

#[derive(Debug, Args)]
pub(crate) struct EntryFilter {
    #[arg(long)]
    spiffe_id: Option<SpiffeId>,
    #[arg(long)]
    parent_id: Option<SpiffeId>,
    #[arg(long = "selector")]
    selectors: Vec<Selector>,
    /// How `--selector` values are matched against an entry's selectors.
    #[arg(long = "match", value_enum, default_value_t = MatchMode::Superset)]
    match_mode: MatchMode,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum MatchMode {
    /// The entry has exactly these selectors.
    Exact,
    /// The entry's selectors are all among these.
    Subset,
    /// The entry has at least these selectors.
    Superset,
    /// The entry has at least one of these selectors.
    Any,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a single-use join token for an agent.
    Generate {
        /// An agent ID under spiffe://<td>/lanyard/agent/ is the ID the agent gets (default: one
        /// derived from the token). Any other ID, such as spiffe://<td>/node/n1, becomes a node
        /// alias of the agent that uses the token: entries with that ID as parent run on it.
        #[arg(long)]
        spiffe_id: Option<SpiffeId>,
        /// How long the token stays valid.
        #[arg(long, default_value = "10m")]
        ttl: HumanDuration,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentAdminCommand {
    /// List attested agents.
    List {
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Show one agent.
    Show {
        #[arg(long)]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Forget an agent: it must attest again.
    Evict {
        #[arg(long)]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Ban an agent: it cannot attest again until evicted.
    Ban {
        #[arg(long)]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BundleCommand {
    /// Print this trust domain's bundle.
    Show {
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
    },
    /// Store the bundle of a federated trust domain (SPIFFE bundle JSON from --path, or stdin).
    Set {
        #[arg(long)]
        trust_domain: TrustDomain,
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// List federated bundles.
    List,
    /// Delete a federated bundle.
    Delete {
        #[arg(long)]
        trust_domain: TrustDomain,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum BundleFormat {
    Pem,
    Spiffe,
}

#[derive(Debug, Args)]
pub(crate) struct X509MintArgs {
    #[arg(long)]
    spiffe_id: SpiffeId,
    #[arg(long, default_value = "1h")]
    ttl: HumanDuration,
    #[arg(long = "dns")]
    dns_names: Vec<DnsName>,
    /// Write svid.pem, svid.key (0600) and bundle.pem into this directory.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct JwtMintArgs {
    #[arg(long)]
    spiffe_id: SpiffeId,
    #[arg(long = "audience", required = true)]
    audience: Vec<String>,
    #[arg(long, default_value = "5m")]
    ttl: HumanDuration,
}

pub(crate) async fn client(opts: &AdminOpts) -> anyhow::Result<AdminClient<Channel>> {
    let socket = opts.admin_socket.clone().unwrap_or_else(|| {
        crate::paths::ADMIN_SOCKET.to_dial(crate::paths::running_as_root(), Path::exists)
    });
    Ok(AdminClient::new(uds::connect(&socket).await?))
}

/// Turns a gRPC error into one line that says what the server refused.
pub(crate) fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "server refused the request ({:?}): {}",
        status.code(),
        status.message()
    )
}

fn seconds(duration: Option<HumanDuration>) -> i64 {
    // HumanDuration is bounded to i64 seconds when parsed.
    duration.map_or(0, |d| i64::try_from(d.get().as_secs()).unwrap_or(i64::MAX))
}

pub(crate) fn unix_time(secs: i64) -> String {
    if secs <= 0 {
        return "-".to_owned();
    }
    let at = UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs());
    let now = SystemTime::now();
    match at.duration_since(now) {
        Ok(ahead) => format!("{secs} (in {})", format_duration(ahead)),
        Err(e) => format!("{secs} ({} ago)", format_duration(e.duration())),
    }
}

impl EntryFields {
    fn into_proto(self, id: String) -> pb::Entry {
        pb::Entry {
            id,
            spiffe_id: self.spiffe_id.to_string(),
            parent_id: self.parent_id.to_string(),
            selectors: self.selectors.iter().map(ToString::to_string).collect(),
            x509_svid_ttl_seconds: seconds(self.x509_ttl),
            jwt_svid_ttl_seconds: seconds(self.jwt_ttl),
            dns_names: self.dns_names.iter().map(ToString::to_string).collect(),
            federates_with: self
                .federates_with
                .iter()
                .map(ToString::to_string)
                .collect(),
            admin: self.admin,
            downstream: self.downstream,
            hint: self.hint,
            expires_at: self.expires_at.unwrap_or(0),
            revision: 0,
        }
    }
}

fn print_entries(entries: &[pb::Entry], output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return print_json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.spiffe_id.clone(),
                e.parent_id.clone(),
                e.selectors.join(","),
                format_duration(Duration::from_secs(e.x509_svid_ttl_seconds.unsigned_abs())),
                format_duration(Duration::from_secs(e.jwt_svid_ttl_seconds.unsigned_abs())),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "ID",
                "SPIFFE ID",
                "PARENT ID",
                "SELECTORS",
                "X509 TTL",
                "JWT TTL"
            ],
            &rows
        )
    );
    Ok(())
}

fn print_entry(entry: &pb::Entry, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return print_json(entry);
    }
    let rows = [
        ("Entry ID", entry.id.clone()),
        ("SPIFFE ID", entry.spiffe_id.clone()),
        ("Parent ID", entry.parent_id.clone()),
        ("Revision", entry.revision.to_string()),
        (
            "X509-SVID TTL",
            format_duration(Duration::from_secs(
                entry.x509_svid_ttl_seconds.unsigned_abs(),
            )),
        ),
        (
            "JWT-SVID TTL",
            format_duration(Duration::from_secs(
                entry.jwt_svid_ttl_seconds.unsigned_abs(),
            )),
        ),
        ("Selectors", entry.selectors.join(", ")),
        ("DNS names", entry.dns_names.join(", ")),
        ("Federates with", entry.federates_with.join(", ")),
        ("Admin", entry.admin.to_string()),
        ("Downstream", entry.downstream.to_string()),
        ("Hint", entry.hint.clone()),
        ("Expires at", unix_time(entry.expires_at)),
    ];
    for (key, value) in rows {
        outln!("{key:<15} {value}");
    }
    Ok(())
}

pub(crate) async fn entry(command: EntryCommand, opts: &AdminOpts) -> anyhow::Result<()> {
    let mut client = client(opts).await?;
    match command {
        EntryCommand::Create(fields) => {
            let request = pb::BatchCreateEntriesRequest {
                entries: vec![fields.into_proto(String::new())],
            };
            let response = client
                .batch_create_entries(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            let result = response
                .results
                .into_iter()
                .next()
                .context("server returned no result for the entry")?;
            match (result.status, result.entry) {
                (Some(status), _) if status.code != 0 => {
                    let code = tonic::Code::from_i32(status.code);
                    bail!("server refused the entry ({code:?}): {}", status.message)
                }
                (_, Some(entry)) => print_entry(&entry, opts.output),
                (_, None) => bail!("server returned no entry"),
            }
        }
        EntryCommand::Show { id } => {
            let entry = client
                .get_entry(pb::GetEntryRequest { id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_entry(&entry, opts.output)
        }
        EntryCommand::List(filter) => {
            let selector_match = match filter.match_mode {
                MatchMode::Exact => pb::SelectorMatch::Exact,
                MatchMode::Subset => pb::SelectorMatch::Subset,
                MatchMode::Superset => pb::SelectorMatch::Superset,
                MatchMode::Any => pb::SelectorMatch::Any,
            };
            let mut entries = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = pb::ListEntriesRequest {
                    by_spiffe_id: filter
                        .spiffe_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    by_parent_id: filter
                        .parent_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    by_selectors: filter.selectors.iter().map(ToString::to_string).collect(),
                    selector_match: selector_match.into(),
                    page_size: 0,
                    page_token,
                };
                let page = client
                    .list_entries(request)
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                entries.extend(page.entries);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print_entries(&entries, opts.output)
        }
        EntryCommand::Update { id, fields } => {
            let request = pb::UpdateEntryRequest {
                entry: Some(fields.into_proto(id)),
            };
            let entry = client
                .update_entry(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_entry(&entry, opts.output)
        }
        EntryCommand::Delete { ids } => {
            let request = pb::BatchDeleteEntriesRequest { ids: ids.clone() };
            let response = client
                .batch_delete_entries(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut failed = Vec::new();
            for (id, status) in ids.iter().zip(&response.results) {
                if status.code == 0 {
                    if opts.output == OutputFormat::Text {
                        outln!("deleted {id}");
                    }
                } else {
                    failed.push(format!("{id}: {}", status.message));
                }
            }
            if opts.output == OutputFormat::Json {
                print_json(&response.results)?;
            }
            if !failed.is_empty() {
                bail!("could not delete {}", failed.join("; "));
            }
            Ok(())
        }
    }
}

pub(crate) async fn token(command: TokenCommand, opts: &AdminOpts) -> anyhow::Result<()> {
    let TokenCommand::Generate { spiffe_id, ttl } = command;
    let request = pb::GenerateJoinTokenRequest {
        ttl_seconds: seconds(Some(ttl)),
        spiffe_id: spiffe_id.map(|id| id.to_string()).unwrap_or_default(),
    };
    let token = client(opts)
        .await?
        .generate_join_token(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    match opts.output {
        OutputFormat::Json => print_json(&token),
        OutputFormat::Text => {
            outln!("Token:       {}", token.token);
            outln!("Token id:    {}", token.token_id);
            outln!("Expires at:  {}", unix_time(token.expires_at));
            if token.alias_entry_id.is_empty() {
                if !token.spiffe_id.is_empty() {
                    outln!("SPIFFE ID:   {}", token.spiffe_id);
                }
            } else {
                outln!("Node alias:  {}", token.spiffe_id);
                outln!("Alias entry: {}", token.alias_entry_id);
            }
            Ok(())
        }
    }
}

fn print_agents(agents: &[pb::Agent], output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return print_json(&agents);
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.spiffe_id.clone(),
                a.attestation_type.clone(),
                a.serial_number.clone(),
                unix_time(a.expires_at),
                if a.banned { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "SPIFFE ID",
                "ATTESTATION",
                "SVID SERIAL",
                "SVID EXPIRES",
                "BANNED"
            ],
            &rows
        )
    );
    Ok(())
}

pub(crate) async fn agent(command: AgentAdminCommand) -> anyhow::Result<()> {
    let opts = match &command {
        AgentAdminCommand::List { opts }
        | AgentAdminCommand::Show { opts, .. }
        | AgentAdminCommand::Evict { opts, .. }
        | AgentAdminCommand::Ban { opts, .. } => opts.clone(),
    };
    let opts = &opts;
    let mut client = client(opts).await?;
    match command {
        AgentAdminCommand::List { .. } => {
            let mut agents = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = pb::ListAgentsRequest {
                    page_size: 0,
                    page_token,
                };
                let page = client
                    .list_agents(request)
                    .await
                    .map_err(rpc_error)?
                    .into_inner();
                agents.extend(page.agents);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print_agents(&agents, opts.output)
        }
        AgentAdminCommand::Show { spiffe_id, .. } => {
            let request = pb::GetAgentRequest {
                spiffe_id: spiffe_id.to_string(),
            };
            let agent = client
                .get_agent(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_agents(&[agent], opts.output)
        }
        AgentAdminCommand::Evict { spiffe_id, .. } => {
            let request = pb::EvictAgentRequest {
                spiffe_id: spiffe_id.to_string(),
            };
            client.evict_agent(request).await.map_err(rpc_error)?;
            outln!("evicted {spiffe_id}");
            Ok(())
        }
        AgentAdminCommand::Ban { spiffe_id, .. } => {
            let request = pb::BanAgentRequest {
                spiffe_id: spiffe_id.to_string(),
            };
            let agent = client
                .ban_agent(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_agents(&[agent], opts.output)
        }
    }
}

fn print_bundles(bundles: &[pb::Bundle], output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        let docs: Vec<serde_json::Value> = bundles
            .iter()
            .map(|b| {
                serde_json::json!({
                    "trust_domain": b.trust_domain,
                    "sequence": b.sequence,
                    "bundle": serde_json::from_str::<serde_json::Value>(&b.spiffe_json)
                        .unwrap_or(serde_json::Value::Null),
                })
            })
            .collect();
        return print_json(&docs);
    }
    let rows: Vec<Vec<String>> = bundles
        .iter()
        .map(|b| {
            vec![
                b.trust_domain.clone(),
                b.sequence.to_string(),
                b.x509_authorities.len().to_string(),
            ]
        })
        .collect();
    out!(
        "{}",
        table(&["TRUST DOMAIN", "SEQUENCE", "X509 AUTHORITIES"], &rows)
    );
    Ok(())
}

pub(crate) async fn bundle(command: BundleCommand, opts: &AdminOpts) -> anyhow::Result<()> {
    let mut client = client(opts).await?;
    match command {
        BundleCommand::Show { format } => {
            let bundle = client
                .get_bundle(pb::GetBundleRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            match (opts.output, format) {
                (OutputFormat::Json, _) | (_, BundleFormat::Spiffe) => {
                    outln!("{}", bundle.spiffe_json)
                }
                (OutputFormat::Text, BundleFormat::Pem) => {
                    for der in &bundle.x509_authorities {
                        out!("{}", pem::encode("CERTIFICATE", der));
                    }
                }
            }
            Ok(())
        }
        BundleCommand::Set { trust_domain, path } => {
            let json = match &path {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read bundle from {}", path.display()))?,
                None => std::io::read_to_string(std::io::stdin())
                    .context("cannot read bundle from stdin")?,
            };
            let request = pb::SetFederatedBundleRequest {
                trust_domain: trust_domain.to_string(),
                spiffe_json: json,
            };
            let bundle = client
                .set_federated_bundle(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_bundles(&[bundle], opts.output)
        }
        BundleCommand::List => {
            let response = client
                .list_federated_bundles(pb::ListFederatedBundlesRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            print_bundles(&response.bundles, opts.output)
        }
        BundleCommand::Delete { trust_domain } => {
            let request = pb::DeleteFederatedBundleRequest {
                trust_domain: trust_domain.to_string(),
            };
            client
                .delete_federated_bundle(request)
                .await
                .map_err(rpc_error)?;
            outln!("deleted the bundle of {trust_domain}");
            Ok(())
        }
    }
}

pub(crate) async fn x509_mint(args: X509MintArgs, opts: &AdminOpts) -> anyhow::Result<()> {
    let request = pb::MintX509SvidRequest {
        spiffe_id: args.spiffe_id.to_string(),
        ttl_seconds: seconds(Some(args.ttl)),
        dns_names: args.dns_names.iter().map(ToString::to_string).collect(),
    };
    let svid = client(opts)
        .await?
        .mint_x509_svid(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let chain_pem: String = svid
        .chain
        .iter()
        .map(|der| pem::encode("CERTIFICATE", der))
        .collect();
    let bundle_pem: String = svid
        .bundle
        .iter()
        .map(|der| pem::encode("CERTIFICATE", der))
        .collect();
    let key_pem = pem::encode("PRIVATE KEY", &svid.private_key);
    if let Some(dir) = &args.write {
        write_svid_files(dir, &chain_pem, &key_pem, &bundle_pem)?;
    }
    match (opts.output, &args.write) {
        (OutputFormat::Json, _) => print_json(&serde_json::json!({
            "spiffe_id": args.spiffe_id.to_string(),
            "expires_at": svid.expires_at,
            "svid_pem": chain_pem,
            "bundle_pem": bundle_pem,
            "written_to": args.write,
        })),
        (OutputFormat::Text, Some(dir)) => {
            outln!("SPIFFE ID:  {}", args.spiffe_id);
            outln!("Expires at: {}", unix_time(svid.expires_at));
            outln!(
                "Wrote svid.pem, svid.key and bundle.pem to {}",
                dir.display()
            );
            Ok(())
        }
        (OutputFormat::Text, None) => {
            out!("{chain_pem}{key_pem}");
            Ok(())
        }
    }
}

/// Writes the SVID files so that a reader never sees a half-written file: each is written to a
/// temporary name in the same directory and renamed over the old one.
pub(crate) fn write_svid_files(
    dir: &Path,
    chain_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomically(&dir.join("svid.key"), key_pem.as_bytes(), 0o600)?;
    write_atomically(&dir.join("svid.pem"), chain_pem.as_bytes(), 0o644)?;
    write_atomically(&dir.join("bundle.pem"), bundle_pem.as_bytes(), 0o644)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) async fn jwt_mint(args: JwtMintArgs, opts: &AdminOpts) -> anyhow::Result<()> {
    let request = pb::MintJwtSvidRequest {
        spiffe_id: args.spiffe_id.to_string(),
        audience: args.audience,
        ttl_seconds: seconds(Some(args.ttl)),
    };
    let svid = client(opts)
        .await?
        .mint_jwt_svid(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    match opts.output {
        OutputFormat::Json => print_json(&svid),
        OutputFormat::Text => {
            outln!("{}", svid.token);
            Ok(())
        }
    }
}

/// `lanyard server list`: the servers sharing the datastore, by their last heartbeat.
pub(crate) async fn server_list(opts: &AdminOpts) -> anyhow::Result<()> {
    let servers = client(opts)
        .await?
        .list_servers(pb::ListServersRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .servers;
    if opts.output == OutputFormat::Json {
        return print_json(&servers);
    }
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let status = match (s.live, s.retired) {
                (true, _) => "live",
                (false, false) => "silent",
                (false, true) => "retired",
            };
            let id = if s.answering {
                format!("{} *", s.server_id)
            } else {
                s.server_id.clone()
            };
            vec![
                id,
                status.to_owned(),
                s.node_address.clone(),
                if s.health_address.is_empty() {
                    "-".to_owned()
                } else {
                    s.health_address.clone()
                },
                s.version.clone(),
                unix_time(s.last_seen),
                unix_time(s.ca_expires_at),
                unix_time(s.signs_until),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "SERVER (* = this one)",
                "STATUS",
                "NODE API",
                "HEALTH",
                "VERSION",
                "LAST SEEN",
                "CA EXPIRES",
                "SIGNED UNTIL",
            ],
            &rows
        )
    );
    Ok(())
}

pub(crate) async fn server_healthcheck(opts: &AdminOpts) -> anyhow::Result<()> {
    let health = client(opts)
        .await?
        .health(pb::HealthRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if opts.output == OutputFormat::Json {
        print_json(&health)?;
    } else {
        outln!("Trust domain: {}", health.trust_domain);
        outln!(
            "Datastore:    {}",
            if health.store_ok { "ok" } else { "FAILING" }
        );
        outln!(
            "CA:           {}",
            if health.ca_ok { "ok" } else { "FAILING" }
        );
        outln!("Entries:      {}", health.entries);
        outln!("Agents:       {}", health.agents);
        outln!("CA expires:   {}", unix_time(health.ca_expires_at));
    }
    if !(health.store_ok && health.ca_ok) {
        bail!("server is not healthy");
    }
    Ok(())
}
