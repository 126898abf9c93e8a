//! `lanyard server run`: flags and a TOML file become a `ServerConfig`; flags win.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use lanyard_core::TrustDomain;
use lanyard_server::{ServerConfig, UpstreamAuthority};
use serde::Deserialize;

use crate::duration::HumanDuration;

/// Flags of `lanyard server run`. Each overrides the same setting in `--config`.
#[derive(Debug, Args)]
pub(crate) struct ServerRunArgs {
    /// A TOML configuration file (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The trust domain this server issues for, e.g. example.org.
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
    /// Where keys and the SQLite datastore live (default ./.lanyard/server).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The node API's address, where agents connect (default 127.0.0.1:8081).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// The admin API's Unix socket (default /run/lanyard/server/admin.sock as root, else
    /// /tmp/lanyard-server/admin.sock).
    #[arg(long)]
    admin_socket: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST:PORT/DB (default: SQLite in the data directory).
    #[arg(long)]
    datastore: Option<String>,
    /// Serve /live, /ready and /metrics over HTTP on this address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    health_bind: Option<SocketAddr>,
    /// Lifetime of each CA certificate and JWT signing key (default 24h).
    #[arg(long)]
    ca_ttl: Option<HumanDuration>,
    /// Turn on x509pop node attestation: agents prove a key certified by a CA in this PEM file.
    #[arg(long)]
    x509pop_ca: Option<PathBuf>,
    /// Where the `*.cedar` task grant policies are (default: none, every task grant refused).
    #[arg(long)]
    policy_dir: Option<PathBuf>,
}

/// The TOML file. Unknown keys are refused, so a typo is an error rather than a silent default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    trust_domain: Option<TrustDomain>,
    data_dir: Option<PathBuf>,
    bind: Option<SocketAddr>,
    admin_socket: Option<PathBuf>,
    datastore: Option<String>,
    /// How often other servers' writes to a shared datastore are read without a notice (default
    /// 5s; they normally arrive at once, as notices).
    datastore_poll_interval: Option<String>,
    health_bind: Option<SocketAddr>,
    join_token_ttl: Option<String>,
    agent_svid_ttl: Option<String>,
    x509pop_ca: Option<PathBuf>,
    #[serde(default)]
    ca: CaFile,
    upstream_authority: Option<UpstreamFile>,
    #[serde(default)]
    node_api: NodeApiFile,
    #[serde(default)]
    retention: RetentionFile,
    policy_dir: Option<PathBuf>,
    /// Most delegation hops below a task begun directly (default 3).
    max_delegation_depth: Option<u32>,
    /// How long a grant waits for a human's approval (default 10m).
    approval_timeout: Option<String>,
    #[serde(default)]
    audit: AuditFile,
    /// How often the server records that it is alive in the datastore (default 5s).
    heartbeat_interval: Option<String>,
    /// `[[identity_providers]]`: whose tokens name the people tasks act for.
    #[serde(default)]
    identity_providers: Vec<IdentityProviderFile>,
    /// `[oauth]`: the OAuth authorization server for tool servers (off when absent).
    oauth: Option<OAuthFile>,
}

/// `[oauth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OAuthFile {
    bind: SocketAddr,
    issuer: Option<String>,
    cert_file: PathBuf,
    key_file: PathBuf,
    access_token_ttl: Option<String>,
}

/// One `[[identity_providers]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityProviderFile {
    issuer: String,
    jwks_file: PathBuf,
    audience: String,
}

/// `[audit]`: the verifiable audit log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    /// How often a checkpoint is signed when the log has grown (default 1s).
    checkpoint_interval: Option<String>,
}

/// `[node_api]`: what one peer may cost the server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeApiFile {
    attestation_timeout: Option<String>,
    max_attestation_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_streams_per_connection: Option<u32>,
}

/// `[retention]`: how long diagnostic records are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    used_join_tokens: Option<String>,
    entry_tombstones: Option<String>,
    prune_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaFile {
    ttl: Option<String>,
    key_type: Option<KeyTypeName>,
    x509_svid_ttl: Option<String>,
    jwt_svid_ttl: Option<String>,
    bundle_refresh_hint: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum KeyTypeName {
    EcP256,
    EcP384,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn duration(field: &str, value: Option<&String>) -> anyhow::Result<Option<std::time::Duration>> {
    value
        .map(|v| v.parse::<HumanDuration>().map(HumanDuration::get))
        .transpose()
        .with_context(|| format!("config: {field}"))
}

fn read_file(path: &Path) -> anyhow::Result<ServerFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines; keep the error to one.
        let message = e.message().to_owned();
        let at = e
            .span()
            .map(|span| format!(" at byte {}", span.start))
            .unwrap_or_default();
        anyhow::anyhow!("config file {}{at}: {message}", path.display())
    })
}

