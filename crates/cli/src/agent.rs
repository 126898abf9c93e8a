//! `lanyard agent run`: flags and a TOML file become an `AgentConfig`; flags win, except for the
//! join token, which must come from exactly one place (see [`JoinTokenSources`]).

use std::ffi::OsString;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context as _;
use clap::Args;
use lanyard_agent::{AgentConfig, JoinToken, NodeAttestorConfig, ServerList, TrustBootstrap};
use lanyard_core::TrustDomain;
use serde::Deserialize;
use zeroize::Zeroizing;

/// The environment variable that may hold the join token (read by clap for `--join-token`).
pub(crate) const JOIN_TOKEN_ENV: &str = "LANYARD_JOIN_TOKEN";
/// Largest join token file read, in bytes: a token is at most 256, so a larger file is not one.
const MAX_TOKEN_FILE_LEN: usize = 4096;

/// Flags of `lanyard agent run`. Each overrides the same setting in `--config`.
#[derive(Debug, Args)]
pub(crate) struct AgentRunArgs {
    /// A TOML configuration file (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The trust domain, e.g. example.org.
    #[arg(long)]
    trust_domain: Option<TrustDomain>,
    /// The servers' node API, HOST:PORT, or several separated by commas when servers share one
    /// datastore: the agent fails over between them (default 127.0.0.1:8081).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT…]")]
    server: Option<String>,
    /// The Workload API socket (default /run/lanyard/agent/public/api.sock as root, else
    /// /tmp/lanyard-agent/public/api.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Where the agent keeps its SVID, key and bundle (default ./.lanyard/agent).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A join token from `lanyard token generate`, for the first attestation. Prefer
    /// --join-token-file or the environment variable: a command line is visible to every user of
    /// the machine.
    #[arg(long, value_name = "TOKEN", env = JOIN_TOKEN_ENV, hide_env_values = true)]
    join_token: Option<Secret>,
    /// A file holding the join token (trailing whitespace, such as a newline, is ignored).
    #[arg(long, value_name = "PATH")]
    join_token_file: Option<PathBuf>,
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
    server: Option<ServerSetting>,
    socket: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    join_token: Option<Secret>,
    join_token_file: Option<PathBuf>,
    x509pop_cert: Option<PathBuf>,
    x509pop_key: Option<PathBuf>,
    trust_bundle: Option<PathBuf>,
    #[serde(default)]
    insecure_bootstrap: bool,
}

/// `server` in the file: `"host:port"` (commas allowed, as on the command line) or an array.
#[derive(Debug)]
enum ServerSetting {
    One(String),
    Several(Vec<String>),
}

