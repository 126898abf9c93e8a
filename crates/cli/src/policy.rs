//! `lanyard policy check|reload|test`: the Cedar policies that decide task grants.
//!
//! `check` is offline: it loads the files exactly as the server would and prints every problem
//! with its file, line and column. `reload` and `test` ask the running server.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use lanyard_core::{Selector, SpiffeId};
use lanyard_proto::admin as pb;

use crate::admin::{AdminOpts, client, rpc_error};
use crate::output::{OutputFormat, print_json, table};
use crate::output::{out, outln};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Check policy files offline, as the server would load them (no server needed).
    Check {
        /// `.cedar` files, or directories whose `*.cedar` files are read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Make the server read its policy directory again. A set that does not load is refused and
    /// the previous one keeps deciding.
    Reload {
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Put one request to the server's loaded policies and print the decision.
    Test {
        #[command(flatten)]
        args: TestArgs,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// The workload asking (its SPIFFE ID).
    #[arg(long)]
    principal: SpiffeId,
    /// An operation (repeat for several; every one must be allowed).
    #[arg(long = "action", required = true)]
    actions: Vec<String>,
    /// The tool (the audience of the credential).
    #[arg(long)]
    resource: String,
    /// A selector of the workload, TYPE:VALUE (repeatable).
    #[arg(long = "selector")]
    selectors: Vec<Selector>,
    /// The task context as JSON: any of ttl_seconds, purpose, on_behalf_of, delegation_depth.
    #[arg(long)]
    context: Option<String>,
}

pub(crate) async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { files, output } => check(&files, output),
        PolicyCommand::Reload { opts } => reload(&opts).await,
        PolicyCommand::Test { args, opts } => test(args, &opts).await,
    }
}

fn check(paths: &[PathBuf], output: OutputFormat) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "cedar"))
                .collect();
            found.sort();
            for file in found {
                files.push(read_policy_file(&file)?);
            }
        } else {
            files.push(read_policy_file(path)?);
        }
    }
    if files.is_empty() {
        bail!(
            "no .cedar files in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match lanyard_policy::PolicyBundle::load(&files) {
        Ok(bundle) => {
            if output == OutputFormat::Json {
                return print_json(&serde_json::json!({
                    "ok": true,
                    "files": files.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                    "policy_ids": bundle.policy_ids(),
                }));
            }
            outln!("ok: {} policies in {} files", bundle.len(), files.len());
            for id in bundle.policy_ids() {
                outln!("  {id}");
            }
            Ok(())
        }
        Err(e) => {
            if output == OutputFormat::Json {
                let problems: Vec<serde_json::Value> = e
                    .problems
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "file": p.file, "line": p.line, "column": p.column, "message": p.message,
                        })
                    })
                    .collect();
                print_json(&serde_json::json!({ "ok": false, "problems": problems }))?;
            } else {
                for p in &e.problems {
                    eprintln!("{}:{}:{}: {}", p.file, p.line, p.column, p.message);
                }
            }
            bail!(
                "{} problem(s) in the policies; nothing would be loaded",
                e.problems.len()
            )
        }
    }
}

/// A policy file as (the path as given, its text), within the size the server accepts.
fn read_policy_file(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > lanyard_policy::MAX_POLICY_FILE_BYTES as u64 {
        bail!(
            "{} is larger than {} bytes",
            path.display(),
            lanyard_policy::MAX_POLICY_FILE_BYTES
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

async fn reload(opts: &AdminOpts) -> anyhow::Result<()> {
    let loaded = client(opts)
        .await?
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if opts.output == OutputFormat::Json {
        return print_json(&loaded);
    }
    outln!(
        "reloaded: {} policies from {} files",
        loaded.policy_ids.len(),
        loaded.files.len()
    );
    Ok(())
}

async fn test(args: TestArgs, opts: &AdminOpts) -> anyhow::Result<()> {
    let request = pb::TestPolicyRequest {
        principal: args.principal.to_string(),
        selectors: args.selectors.iter().map(ToString::to_string).collect(),
        operations: args.actions,
        resource: args.resource,
        context_json: args.context.unwrap_or_default(),
    };
    let decision = client(opts)
        .await?
        .test_policy(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    if opts.output == OutputFormat::Json {
        return print_json(&decision);
    }
    outln!("{}", if decision.allowed { "ALLOW" } else { "DENY" });
    let rows: Vec<Vec<String>> = decision
        .operations
        .iter()
        .map(|o| {
            vec![
                o.operation.clone(),
                o.outcome.clone(),
                o.policy_ids.join(", "),
            ]
        })
        .collect();
    out!("{}", table(&["ACTION", "OUTCOME", "POLICIES"], &rows));
    Ok(())
}
