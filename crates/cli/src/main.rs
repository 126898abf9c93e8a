//! `lanyard`: the one binary. It parses flags and TOML into each crate's typed config and runs the
//! server, the agent, the admin commands and the Workload API client commands.

mod admin;
mod agent;
mod audit;
mod dev;
mod duration;
mod oauth;
mod output;
mod paths;
mod pem;
mod policy;
mod server;
mod task;
mod uds;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use admin::AdminOpts;

/// jemalloc instead of glibc's malloc, for Rust and C alike (the `unprefixed_malloc` feature makes
/// it the process's `malloc`, so SQLite and aws-lc use it too), with a background thread that
/// returns freed memory while the server is idle. glibc keeps an arena per thread (SQLite's
/// connection threads, the async workers) and gives little back: with a million entries and
/// 10,000 agents the same server held 1,063 MiB with glibc against 814 MiB (784 once idle) with
/// jemalloc, and a full sync of 10,000 entries took 54 ms against 17 (docs/benchmarks.md,
/// issue 13). mimalloc was as fast but held more with 10,000 connections open.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// lanyard — a SPIFFE workload identity issuer.
#[derive(Debug, Parser)]
#[command(name = "lanyard", version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A server, an agent and an identity for you, in one command.
    Dev(dev::DevArgs),
    /// Run or check the server.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Registration entries: which workloads get which SPIFFE IDs.
    Entry {
        #[command(subcommand)]
        command: admin::EntryCommand,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Join tokens for node attestation.
    Token {
        #[command(subcommand)]
        command: admin::TokenCommand,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Run the agent, check it, or administer attested agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Trust bundles: this trust domain's and federated ones.
    Bundle {
        #[command(subcommand)]
        command: admin::BundleCommand,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// X509-SVIDs.
    #[command(subcommand)]
    X509(X509Command),
    /// JWT-SVIDs.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Task credentials for AI agents: one tool, a few operations, a few minutes.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// The Cedar policies that decide task grants.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The verifiable audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The OAuth authorization server for tool servers (MCP): metadata to give them.
    #[command(subcommand)]
    Oauth(oauth::OAuthCommand),
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Run the agent: attest, sync entries, serve the Workload API.
    Run(agent::AgentRunArgs),
    /// Ask the local agent's Workload API whether it answers.
    Healthcheck(workload::SocketOpts),
    #[command(flatten)]
    Admin(admin::AgentAdminCommand),
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Run the server: CA, datastore, admin API.
    Run(Box<server::ServerRunArgs>),
    /// Ask a running server whether its datastore and CA work.
    Healthcheck(AdminOpts),
    /// The servers sharing the datastore: live or not, addresses, CA expiry.
    List(AdminOpts),
}

#[derive(Debug, Subcommand)]
enum X509Command {
    /// Fetch this process's X509-SVIDs from the Workload API.
    Fetch {
        #[command(flatten)]
        args: workload::X509FetchArgs,
        #[command(flatten)]
        opts: workload::SocketOpts,
    },
    /// Keep PEM files current with the Workload API, for software that reads only files.
    Watch {
        #[command(flatten)]
        args: workload::X509WatchArgs,
        #[command(flatten)]
        opts: workload::SocketOpts,
    },
    /// Admin: mint an X509-SVID (with a server-generated key) without an agent.
    Mint {
        #[command(flatten)]
        args: admin::X509MintArgs,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
enum JwtCommand {
    /// Fetch JWT-SVIDs for audiences from the Workload API.
    Fetch {
        #[command(flatten)]
        args: workload::JwtFetchArgs,
        #[command(flatten)]
        opts: workload::SocketOpts,
    },
    /// Validate a JWT-SVID through the Workload API.
    Validate {
        #[command(flatten)]
        args: workload::JwtValidateArgs,
        #[command(flatten)]
        opts: workload::SocketOpts,
    },
    /// Admin: mint a JWT-SVID without an agent.
    Mint {
        #[command(flatten)]
        args: admin::JwtMintArgs,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(ServerCommand::Run(args)) => server::run(*args).await,
        Command::Server(ServerCommand::Healthcheck(opts)) => admin::server_healthcheck(&opts).await,
        Command::Server(ServerCommand::List(opts)) => admin::server_list(&opts).await,
        Command::Entry { command, opts } => admin::entry(command, &opts).await,
        Command::Token { command, opts } => admin::token(command, &opts).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Agent(AgentCommand::Run(args)) => agent::run(args).await,
        Command::Agent(AgentCommand::Healthcheck(opts)) => workload::agent_healthcheck(&opts).await,
        Command::Agent(AgentCommand::Admin(command)) => admin::agent(command).await,
        Command::X509(X509Command::Fetch { args, opts }) => workload::x509_fetch(args, &opts).await,
        Command::X509(X509Command::Watch { args, opts }) => workload::x509_watch(args, &opts).await,
        Command::Jwt(JwtCommand::Fetch { args, opts }) => workload::jwt_fetch(args, &opts).await,
        Command::Jwt(JwtCommand::Validate { args, opts }) => {
            workload::jwt_validate(args, &opts).await
        }
        Command::Bundle { command, opts } => admin::bundle(command, &opts).await,
        Command::X509(X509Command::Mint { args, opts }) => admin::x509_mint(args, &opts).await,
        Command::Jwt(JwtCommand::Mint { args, opts }) => admin::jwt_mint(args, &opts).await,
        Command::Task(command) => task::run(command).await,
        Command::Policy(command) => policy::run(command).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Oauth(command) => oauth::run(command).await,
    }
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The error and its causes on one line, outermost first. Many library errors already include
/// their cause in their own message; a cause whose text is already on the line is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; RUST_LOG adjusts the level (default: info).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind {path}: {source}")]
    struct Outer {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn an_error_line_names_each_cause_once() {
        let inner = std::io::Error::other("refusing /x: owned by uid 1");
        let error = anyhow::Error::new(Outer {
            path: "/x/a.sock",
            source: inner,
        })
        .context("the server did not start");
        assert_eq!(
            one_line(&error),
            "the server did not start: cannot bind /x/a.sock: refusing /x: owned by uid 1"
        );
    }
}