impl<'de> Deserialize<'de> for ServerSetting {
    /// By hand, so that a wrong type is reported as what is expected (an untagged enum would say
    /// only that no variant matched).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ServerSetting;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a \"host:port\" string (commas between several) or an array of them")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ServerSetting::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut addresses = Vec::new();
                while let Some(address) = seq.next_element::<String>()? {
                    addresses.push(address);
                }
                Ok(ServerSetting::Several(addresses))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl ServerSetting {
    fn parse(&self) -> anyhow::Result<ServerList> {
        match self {
            Self::One(list) => list
                .parse()
                .with_context(|| format!("`server = {list:?}` in the config file")),
            Self::Several(addresses) => {
                let parsed = addresses
                    .iter()
                    .map(|a| {
                        a.parse()
                            .with_context(|| format!("`server` in the config file: {a:?}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(ServerList::new(parsed).context("`server` in the config file")?)
            }
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<AgentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
}

/// A join token as typed, before it is parsed: never printed, wiped on drop.
#[derive(Clone, PartialEq, Eq)]
struct Secret(Zeroizing<String>);

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    /// Accepts anything: the token is checked by [`JoinToken`]'s parser, whose errors never
    /// quote it (clap's would).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(Zeroizing::new(s.to_owned())))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Self(Zeroizing::new(s)))
    }
}

/// Every place a join token may come from, as given. At most one may be used.
#[derive(Debug, Default)]
struct JoinTokenSources {
    flag: Option<Secret>,
    env: Option<Secret>,
    flag_file: Option<PathBuf>,
    config: Option<Secret>,
    config_file: Option<PathBuf>,
}

impl JoinTokenSources {
    /// Sorts out what clap put in `--join-token`: the flag's value or, without the flag,
    /// `LANYARD_JOIN_TOKEN`'s. `env` is that variable's value, if set. A flag whose value differs
    /// from the variable's means both were given; with the same value, they are one token.
    fn new(
        flag_or_env: Option<Secret>,
        env: Option<OsString>,
        flag_file: Option<PathBuf>,
        file: &mut AgentFile,
    ) -> Self {
        let env = env.map(|v| Secret(Zeroizing::new(v.to_string_lossy().into_owned())));
        let flag = match (flag_or_env, &env) {
            (Some(value), Some(env)) if &value == env => None,
            (value, _) => value,
        };
        Self {
            flag,
            env,
            flag_file,
            config: file.join_token.take(),
            config_file: file.join_token_file.take(),
        }
    }

    /// The one token given, read and parsed; `None` if none was.
    fn resolve(self) -> anyhow::Result<Option<JoinToken>> {
        let given: Vec<(&str, Given)> = [
            ("--join-token", self.flag.map(Given::Inline)),
            (JOIN_TOKEN_ENV, self.env.map(Given::Inline)),
            ("--join-token-file", self.flag_file.map(Given::File)),
            (
                "join_token in the config file",
                self.config.map(Given::Inline),
            ),
            (
                "join_token_file in the config file",
                self.config_file.map(Given::File),
            ),
        ]
        .into_iter()
        .filter_map(|(source, given)| Some((source, given?)))
        .collect();
        match given.as_slice() {
            [] => Ok(None),
            [(source, Given::Inline(secret))] => secret
                .0
                .parse::<JoinToken>()
                .with_context(|| (*source).to_owned())
                .map(Some),
            [(_, Given::File(path))] => read_token_file(path).map(Some),
            several => {
                let sources: Vec<&str> = several.iter().map(|(source, _)| *source).collect();
                anyhow::bail!(
                    "the join token is given in more than one way ({}); give exactly one",
                    sources.join(", ")
                )
            }
        }
    }
}

/// A join token source that was given: the token itself, or a file holding it.
enum Given {
    Inline(Secret),
    File(PathBuf),
}

/// Reads a join token file: at most [`MAX_TOKEN_FILE_LEN`] bytes of text, trailing whitespace
/// ignored. Errors name the file, never its content.
fn read_token_file(path: &Path) -> anyhow::Result<JoinToken> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the join token file {}", path.display()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    // One byte more than allowed tells a file at the limit from a larger one, without reading a
    // huge (or endless, like /dev/zero) file.
    file.take(MAX_TOKEN_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the join token file {}", path.display()))?;
    if bytes.len() > MAX_TOKEN_FILE_LEN {
        anyhow::bail!(
            "the join token file {} is over {MAX_TOKEN_FILE_LEN} bytes; it should hold only the token",
            path.display()
        );
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "the join token file {} is not text; it should hold only the token",
            path.display()
        )
    })?;
    let token = text.trim_end();
    if token.is_empty() {
        anyhow::bail!("the join token file {} is empty", path.display());
    }
    token
        .parse()
        .with_context(|| format!("the join token file {}", path.display()))
}

impl AgentRunArgs {
    pub(crate) fn into_config(self) -> anyhow::Result<AgentConfig> {
        self.into_config_with_env(std::env::var_os(JOIN_TOKEN_ENV))
    }

    /// [`into_config`](Self::into_config), given the value of `LANYARD_JOIN_TOKEN` (which clap
    /// has also read into `--join-token` if the flag was absent).
    fn into_config_with_env(self, token_env: Option<OsString>) -> anyhow::Result<AgentConfig> {
        let mut file = match &self.config {
            Some(path) => read_file(path)?,
            None => AgentFile::default(),
        };
        let join_token =
            JoinTokenSources::new(self.join_token, token_env, self.join_token_file, &mut file)
                .resolve()?;
        let trust_domain = self
            .trust_domain
            .or(file.trust_domain)
            .context("a trust domain is required: pass --trust-domain or set trust_domain in the config file")?;
        let server: ServerList = match (&self.server, &file.server) {
            (Some(flag), _) => flag.parse().with_context(|| format!("--server `{flag}`"))?,
            (None, Some(setting)) => setting.parse()?,
            (None, None) => lanyard_agent::DEFAULT_SERVER_ADDRESS.parse()?,
        };
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
        if let Some(token) = join_token {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use clap::Parser;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentRunArgs,
    }

    fn args(extra: &[&str]) -> AgentRunArgs {
        let base = [
            "agent",
            "--trust-domain",
            "example.org",
            "--insecure-bootstrap",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).unwrap().args
    }

    fn token_of(config: &AgentConfig) -> Option<String> {
        match &config.node_attestor {
            Some(NodeAttestorConfig::JoinToken(token)) => Some(token.expose_secret().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let args = args(&["--join-token", TOKEN]);
        assert!(!format!("{args:?}").contains(TOKEN));
        let config = args.into_config_with_env(None).unwrap();
        assert_eq!(token_of(&config).as_deref(), Some(TOKEN));
        assert!(!format!("{config:?}").contains(TOKEN));
    }

    #[test]
    fn the_environment_counts_as_one_source() {
        // clap put the variable's value in `--join-token`: one source.
        let config = args(&["--join-token", TOKEN])
            .into_config_with_env(Some(TOKEN.into()))
            .unwrap();
        assert_eq!(token_of(&config).as_deref(), Some(TOKEN));
        // A flag with another value: two.
        let err = args(&["--join-token", TOKEN])
            .into_config_with_env(Some("other".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--join-token, LANYARD_JOIN_TOKEN"), "{err}");
        assert!(!err.contains(TOKEN) && !err.contains("other"), "{err}");
    }

    #[test]
    fn the_config_file_may_name_a_token_file_but_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\r\n")).unwrap();
        let config_file = dir.path().join("agent.toml");
        let write_config = |body: &str| std::fs::write(&config_file, body).unwrap();
        let config_arg = config_file.to_str().unwrap();

        write_config(&format!("join_token_file = {:?}\n", token_file));
        let config = args(&["--config", config_arg])
            .into_config_with_env(None)
            .unwrap();
        assert_eq!(token_of(&config).as_deref(), Some(TOKEN));

        write_config(&format!(
            "join_token = \"{TOKEN}\"\njoin_token_file = {:?}\n",
            token_file
        ));
        let err = args(&["--config", config_arg])
            .into_config_with_env(None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("join_token in the config file, join_token_file in the config file"),
            "{err}"
        );

        // No token anywhere: no join token attestor.
        write_config("");
        let config = args(&["--config", config_arg])
            .into_config_with_env(None)
            .unwrap();
        assert!(config.node_attestor.is_none());
    }

    #[test]
    fn servers_come_from_the_flag_or_the_file_as_a_string_or_an_array() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("agent.toml");
        let config_arg = config_file.to_str().unwrap();
        let from_file = |body: &str| {
            std::fs::write(&config_file, body).unwrap();
            args(&["--config", config_arg]).into_config_with_env(None)
        };
        let servers = |config: AgentConfig| config.servers.to_string();

        assert_eq!(
            servers(args(&[]).into_config_with_env(None).unwrap()),
            "127.0.0.1:8081"
        );
        assert_eq!(
            servers(
                args(&["--server", "a:1,b:2"])
                    .into_config_with_env(None)
                    .unwrap()
            ),
            "a:1,b:2"
        );
        assert_eq!(servers(from_file("server = \"a:1\"\n").unwrap()), "a:1");
        assert_eq!(
            servers(from_file("server = [\"a:1\", \"[::1]:2\", \"c:3\"]\n").unwrap()),
            "a:1,[::1]:2,c:3"
        );
        // The flag wins over the file.
        let config = args(&["--config", config_arg, "--server", "z:9"])
            .into_config_with_env(None)
            .unwrap();
        assert_eq!(servers(config), "z:9");

        for (body, expected) in [
            ("server = []\n", "no server address"),
            ("server = [\"a:1\", \"a:1\"]\n", "a:1 is listed twice"),
            ("server = \"a:1,,b:2\"\n", "an empty address"),
            ("server = [\"a:1,b:2\"]\n", "\"a:1,b:2\""),
            ("server = 7\n", "expected a \"host:port\" string"),
            ("server = [7]\n", "expected a string"),
        ] {
            let err = format!("{:#}", from_file(body).unwrap_err());
            assert!(err.contains(expected), "{body}: {err}");
        }
        let many: Vec<String> = (1..=65).map(|i| format!("h{i}:1")).collect();
        let err = format!(
            "{:#}",
            args(&["--server", &many.join(",")])
                .into_config_with_env(None)
                .unwrap_err()
        );
        assert!(err.contains("at most 64"), "{err}");
        assert!(
            args(&["--server", &many[..64].join(",")])
                .into_config_with_env(None)
                .is_ok()
        );
    }

    #[test]
    fn a_token_file_at_the_limit_is_read_and_one_byte_more_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        // Whitespace pads the file to the limit; the token itself is short.
        let padded = format!("{TOKEN}{}", " ".repeat(MAX_TOKEN_FILE_LEN - TOKEN.len()));
        std::fs::write(&path, &padded).unwrap();
        assert_eq!(read_token_file(&path).unwrap().expose_secret(), TOKEN);
        std::fs::write(&path, format!("{padded} ")).unwrap();
        let err = read_token_file(&path).unwrap_err().to_string();
        assert!(err.contains("over 4096 bytes"), "{err}");
    }
}
