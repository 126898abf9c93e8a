//! `lanyard dev`: a server, an agent and an identity for the current user, in one process, so a
//! new user sees a working SVID with one command. Everything lives under one directory
//! (`./.lanyard` by default) and survives a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use lanyard_agent::{AgentConfig, JoinToken, NodeAttestorConfig, ServerAddress, TrustBootstrap};
use lanyard_core::TrustDomain;
use lanyard_proto::admin::{self as pb, admin_client::AdminClient};
use lanyard_server::ServerConfig;
use tokio::sync::watch;

use crate::output::outln;
use crate::uds;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Where the server and agent keep their state and sockets.
    #[arg(long, default_value = ".lanyard")]
    dir: PathBuf,
    /// The trust domain of the development setup.
    #[arg(long, default_value = "example.org")]
    trust_domain: TrustDomain,
}

/// The current user's name from /etc/passwd, made safe for a SPIFFE ID path segment.
fn user_name(uid: u32) -> String {
    let from_passwd = std::fs::read("/etc/passwd").ok().and_then(|passwd| {
        passwd
            .split(|b| *b == b'\n')
            .filter_map(lanyard_attestation::workload::names::parse_passwd_line)
            .find(|(_, id)| *id == uid)
            .map(|(name, _)| name)
    });
    let name = from_passwd.unwrap_or_else(|| format!("uid-{uid}"));
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe == "." || safe == ".." {
        format!("uid-{uid}")
    } else {
        safe
    }
}

/// The policy `lanyard dev` installs (once; an edited copy is kept): the development user may get
/// `read` and `list` credentials for the example tool `tickets`, for at most five minutes.
const EXAMPLE_POLICY: &str = r#"// Installed by `lanyard dev`. Edit it, then run `lanyard policy reload`.
// Task credentials for the example tool "tickets": read and list, five minutes at most.
// `lanyard dev` trusts no identity provider, so a task for a person names them unverified
// (`--on-behalf-of user:alice`): this permit accepts that, and the token says "verified": false.
// In production, configure [[identity_providers]] and drop @on_behalf_of.
@id("dev-tickets-read")
@max_ttl("5m")
@on_behalf_of("unverified")
permit(
    principal,
    action in [Action::"read", Action::"list"],
    resource == Tool::"tickets"
)
when { principal.trust_domain == "TRUST_DOMAIN" };

// Nobody deletes tickets with a task credential.
@id("dev-tickets-no-delete")
forbid(principal, action == Action::"delete", resource == Tool::"tickets");
"#;

/// Writes the example policy into `dir` unless a policy file is there already.
fn install_example_policy(dir: &Path, td: &TrustDomain) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("dev-example.cedar");
    if !path.exists() {
        std::fs::write(&path, EXAMPLE_POLICY.replace("TRUST_DOMAIN", td.as_str()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// A free loopback port for the node API. The port is released before the server binds it; on a
/// development machine nothing else grabs it in between.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until the admin API answers, or the server task ends.
async fn wait_for_server(
    socket: &Path,
    server: &mut tokio::task::JoinHandle<Result<(), lanyard_server::ServerError>>,
) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let mut pause = Duration::from_millis(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if server.is_finished() {
            match server.await {
                Ok(Err(e)) => return Err(e).context("the server did not start"),
                _ => bail!("the server stopped during start"),
            }
        }
        if let Ok(channel) = uds::connect(socket).await {
            let mut client = AdminClient::new(channel);
            if client.health(pb::HealthRequest {}).await.is_ok() {
                return Ok(client);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the server did not answer within 30 s");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let td = args.trust_domain;
    let admin_socket = dir.join("admin.sock");
    let workload_socket = dir.join("agent.sock");
    let port = free_port()?;

    let policy_dir = dir.join("policies");
    let policy_file = install_example_policy(&policy_dir, &td)?;
    let mut server_config = ServerConfig::new(td.clone(), dir.join("server"));
    server_config.admin_socket = admin_socket.clone();
    server_config.policy_dir = Some(policy_dir);
    server_config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut server = tokio::spawn(lanyard_server::run(server_config, stopped(stop_rx.clone())));
    let mut admin = wait_for_server(&admin_socket, &mut server).await?;

    // The agent gets a fixed ID, so the user's entry can name it as parent before it attests, and
    // a restart of `lanyard dev` finds everything where it was.
    let agent_id = td.id_from_segments(&["lanyard", "agent", "dev"])?;
    let token = admin
        .generate_join_token(pb::GenerateJoinTokenRequest {
            ttl_seconds: 600,
            spiffe_id: agent_id.to_string(),
        })
        .await
        .context("cannot make a join token")?
        .into_inner()
        .token;
    let uid = rustix::process::getuid().as_raw();
    let user_id = td.id_from_segments(&["user", &user_name(uid)])?;
    let selector = format!("unix:uid:{uid}");
    let created = admin
        .batch_create_entries(pb::BatchCreateEntriesRequest {
            entries: vec![pb::Entry {
                spiffe_id: user_id.to_string(),
                parent_id: agent_id.to_string(),
                selectors: vec![selector.clone()],
                ..Default::default()
            }],
        })
        .await
        .context("cannot register the user's entry")?
        .into_inner();
    let status = created
        .results
        .first()
        .and_then(|r| r.status.clone())
        .unwrap_or_default();
    if status.code != 0 && status.code != tonic::Code::AlreadyExists as i32 {
        bail!("cannot register the user's entry: {}", status.message);
    }
    let bundle = admin
        .get_bundle(pb::GetBundleRequest {})
        .await?
        .into_inner();

    let agent_config = AgentConfig::new(
        td.clone(),
        format!("127.0.0.1:{port}").parse::<ServerAddress>()?,
        dir.join("agent"),
        workload_socket.clone(),
        TrustBootstrap::from_bytes(&td, bundle.spiffe_json.as_bytes())?,
    )
    .with_node_attestor(NodeAttestorConfig::JoinToken(token.parse::<JoinToken>()?));
    let mut agent = tokio::spawn(lanyard_agent::run(agent_config, stopped(stop_rx)));

    outln!(
        "lanyard dev is running (Ctrl-C to stop); state in {}",
        dir.display()
    );
    outln!("  trust domain:  {td}");
    outln!("  your identity: {user_id} (for processes with {selector})");
    outln!();
    outln!("In another shell:");
    outln!(
        "  export SPIFFE_ENDPOINT_SOCKET=unix://{}",
        workload_socket.display()
    );
    outln!("  export LANYARD_ADMIN_SOCKET={}", admin_socket.display());
    outln!("  lanyard x509 fetch");
    outln!();
    outln!(
        "Task credentials are decided by the example policy in {} (tool \"tickets\": read, list):",
        policy_file.display()
    );
    outln!("  lanyard task begin --audience tickets --op read --purpose 'triage'");

    let outcome = tokio::select! {
        () = crate::shutdown_signal() => Ok(()),
        result = &mut server => match result {
            Ok(Ok(())) => bail!("the server stopped"),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the server failed")),
            Err(e) => Err(anyhow::Error::new(e).context("the server task failed")),
        },
        result = &mut agent => match result {
            Ok(Ok(())) => bail!("the agent stopped"),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the agent failed")),
            Err(e) => Err(anyhow::Error::new(e).context("the agent task failed")),
        },
    };
    let _ = stop_tx.send(true);
    if !agent.is_finished() {
        let _ = agent.await;
    }
    if !server.is_finished() {
        let _ = server.await;
    }
    outcome
}
