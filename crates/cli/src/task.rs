//! `lanyard task begin` (a workload asks its agent for a task credential) and `lanyard task
//! list|show` (an administrator looks at every task on the server).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use lanyard_core::SpiffeId;
use lanyard_proto::admin as admin_pb;
use lanyard_proto::task::{self as pb, tasks_client::TasksClient};
use lanyard_workload::SecurityHeader;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::admin::{AdminOpts, client, rpc_error, unix_time};
use crate::duration::HumanDuration;
use crate::output::{OutputFormat, print_json, table};
use crate::output::{out, outln};
use crate::workload::SocketOpts;

#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// Ask the local agent for a credential for one task: one tool, a few operations, a few
    /// minutes. The server's policies decide.
    Begin {
        #[command(flatten)]
        args: BeginArgs,
        #[command(flatten)]
        opts: SocketOpts,
    },
    /// End one of this process's tasks now: every agent refuses its token from then on.
    End {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        opts: SocketOpts,
    },
    /// For tools: check a task token presented to this process, for its audience and one
    /// operation, through the local agent (recorded as tool use in the audit log).
    Validate {
        #[arg(long)]
        token: String,
        /// This tool's audience.
        #[arg(long)]
        audience: String,
        /// The operation the bearer wants.
        #[arg(long = "op")]
        operation: String,
        #[command(flatten)]
        opts: SocketOpts,
    },
    /// Admin: approve a grant waiting for a human.
    Approve {
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Admin: deny a grant waiting for a human; the reason is told to the caller.
    Deny {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Admin: revoke a task now (every agent refuses its token within a second).
    Revoke {
        #[arg(long)]
        id: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Admin: list tasks.
    List {
        /// List the grants waiting for approval instead.
        #[arg(long)]
        pending: bool,
        /// Only tasks granted to this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<SpiffeId>,
        /// Only tasks for this tool.
        #[arg(long)]
        audience: Option<String>,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Admin: show one task.
    Show {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Args)]
pub(crate) struct BeginArgs {
    /// The tool the credential is for (its `aud`).
    #[arg(long)]
    audience: String,
    /// An operation to be allowed (repeat for several).
    #[arg(long = "op", required = true)]
    operations: Vec<String>,
    /// How long the credential should last (at most 15m; default: the longest allowed).
    #[arg(long)]
    ttl: Option<HumanDuration>,
    /// Why: recorded in the audit log and carried in the token.
    #[arg(long, default_value = "")]
    purpose: String,
    /// Whom the task acts for: the person's token from an identity provider the server trusts
    /// (verified there), or a plain name (accepted only by a policy that says
    /// `@on_behalf_of("unverified")`).
    #[arg(long, default_value = "", conflicts_with = "on_behalf_of_file")]
    on_behalf_of: String,
    /// `--on-behalf-of`, read from this file (a token is then not shown in the process list).
    #[arg(long)]
    on_behalf_of_file: Option<std::path::PathBuf>,
    /// Which of the caller's identities (default: its only one).
    #[arg(long)]
    spiffe_id: Option<SpiffeId>,
    /// When a policy requires a human's approval: how long to wait for it.
    #[arg(long, default_value = "10m")]
    approval_wait: HumanDuration,
    /// Delegate part of a parent task: its token (the child may only narrow it).
    #[arg(long, conflicts_with = "parent_token_file")]
    parent_token: Option<String>,
    /// The parent task's token, read from this file (not shown in the process list).
    #[arg(long)]
    parent_token_file: Option<std::path::PathBuf>,
}

pub(crate) async fn run(command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Begin { args, opts } => begin(args, &opts).await,
        TaskCommand::List {
            pending: true,
            opts,
            ..
        } => list_pending(&opts).await,
        TaskCommand::List {
            spiffe_id,
            audience,
            opts,
            ..
        } => list(spiffe_id, audience, &opts).await,
        TaskCommand::Approve { id, reason, opts } => decide(id, reason, true, &opts).await,
        TaskCommand::Deny { id, reason, opts } => decide(id, reason, false, &opts).await,
        TaskCommand::Show { id, opts } => show(id, &opts).await,
        TaskCommand::End { id, opts } => end(id, &opts).await,
        TaskCommand::Validate {
            token,
            audience,
            operation,
            opts,
        } => validate(token, audience, operation, &opts).await,
        TaskCommand::Revoke { id, reason, opts } => revoke(id, reason, &opts).await,
    }
}

/// A task service client on the agent's socket.
async fn tasks_client(
    opts: &SocketOpts,
) -> anyhow::Result<TasksClient<InterceptedService<Channel, SecurityHeader>>> {
    let path = opts.path()?;
    let channel = lanyard_workload::connect_channel(&path)
        .await
        .with_context(|| format!("cannot connect to the agent at {}", path.display()))?;
    Ok(TasksClient::with_interceptor(channel, SecurityHeader))
}

fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("task refused ({:?}): {}", status.code(), status.message())
}

async fn validate(
    token: String,
    audience: String,
    operation: String,
    opts: &SocketOpts,
) -> anyhow::Result<()> {
    let valid = tasks_client(opts)
        .await?
        .validate_task_token(pb::ValidateTaskTokenRequest {
            token,
            audience,
            operation,
        })
        .await
        .map_err(refused)?
        .into_inner();
    if opts.output == OutputFormat::Json {
        return print_json(&valid);
    }
    outln!(
        "valid: task {} of {} (operations {})",
        valid.task_id,
        valid.spiffe_id,
        valid.operations.join(", ")
    );
    if !valid.on_behalf_of.is_empty() {
        let by = if valid.on_behalf_of_verified {
            format!("verified by {}", valid.on_behalf_of_issuer)
        } else {
            "unverified".to_owned()
        };
        outln!("for {} ({by})", valid.on_behalf_of);
    }
    Ok(())
}

/// A file holding one token or name, without the line end an editor adds.
fn read_trimmed(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

async fn end(id: String, opts: &SocketOpts) -> anyhow::Result<()> {
    let task = tasks_client(opts)
        .await?
        .end_task(pb::EndTaskRequest { task_id: id })
        .await
        .map_err(refused)?
        .into_inner();
    print_ended(&task, opts.output)
}

async fn revoke(id: String, reason: String, opts: &AdminOpts) -> anyhow::Result<()> {
    let task = client(opts)
        .await?
        .revoke_task(admin_pb::RevokeTaskRequest {
            task_id: id,
            reason,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    print_ended(&task, opts.output)
}

fn print_ended(task: &pb::Task, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return print_json(task);
    }
    outln!("Task {} ended at {}", task.id, unix_time(task.ended_at));
    Ok(())
}

async fn begin(args: BeginArgs, opts: &SocketOpts) -> anyhow::Result<()> {
    let parent_token = match (args.parent_token, &args.parent_token_file) {
        (Some(token), _) => token,
        (None, Some(path)) => read_trimmed(path)?,
        (None, None) => String::new(),
    };
    let on_behalf_of = match &args.on_behalf_of_file {
        Some(path) => read_trimmed(path)?,
        None => args.on_behalf_of,
    };
    let mut tasks = tasks_client(opts).await?;
    let request = pb::BeginTaskRequest {
        parent_token,
        audience: args.audience,
        operations: args.operations,
        ttl_seconds: args
            .ttl
            .map_or(0, |d| i64::try_from(d.get().as_secs()).unwrap_or(i64::MAX)),
        spiffe_id: args.spiffe_id.map(|id| id.to_string()).unwrap_or_default(),
        purpose: args.purpose,
        on_behalf_of,
    };
    let mut response = tasks
        .begin_task(request)
        .await
        .map_err(refused)?
        .into_inner();
    if !response.approval_id.is_empty() {
        let id = response.approval_id.clone();
        eprintln!(
            "waiting for approval {id} (an administrator runs: lanyard task approve --id {id})"
        );
        let until = std::time::Instant::now() + args.approval_wait.get();
        response = loop {
            let wait = until
                .saturating_duration_since(std::time::Instant::now())
                .as_secs()
                .clamp(1, 30);
            match tasks
                .await_approval(pb::AwaitApprovalRequest {
                    approval_id: id.clone(),
                    wait_seconds: u32::try_from(wait).unwrap_or(30),
                })
                .await
            {
                Ok(granted) => break granted.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::DeadlineExceeded
                        && std::time::Instant::now() < until => {}
                Err(status) => return Err(refused(status)),
            }
        };
    }
    if opts.output == OutputFormat::Json {
        return print_json(&response);
    }
    let task = response.task.unwrap_or_default();
    outln!("Task:       {}", task.id);
    outln!("SPIFFE ID:  {}", task.spiffe_id);
    outln!("Audience:   {}", task.audience);
    outln!("Operations: {}", task.operations.join(", "));
    outln!("Expires:    {}", unix_time(task.expires_at));
    outln!("Policies:   {}", task.policy_ids.join(", "));
    outln!("Token:      {}", response.token);
    Ok(())
}

async fn list(
    spiffe_id: Option<SpiffeId>,
    audience: Option<String>,
    opts: &AdminOpts,
) -> anyhow::Result<()> {
    let mut admin = client(opts).await?;
    let mut tasks = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_tasks(admin_pb::ListTasksRequest {
                spiffe_id: spiffe_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                audience: audience.clone().unwrap_or_default(),
                page_token,
                page_size: 0,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        tasks.extend(page.tasks);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if opts.output == OutputFormat::Json {
        return print_json(&serde_json::json!({ "tasks": tasks }));
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.spiffe_id.clone(),
                t.audience.clone(),
                t.operations.join(","),
                unix_time(t.expires_at),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &["ID", "SPIFFE ID", "AUDIENCE", "OPERATIONS", "EXPIRES"],
            &rows
        )
    );
    Ok(())
}

async fn list_pending(opts: &AdminOpts) -> anyhow::Result<()> {
    let pending = client(opts)
        .await?
        .list_approvals(admin_pb::ListApprovalsRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if opts.output == OutputFormat::Json {
        return print_json(&pending);
    }
    let rows: Vec<Vec<String>> = pending
        .approvals
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.spiffe_id.clone(),
                a.audience.clone(),
                a.operations.join(","),
                a.policy_ids.join(","),
                unix_time(a.expires_at),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "APPROVAL",
                "SPIFFE ID",
                "AUDIENCE",
                "OPERATIONS",
                "POLICIES",
                "EXPIRES"
            ],
            &rows
        )
    );
    Ok(())
}

async fn decide(id: String, reason: String, approve: bool, opts: &AdminOpts) -> anyhow::Result<()> {
    let request = admin_pb::DecideApprovalRequest {
        approval_id: id,
        reason,
    };
    let mut admin = client(opts).await?;
    let approval = if approve {
        admin.approve_task(request).await
    } else {
        admin.deny_task(request).await
    }
    .map_err(rpc_error)?
    .into_inner();
    if opts.output == OutputFormat::Json {
        return print_json(&approval);
    }
    outln!("approval {} is {}", approval.id, approval.state);
    Ok(())
}

async fn show(id: String, opts: &AdminOpts) -> anyhow::Result<()> {
    let task = client(opts)
        .await?
        .get_task(admin_pb::GetTaskRequest { task_id: id })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if opts.output == OutputFormat::Json {
        return print_json(&task);
    }
    outln!("Task:       {}", task.id);
    outln!("SPIFFE ID:  {}", task.spiffe_id);
    outln!("Audience:   {}", task.audience);
    outln!("Operations: {}", task.operations.join(", "));
    outln!("Purpose:    {}", task.purpose);
    outln!("For:        {}", task.on_behalf_of);
    outln!("Policies:   {}", task.policy_ids.join(", "));
    outln!("Token id:   {}", task.token_id);
    outln!("Issued:     {}", unix_time(task.issued_at));
    outln!("Expires:    {}", unix_time(task.expires_at));
    if task.ended_at > 0 {
        outln!("Ended:      {}", unix_time(task.ended_at));
    }
    Ok(())
}
