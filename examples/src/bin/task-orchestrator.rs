//! `task-orchestrator`: an AI agent's whole task, with lanyard task credentials.
//!
//! 1. It begins a task on behalf of a user: tool `tickets`, operations `read` and `list`.
//! 2. It calls the tool with its token (`GET /tickets`: allowed).
//! 3. It delegates a narrower sub-task to a second agent process (this program again, as
//!    `helper`): the helper begins a child task with the parent's token (`read` only), calls the
//!    tool (allowed), tries to write (refused: not granted), and hands back its token.
//! 4. It ends the task. The tool now refuses both tokens: ending a task revokes it and every task
//!    delegated from it, at every agent.
//!
//! ```sh
//! task-orchestrator --tool 127.0.0.1:8600 --socket .lanyard/agent.sock --on-behalf-of user:alice
//! ```
//! Each step prints one line; the exit status is 0 only if every step went as described.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use lanyard_examples::tasks::{call_tool, tasks_client};
use lanyard_proto::task::{BeginTaskRequest, EndTaskRequest};

#[derive(Debug, Parser)]
struct Args {
    /// The tool service's address.
    #[arg(long)]
    tool: SocketAddr,
    /// The agent's Workload API socket.
    #[arg(long)]
    socket: PathBuf,
    /// Who the task is for.
    #[arg(long, default_value = "user:alice")]
    on_behalf_of: String,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The second agent: begins a sub-task from a parent token read on stdin, uses it, and prints
    /// its own token as the last line.
    Helper,
}

async fn begin(
    socket: &std::path::Path,
    operations: &[&str],
    on_behalf_of: &str,
    parent_token: &str,
) -> anyhow::Result<(String, String)> {
    let response = tasks_client(socket)
        .await?
        .begin_task(BeginTaskRequest {
            audience: "tickets".to_owned(),
            operations: operations.iter().map(|s| (*s).to_owned()).collect(),
            ttl_seconds: 0,
            spiffe_id: String::new(),
            purpose: "triage the ticket queue".to_owned(),
            on_behalf_of: on_behalf_of.to_owned(),
            parent_token: parent_token.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("task refused: {}", s.message()))?
        .into_inner();
    let task = response.task.context("no task in the answer")?;
    Ok((task.id, response.token))
}

async fn helper(args: &Args) -> anyhow::Result<()> {
    let mut parent_token = String::new();
    std::io::stdin().read_line(&mut parent_token)?;
    let (task_id, token) = begin(&args.socket, &["read"], "", parent_token.trim()).await?;
    println!("helper: began sub-task {task_id} (read only)");
    let (status, body) = call_tool(args.tool, "GET", &token).await?;
    ensure!(status == 200, "helper read refused: {status} {body}");
    println!("helper: GET /tickets -> {status} {body}");
    let (status, body) = call_tool(args.tool, "POST", &token).await?;
    ensure!(
        status == 403,
        "helper write was not refused: {status} {body}"
    );
    println!("helper: POST /tickets -> {status} {body}");
    println!("{token}");
    Ok(())
}

async fn orchestrate(args: &Args) -> anyhow::Result<()> {
    let (task_id, token) = begin(&args.socket, &["read", "list"], &args.on_behalf_of, "").await?;
    println!(
        "orchestrator: began task {task_id} for {}",
        args.on_behalf_of
    );
    let (status, body) = call_tool(args.tool, "GET", &token).await?;
    ensure!(status == 200, "read refused: {status} {body}");
    println!("orchestrator: GET /tickets -> {status} {body}");

    // The helper: a second process with its own connection to its agent.
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--tool")
        .arg(args.tool.to_string())
        .arg("--socket")
        .arg(&args.socket)
        .arg("helper")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().context("helper stdin")?;
        stdin.write_all(format!("{token}\n").as_bytes()).await?;
    }
    let output = child.wait_with_output().await?;
    let printed = String::from_utf8_lossy(&output.stdout);
    let mut lines: Vec<&str> = printed.lines().collect();
    ensure!(output.status.success(), "the helper failed:\n{printed}");
    let child_token = lines
        .pop()
        .context("the helper printed no token")?
        .to_owned();
    for line in lines {
        println!("{line}");
    }

    tasks_client(&args.socket)
        .await?
        .end_task(EndTaskRequest {
            task_id: task_id.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("cannot end the task: {}", s.message()))?;
    println!("orchestrator: ended task {task_id}");
    for (who, token) in [("orchestrator", &token), ("helper", &child_token)] {
        // Revocation reaches the tool's agent within milliseconds; allow a moment.
        let mut last = (0, String::new());
        for _ in 0..50 {
            last = call_tool(args.tool, "GET", token).await?;
            if last.0 != 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if last.0 == 200 {
            bail!("the tool still accepts the {who}'s token after the task ended");
        }
        println!("after the end: {who}'s token -> {} {}", last.0, last.1);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.role {
        Some(Role::Helper) => helper(&args).await,
        None => orchestrate(&args).await,
    }
}
