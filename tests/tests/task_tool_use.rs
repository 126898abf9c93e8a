//! Tools validating task tokens through their own agent (`ValidateTaskToken`), against a real
//! server and agent: the operation must be one the task was granted, the audience the tool's,
//! the task not ended; every call, allowed or not, reaches the audit log as tool use, also when
//! the server was down at the time (the agent keeps the records and sends them later).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::tasks::TaskSetup;
use lanyard_e2e::{CliOutput, Server, wait_for};
use serde_json::Value;

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/tools";
/// The workload that asks for tasks and, in this test, also plays the tool.
const WORKLOAD: &str = "spiffe://example.org/agents/worker";
const PROMPT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
@id("tickets")
permit(principal, action in [Action::"read", Action::"list"], resource == Tool::"tickets");
"#;

fn setup() -> TaskSetup {
    TaskSetup::start(POLICY, "", WORKLOAD, &[AGENT_ID])
}

fn begin(agent: &Agent) -> (String, String) {
    let out = agent
        .cli(&[
            "task",
            "begin",
            "--audience",
            "tickets",
            "--op",
            "read",
            "--output",
            "json",
        ])
        .json();
    (
        out["task"]["id"].as_str().unwrap().to_owned(),
        out["token"].as_str().unwrap().to_owned(),
    )
}

fn validate(agent: &Agent, token: &str, audience: &str, operation: &str) -> CliOutput {
    agent.cli(&[
        "task",
        "validate",
        "--token",
        token,
        "--audience",
        audience,
        "--op",
        operation,
        "--output",
        "json",
    ])
}

/// The tool-use records for `task_id`, once there are `n` of them.
fn tool_uses(server: &Server, task_id: &str, n: usize) -> Vec<Value> {
    wait_for("the tool-use records", PROMPT, || {
        let records = server
            .cli(&[
                "audit",
                "list",
                "--kind",
                "task.tool_use",
                "--task",
                task_id,
                "--output",
                "json",
            ])
            .json();
        let records = records["records"].as_array().unwrap().clone();
        (records.len() >= n).then_some(records)
    })
}

#[test]
fn a_tool_checks_the_operation_and_every_check_is_recorded() {
    let setup = setup();
    let (server, agent) = (&setup.server, setup.agent());
    let (task_id, token) = begin(agent);

    let allowed = validate(agent, &token, "tickets", "read").json();
    assert_eq!(allowed["task_id"], task_id.as_str());
    assert_eq!(allowed["spiffe_id"], WORKLOAD);
    assert_eq!(allowed["operations"], serde_json::json!(["read"]));

    let out = validate(agent, &token, "tickets", "delete");
    assert!(!out.success);
    assert!(
        out.stderr.contains("PermissionDenied")
            && out
                .stderr
                .contains("operation \"delete\" was not granted to this task"),
        "{}",
        out.stderr
    );
    let out = validate(agent, &token, "wiki", "read");
    assert!(
        !out.success && out.stderr.contains("InvalidArgument"),
        "{}",
        out.stderr
    );
    // A JWT-SVID that is not a task token.
    let plain = agent
        .cli(&["jwt", "fetch", "--audience", "tickets", "--output", "json"])
        .json();
    let plain = plain[0]["token"].as_str().unwrap();
    let out = validate(agent, plain, "tickets", "read");
    assert!(
        !out.success && out.stderr.contains("not a task token"),
        "{}",
        out.stderr
    );

    agent.cli(&["task", "end", "--id", &task_id]).ok();
    wait_for("the ended task's token to be refused", PROMPT, || {
        let out = validate(agent, &token, "tickets", "read");
        (!out.success && out.stderr.contains("revoked")).then_some(())
    });

    // Allowed read, refused delete, refused audience, refused after the end (at least one). The
    // plain JWT-SVID names no task: it is recorded under "unknown-task".
    let records = tool_uses(server, &task_id, 4);
    let summary: Vec<(bool, String)> = records
        .iter()
        .map(|r| {
            (
                r["details"]["allowed"].as_bool().unwrap(),
                r["details"]["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(summary[0], (true, "read".to_owned()), "{records:?}");
    assert_eq!(summary[1], (false, "delete".to_owned()), "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r["actor"] == WORKLOAD && r["subject"] == task_id.as_str()),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["details"]["reason"].as_str().unwrap().contains("revoked")),
        "{records:?}"
    );
}

#[test]
fn tool_use_while_the_server_is_down_is_recorded_when_it_is_back() {
    let mut setup = setup();
    let (task_id, token) = begin(setup.agent());
    assert!(validate(setup.agent(), &token, "tickets", "read").success);
    tool_uses(&setup.server, &task_id, 1);

    // The server goes away; the tool goes on checking the token at its agent.
    assert!(setup.server.terminate());
    let out = validate(setup.agent(), &token, "tickets", "read");
    assert!(out.success, "validation is local: {}", out.stderr);
    let out = validate(setup.agent(), &token, "tickets", "list");
    assert!(!out.success, "list was not granted");

    setup.server.restart();
    let records = tool_uses(&setup.server, &task_id, 3);
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[2]["details"]["operation"], "list");
    assert_eq!(records[2]["details"]["allowed"], false);
}