impl ServerRunArgs {
    /// Builds the server configuration: defaults, then the file, then the flags.
    pub(crate) fn into_config(self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServerFile::default(),
        };
        let trust_domain = self.trust_domain.or(file.trust_domain).context(
            "a trust domain is required: pass --trust-domain or set trust_domain in the config file",
        )?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(".lanyard/server"));
        let mut config = ServerConfig::new(trust_domain, data_dir);
        config.admin_socket = self.admin_socket.or(file.admin_socket).unwrap_or_else(|| {
            crate::paths::ADMIN_SOCKET.to_serve(crate::paths::running_as_root())
        });
        if let Some(bind) = self.bind.or(file.bind) {
            config.bind = bind;
        }
        config.health_bind = self.health_bind.or(file.health_bind);
        config.datastore = self.datastore.or(file.datastore);
        if let Some(interval) = duration(
            "datastore_poll_interval",
            file.datastore_poll_interval.as_ref(),
        )? {
            anyhow::ensure!(
                interval >= std::time::Duration::from_secs(1)
                    && interval <= std::time::Duration::from_secs(24 * 3600),
                "config: datastore_poll_interval must be between 1s and 24h"
            );
            config.datastore_poll_interval = interval;
        }
        if let Some(ttl) = duration("join_token_ttl", file.join_token_ttl.as_ref())? {
            config.join_token_ttl = ttl;
        }
        if let Some(ttl) = duration("agent_svid_ttl", file.agent_svid_ttl.as_ref())? {
            config.agent_svid_ttl = ttl;
        }
        if let Some(path) = self.x509pop_ca.or(file.x509pop_ca) {
            let pem = std::fs::read(&path)
                .with_context(|| format!("x509pop_ca: cannot read {}", path.display()))?;
            let roots = lanyard_attestation::X509PopConfig::roots_from_pem(&pem)
                .with_context(|| format!("x509pop_ca: {}", path.display()))?;
            config.x509pop_roots = Some(roots);
        }
        let limits = &mut config.node_api;
        let node_api = &file.node_api;
        if let Some(timeout) = duration(
            "node_api.attestation_timeout",
            node_api.attestation_timeout.as_ref(),
        )? {
            limits.attestation_timeout = timeout;
        }
        if let Some(bytes) = node_api.max_attestation_bytes {
            anyhow::ensure!(
                bytes >= 4096,
                "config: node_api.max_attestation_bytes must be at least 4096"
            );
            limits.max_attestation_bytes = bytes;
        }
        if let Some(n) = node_api.max_connections {
            anyhow::ensure!(n > 0, "config: node_api.max_connections must be at least 1");
            limits.max_connections = n;
        }
        if let Some(n) = node_api.max_streams_per_connection {
            anyhow::ensure!(
                n > 0,
                "config: node_api.max_streams_per_connection must be at least 1"
            );
            limits.max_streams_per_connection = n;
        }
        let retention = &mut config.retention;
        for (field, value, target) in [
            (
                "retention.used_join_tokens",
                &file.retention.used_join_tokens,
                &mut retention.used_join_tokens,
            ),
            (
                "retention.entry_tombstones",
                &file.retention.entry_tombstones,
                &mut retention.entry_tombstones,
            ),
            (
                "retention.prune_interval",
                &file.retention.prune_interval,
                &mut retention.prune_interval,
            ),
        ] {
            if let Some(d) = duration(field, value.as_ref())? {
                anyhow::ensure!(!d.is_zero(), "config: {field} must not be zero");
                *target = d;
            }
        }
        config.policy_dir = self.policy_dir.or(file.policy_dir);
        for provider in file.identity_providers {
            anyhow::ensure!(
                !provider.issuer.is_empty() && !provider.audience.is_empty(),
                "config: identity_providers: issuer and audience must not be empty"
            );
            config
                .identity_providers
                .push(lanyard_server::IdentityProviderConfig {
                    issuer: provider.issuer,
                    jwks_file: provider.jwks_file,
                    audience: provider.audience,
                });
        }
        if let Some(depth) = file.max_delegation_depth {
            anyhow::ensure!(
                depth <= 32,
                "config: max_delegation_depth must be at most 32"
            );
            config.max_delegation_depth = depth;
        }
        if let Some(timeout) = duration("approval_timeout", file.approval_timeout.as_ref())? {
            anyhow::ensure!(
                !timeout.is_zero(),
                "config: approval_timeout must not be zero"
            );
            config.approval_timeout = timeout;
        }
        if let Some(interval) = duration(
            "audit.checkpoint_interval",
            file.audit.checkpoint_interval.as_ref(),
        )? {
            anyhow::ensure!(
                !interval.is_zero() && interval <= std::time::Duration::from_secs(3600),
                "config: audit.checkpoint_interval must be between 1ms and 1h"
            );
            config.audit_checkpoint_interval = interval;
        }
        if let Some(interval) = duration("heartbeat_interval", file.heartbeat_interval.as_ref())? {
            anyhow::ensure!(
                interval >= std::time::Duration::from_secs(1)
                    && interval <= std::time::Duration::from_secs(3600),
                "config: heartbeat_interval must be between 1s and 1h"
            );
            config.heartbeat_interval = interval;
        }
        let ca = &mut config.ca;
        if let Some(ttl) = self.ca_ttl.map(HumanDuration::get) {
            ca.ca_ttl = ttl;
        } else if let Some(ttl) = duration("ca.ttl", file.ca.ttl.as_ref())? {
            ca.ca_ttl = ttl;
        }
        if let Some(ttl) = duration("ca.x509_svid_ttl", file.ca.x509_svid_ttl.as_ref())? {
            ca.default_x509_svid_ttl = ttl;
        }
        if let Some(ttl) = duration("ca.jwt_svid_ttl", file.ca.jwt_svid_ttl.as_ref())? {
            ca.default_jwt_svid_ttl = ttl;
        }
        if let Some(hint) = duration(
            "ca.bundle_refresh_hint",
            file.ca.bundle_refresh_hint.as_ref(),
        )? {
            ca.bundle_refresh_hint = hint;
        }
        ca.p384 = matches!(file.ca.key_type, Some(KeyTypeName::EcP384));
        if let Some(upstream) = file.upstream_authority {
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("upstream_authority: cannot read {}", path.display()))
            };
            ca.upstream = Some(UpstreamAuthority {
                cert_pem: read(&upstream.cert_file)?,
                key_pem: read(&upstream.key_file)?,
            });
        }
        if let Some(oauth) = file.oauth {
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("oauth: cannot read {}", path.display()))
            };
            let ttl = duration("oauth.access_token_ttl", oauth.access_token_ttl.as_ref())?
                .unwrap_or(std::time::Duration::from_secs(300));
            anyhow::ensure!(
                !ttl.is_zero() && ttl <= std::time::Duration::from_secs(900),
                "config: oauth.access_token_ttl must be between 1s and 15m"
            );
            config.oauth = Some(lanyard_server::OAuthConfig {
                bind: oauth.bind,
                issuer: oauth.issuer,
                cert_pem: read(&oauth.cert_file)?,
                key_pem: read(&oauth.key_file)?,
                access_token_ttl: ttl,
            });
        }
        Ok(config)
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn run(args: ServerRunArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    lanyard_server::run(config, crate::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        args: ServerRunArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<ServerConfig> {
        let mut all = vec!["lanyard"];
        all.extend_from_slice(args);
        Harness::try_parse_from(all)?.args.into_config()
    }

    fn write(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn flags_override_the_file() {
        let file = write(
            "trust_domain = \"file.org\"\ndata_dir = \"/tmp/x\"\n[ca]\nttl = \"2h\"\nkey_type = \"ec-p384\"\n",
        );
        let path = file.path().to_str().unwrap();
        let from_file = config(&["--config", path]).unwrap();
        assert_eq!(from_file.trust_domain.as_str(), "file.org");
        assert_eq!(from_file.ca.ca_ttl.as_secs(), 7200);
        assert!(from_file.ca.p384);
        let overridden = config(&[
            "--config",
            path,
            "--trust-domain",
            "flag.org",
            "--ca-ttl",
            "3h",
        ])
        .unwrap();
        assert_eq!(overridden.trust_domain.as_str(), "flag.org");
        assert_eq!(overridden.ca.ca_ttl.as_secs(), 10800);
        assert_eq!(overridden.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn node_api_limits_and_retention_come_from_the_file() {
        let file = write(
            "trust_domain = \"a.org\"\npolicy_dir = \"/etc/lanyard/policies\"\n\
             max_delegation_depth = 1\ndatastore_poll_interval = \"1h\"\n\
             heartbeat_interval = \"2s\"\n\
             [node_api]\nattestation_timeout = \"2s\"\n\
             max_attestation_bytes = 65536\nmax_connections = 3\nmax_streams_per_connection = 8\n\
             [retention]\nused_join_tokens = \"10m\"\n\
             entry_tombstones = \"2h\"\nprune_interval = \"1m\"\n\
             [audit]\ncheckpoint_interval = \"5s\"\n\
             [[identity_providers]]\nissuer = \"https://idp.example.com\"\n\
             jwks_file = \"/etc/lanyard/idp.jwks\"\naudience = \"lanyard\"\n",
        );
        let config = config(&["--config", file.path().to_str().unwrap()]).unwrap();
        assert_eq!(
            config.identity_providers,
            [lanyard_server::IdentityProviderConfig {
                issuer: "https://idp.example.com".into(),
                jwks_file: "/etc/lanyard/idp.jwks".into(),
                audience: "lanyard".into(),
            }]
        );
        let limits = &config.node_api;
        assert_eq!(limits.attestation_timeout.as_secs(), 2);
        assert_eq!(limits.max_attestation_bytes, 65536);
        assert_eq!(limits.max_connections, 3);
        assert_eq!(limits.max_streams_per_connection, 8);
        let retention = &config.retention;
        assert_eq!(retention.used_join_tokens.as_secs(), 600);
        assert_eq!(retention.entry_tombstones.as_secs(), 7200);
        assert_eq!(retention.prune_interval.as_secs(), 60);
        assert_eq!(
            config.policy_dir.as_deref(),
            Some(std::path::Path::new("/etc/lanyard/policies"))
        );
        assert_eq!(config.audit_checkpoint_interval.as_secs(), 5);
        assert_eq!(config.max_delegation_depth, 1);
        assert_eq!(config.heartbeat_interval.as_secs(), 2);
        assert_eq!(config.datastore_poll_interval.as_secs(), 3600);
    }

    #[test]
    fn a_trust_domain_is_required() {
        let err = config(&[]).unwrap_err().to_string();
        assert!(err.contains("trust domain is required"), "{err}");
    }

    #[test]
    fn bad_files_give_one_line_errors() {
        for (contents, expected) in [
            (
                "trust_domain = \"example.org\"\nbogus = 1\n",
                "unknown field `bogus`",
            ),
            ("trust_domain = \"Bad.Org\"\n", "trust domain characters"),
            ("trust_domain = ", "config file"),
            (
                "trust_domain = \"a.org\"\n[ca]\nttl = \"forever\"\n",
                "ca.ttl",
            ),
            ("\u{0}\u{1}binary", "config file"),
            (
                "trust_domain = \"a.org\"\n[node_api]\nmax_connections = 0\n",
                "max_connections must be at least 1",
            ),
            (
                "trust_domain = \"a.org\"\n[node_api]\nmax_attestation_bytes = 10\n",
                "at least 4096",
            ),
            (
                "trust_domain = \"a.org\"\n[retention]\nused_join_tokens = \"0s\"\n",
                "retention.used_join_tokens must not be zero",
            ),
            // The event log became the audit log, which is never pruned.
            (
                "trust_domain = \"a.org\"\n[retention]\nevents = \"30d\"\n",
                "unknown field `events`",
            ),
            (
                "trust_domain = \"a.org\"\nmax_delegation_depth = 99\n",
                "max_delegation_depth must be at most 32",
            ),
            (
                "trust_domain = \"a.org\"\n[[identity_providers]]\nissuer = \"\"\n\
                 jwks_file = \"/x\"\naudience = \"lanyard\"\n",
                "issuer and audience must not be empty",
            ),
            (
                "trust_domain = \"a.org\"\n[audit]\ncheckpoint_interval = \"0s\"\n",
                "audit.checkpoint_interval must be between",
            ),
            (
                "trust_domain = \"a.org\"\nheartbeat_interval = \"0s\"\n",
                "heartbeat_interval must be between 1s and 1h",
            ),
            (
                "trust_domain = \"a.org\"\ndatastore_poll_interval = \"0s\"\n",
                "datastore_poll_interval must be between",
            ),
            (
                "trust_domain = \"a.org\"\n[node_api]\nmax_connections = -1\n",
                "config file",
            ),
        ] {
            let file = write(contents);
            let err = format!(
                "{:#}",
                config(&["--config", file.path().to_str().unwrap()]).unwrap_err()
            );
            assert!(err.contains(expected), "{contents:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let err = format!(
            "{:#}",
            config(&["--config", "/nonexistent/lanyard.toml"]).unwrap_err()
        );
        assert!(err.contains("cannot read config file"), "{err}");
    }
}
