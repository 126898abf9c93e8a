//! `lanyard oauth show|resource-metadata`: the OAuth authorization server tool servers trust.
//!
//! `resource-metadata` prints the RFC 9728 document a tool server (an MCP server) serves at
//! `/.well-known/oauth-protected-resource[/<path>]`, naming this server as its authorization
//! server; it also says on stderr at which URL to serve it.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use lanyard_proto::admin as pb;
use serde_json::{Value, json};

use crate::admin::{AdminOpts, client, rpc_error};
use crate::output::outln;
use crate::output::{OutputFormat, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum OAuthCommand {
    /// The server's RFC 8414 metadata: issuer, token, JWKS and introspection endpoints.
    Show {
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// The RFC 9728 protected-resource metadata a tool server should serve.
    ResourceMetadata {
        #[command(flatten)]
        args: ResourceArgs,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ResourceArgs {
    /// The tool server's canonical URI (what clients send as `resource`), e.g.
    /// https://tickets.example/mcp.
    #[arg(long)]
    resource: String,
    /// A scope the tool understands (repeatable): `scopes_supported`.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A human-readable name: `resource_name`.
    #[arg(long)]
    name: Option<String>,
    /// The authorization server's issuer; default: ask the server.
    #[arg(long)]
    authorization_server: Option<String>,
}

pub(crate) async fn run(command: OAuthCommand) -> anyhow::Result<()> {
    match command {
        OAuthCommand::Show { opts } => {
            let metadata = metadata(&opts).await?;
            if opts.output == OutputFormat::Json {
                return print_json(&metadata);
            }
            for name in [
                "issuer",
                "token_endpoint",
                "jwks_uri",
                "introspection_endpoint",
            ] {
                outln!("{name:<24}{}", metadata[name].as_str().unwrap_or_default());
            }
            Ok(())
        }
        OAuthCommand::ResourceMetadata { args, opts } => {
            let issuer = match args.authorization_server {
                Some(issuer) => issuer,
                None => metadata(&opts).await?["issuer"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            };
            let well_known = well_known_url(&args.resource)?;
            let document = resource_metadata(&args.resource, &issuer, &args.scopes, args.name);
            eprintln!("serve this at {well_known}");
            print_json(&document)
        }
    }
}

async fn metadata(opts: &AdminOpts) -> anyhow::Result<Value> {
    let response = client(opts)
        .await?
        .get_o_auth_metadata(pb::GetOAuthMetadataRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    serde_json::from_str(&response.metadata_json).context("the server's metadata is not JSON")
}

/// RFC 9728 §2; members with no value are left out (§3.2). `resource` is echoed exactly: a
/// client compares it byte for byte with the URI it used (§3.3).
fn resource_metadata(
    resource: &str,
    issuer: &str,
    scopes: &[String],
    name: Option<String>,
) -> Value {
    let mut document = json!({
        "resource": resource,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    });
    if !scopes.is_empty() {
        document["scopes_supported"] = json!(scopes);
    }
    if let Some(name) = name {
        document["resource_name"] = json!(name);
    }
    document
}

/// Where a resource serves its metadata (RFC 9728 §3.1): `/.well-known/oauth-protected-resource`
/// between the host and the path. The resource must be https (http only on loopback, for
/// development), with no fragment.
fn well_known_url(resource: &str) -> anyhow::Result<String> {
    let (scheme, rest) = resource
        .split_once("://")
        .context("--resource must be an absolute URI such as https://tickets.example/mcp")?;
    if resource.contains('#') {
        bail!("--resource must not have a fragment");
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    match scheme {
        "https" => {}
        "http" if loopback => {}
        _ => bail!("--resource must be an https URI (http only on loopback)"),
    }
    if authority.is_empty() {
        bail!("--resource has no host");
    }
    let path = path.trim_end_matches('/');
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok(format!(
        "{scheme}://{authority}/.well-known/oauth-protected-resource{path}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_well_known_path_goes_between_host_and_path() {
        assert_eq!(
            well_known_url("https://tickets.example/mcp").unwrap(),
            "https://tickets.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            well_known_url("https://tickets.example").unwrap(),
            "https://tickets.example/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            well_known_url("http://127.0.0.1:9000/mcp/").unwrap(),
            "http://127.0.0.1:9000/.well-known/oauth-protected-resource/mcp"
        );
        for bad in [
            "tickets",
            "http://tickets.example/mcp",
            "https://a/b#c",
            "https:///mcp",
            "ftp://a/b",
        ] {
            assert!(well_known_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_members_are_left_out() {
        let doc = resource_metadata("https://t/mcp", "https://as", &[], None);
        assert_eq!(
            doc,
            json!({"resource": "https://t/mcp", "authorization_servers": ["https://as"],
                   "bearer_methods_supported": ["header"]})
        );
        let doc = resource_metadata(
            "https://t/mcp",
            "https://as",
            &["tools:read".into()],
            Some("Tickets".into()),
        );
        assert_eq!(doc["scopes_supported"], json!(["tools:read"]));
        assert_eq!(doc["resource_name"], "Tickets");
    }
}
