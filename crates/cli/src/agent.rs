//! `lanyard agent run`: flags and a TOML file become an `AgentConfig`; flags win.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use lanyard_agent::{AgentConfig, JoinToken, NodeAttestorConfig, ServerAddress, TrustBootstrap};
use lanyard_core::TrustDomain;
use serde::Deserialize;

/// Flags of `lanyard agent run`. Each overrides the same setting in `--config`.
#[derive(Debug, Args)]
pub(crate) struct AgentRunArgs {
    /// A TOML configuration file (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The trust domain, e.g. example.org.
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
    /// The server's node API, HOST:PORT (default 127.0.0.1:8081).
    #[arg(long)]
    server: Option<String>,
    /// The Workload API socket (default /run/lanyard/agent/public/api.sock as root, else
    /// /tmp/lanyard-agent/public/api.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Where the agent keeps its SVID, key and bundle (default ./.lanyard/agent).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A join token from `lanyard token generate`, for the first attestation.
    #[arg(long)]
    join_token: Option<String>,
    /// x509pop: the node's certificate chain (PEM).
    #[arg(long, requires = "x509pop_key")]
    x509pop_cert: Option<PathBuf>,
    /// x509pop: the node's private key (PEM).
    #[arg(long, requires = "x509pop_cert")]
    x509pop_key: Option<PathBuf>,
    /// The trust domain's bundle (SPIFFE JSON or PEM) to trust the server on first contact.
    #[arg(long)]
    trust_bundle: Option<PathBuf>,
    /// Development only: trust whatever server answers on first contact (as long as it names
    /// itself spiffe://<td>/lanyard/server). Never use this in production.
    #[arg(long)]
    insecure_bootstrap: bool,
}

/// The TOML file. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    trust_domain: Option<TrustDomain>,
    server: Option<String>,
    socket: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    join_token: Option<String>,
    x509pop_cert: Option<PathBuf>,
    x509pop_key: Option<PathBuf>,
    trust_bundle: Option<PathBuf>,
    #[serde(default)]
    insecure_bootstrap: bool,
}

fn read_file(path: &Path) -> anyhow::Result<AgentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
}

impl AgentRunArgs {
    pub(crate) fn into_config(self) -> anyhow::Result<AgentConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => AgentFile::default(),
        };
        let trust_domain = self
            .trust_domain
            .or(file.trust_domain)
            .context("a trust domain is required: pass --trust-domain or set trust_domain in the config file")?;
        let server = self
            .server
            .or(file.server)
            .unwrap_or_else(|| lanyard_agent::DEFAULT_SERVER_ADDRESS.to_owned());
        let server: ServerAddress = server
            .parse()
            .with_context(|| format!("--server `{server}`"))?;
        let trust = match self.trust_bundle.or(file.trust_bundle) {
            Some(path) => {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read trust bundle {}", path.display()))?;
                TrustBootstrap::from_bytes(&trust_domain, &bytes)?
            }
            None if self.insecure_bootstrap || file.insecure_bootstrap => {
                TrustBootstrap::InsecureBootstrap
            }
            None => anyhow::bail!(
                "the agent needs to trust the server: pass --trust-bundle FILE (from `lanyard bundle show`), or --insecure-bootstrap for development"
            ),
        };
        let mut config = AgentConfig::new(
            trust_domain,
            server,
            self.data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(lanyard_agent::DEFAULT_DATA_DIR)),
            self.socket.or(file.socket).unwrap_or_else(|| {
                crate::paths::WORKLOAD_SOCKET.to_serve(crate::paths::running_as_root())
            }),
            trust,
        );
        if let Some(token) = self.join_token.or(file.join_token) {
            let token: JoinToken = token.parse().context("--join-token")?;
            config = config.with_node_attestor(NodeAttestorConfig::JoinToken(token));
        } else if let (Some(cert_chain_path), Some(key_path)) = (
            self.x509pop_cert.or(file.x509pop_cert),
            self.x509pop_key.or(file.x509pop_key),
        ) {
            config = config.with_node_attestor(NodeAttestorConfig::X509Pop {
                cert_chain_path,
                key_path,
            });
        }
        Ok(config)
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub(crate) async fn run(args: AgentRunArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    lanyard_agent::run(config, crate::shutdown_signal()).await?;
    Ok(())
}
