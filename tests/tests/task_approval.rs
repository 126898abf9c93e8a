//! Human approval, against a real server and agent: a grant that a policy annotated
//! `@approval("required")` allows waits (the `lanyard task begin` process blocks) until an
//! administrator approves it (then the token names the approval and approver), denies it (the
//! reason reaches the caller), or it times out. Every step is in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lanyard_e2e::tasks::{TaskSetup, jwt_claims};
use lanyard_e2e::{lanyard_bin, wait_for};
use serde_json::Value;

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/approvals";
const WORKLOAD: &str = "spiffe://example.org/agents/payer";
const PROMPT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
@id("pay-needs-a-human")
@approval("required")
permit(principal, action == Action::"pay", resource == Tool::"payroll");

@id("read-payroll")
permit(principal, action == Action::"read", resource == Tool::"payroll");

// A task begun directly posts at once; one delegated from it waits for a human.
@id("ledger-direct")
permit(principal, action == Action::"post", resource == Tool::"ledger")
when { context.delegation_depth == 0 };
@id("ledger-delegated")
@approval("required")
permit(principal, action == Action::"post", resource == Tool::"ledger")
when { context.delegation_depth > 0 };
"#;

struct Setup(TaskSetup);

impl Setup {
    /// A server whose grants wait `approval_timeout` for a human.
    fn start(approval_timeout: &str) -> Self {
        let config = format!("approval_timeout = \"{approval_timeout}\"\n");
        Self(TaskSetup::start(POLICY, &config, WORKLOAD, &[AGENT_ID]))
    }

    /// `lanyard task begin` for `pay`, started in the background: it waits for the decision.
    fn begin_pay(&self) -> Child {
        self.begin_waiting(&["--audience", "payroll", "--op", "pay"])
    }

    /// `lanyard task begin ARGS`, started in the background: it waits for the decision.
    fn begin_waiting(&self, args: &[&str]) -> Child {
        Command::new(lanyard_bin())
            .args(["task", "begin"])
            .args(args)
            .args(["--approval-wait", "60s", "--output", "json", "--socket"])
            .arg(self.0.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The one pending approval, once it is there.
    fn pending(&self) -> Value {
        wait_for("a pending approval", PROMPT, || {
            let list = self
                .0
                .server
                .cli(&["task", "list", "--pending", "--output", "json"])
                .json();
            let approvals = list["approvals"].as_array().cloned().unwrap_or_default();
            (approvals.len() == 1).then(|| approvals[0].clone())
        })
    }

    fn kinds(&self) -> Vec<String> {
        let records = self
            .0
            .server
            .cli(&["audit", "list", "--output", "json"])
            .json();
        records["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_owned())
            .filter(|k| k.starts_with("task."))
            .collect()
    }
}

#[test]
fn an_approved_grant_is_issued_to_the_waiting_caller_once() {
    let setup = Setup::start("10m");
    // A grant no policy asks approval for is immediate.
    let read = setup.0.agent().cli(&[
        "task",
        "begin",
        "--audience",
        "payroll",
        "--op",
        "read",
        "--output",
        "json",
    ]);
    assert!(read.success, "{}", read.stderr);

    let waiting = setup.begin_pay();
    let approval = setup.pending();
    assert_eq!(approval["spiffe_id"], WORKLOAD);
    assert_eq!(approval["operations"], serde_json::json!(["pay"]));
    assert_eq!(
        approval["policy_ids"],
        serde_json::json!(["pay-needs-a-human"])
    );
    // No task exists for it yet: nothing usable was issued.
    let tasks = setup
        .0
        .server
        .cli(&["task", "list", "--output", "json"])
        .json();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1, "only the read");

    let id = approval["id"].as_str().unwrap();
    setup
        .0
        .server
        .cli(&["task", "approve", "--id", id, "--reason", "quarter end"])
        .ok();
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let granted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = granted["token"].as_str().unwrap();
    let c = jwt_claims(token);
    assert_eq!(c["lanyard"]["ops"], serde_json::json!(["pay"]));
    assert_eq!(c["lanyard"]["approval"]["id"], id);
    assert!(
        c["lanyard"]["approval"]["by"]
            .as_str()
            .unwrap()
            .starts_with("admin:uid="),
        "{c}"
    );
    // Deciding again is refused: it is not pending any more.
    let again = setup
        .0
        .server
        .cli(&["task", "deny", "--id", id, "--reason", "x"]);
    assert!(
        !again.success && again.stderr.contains("not pending"),
        "{}",
        again.stderr
    );
    assert_eq!(
        setup.kinds(),
        [
            "task.granted",
            "task.pending",
            "task.approved",
            "task.approval_collected",
            "task.granted"
        ]
    );
}

#[test]
fn a_denied_grant_tells_the_caller_why() {
    let setup = Setup::start("10m");
    let waiting = setup.begin_pay();
    let approval = setup.pending();
    setup
        .0
        .server
        .cli(&[
            "task",
            "deny",
            "--id",
            approval["id"].as_str().unwrap(),
            "--reason",
            "not this quarter",
        ])
        .ok();
    let out = waiting.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("not this quarter"),
        "{stderr}"
    );
    assert_eq!(setup.kinds(), ["task.pending", "task.approval_denied"]);
    let tasks = setup
        .0
        .server
        .cli(&["task", "list", "--output", "json"])
        .json();
    assert!(tasks["tasks"].as_array().unwrap().is_empty());
}

#[test]
fn an_undecided_grant_times_out_and_is_refused() {
    let setup = Setup::start("1s");
    let waiting = setup.begin_pay();
    let out = waiting.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("timed out"), "{stderr}");
    assert_eq!(setup.kinds(), ["task.pending", "task.approval_timed_out"]);
}

/// A ledger task begun directly (granted at once): (its id, its token).
fn ledger_parent(setup: &Setup) -> (String, String) {
    let out = setup
        .0
        .agent()
        .cli(&[
            "task",
            "begin",
            "--audience",
            "ledger",
            "--op",
            "post",
            "--output",
            "json",
        ])
        .json();
    (
        out["task"]["id"].as_str().unwrap().to_owned(),
        out["token"].as_str().unwrap().to_owned(),
    )
}

/// A ledger task delegated from `parent_token`, begun in the background: it waits for approval.
fn begin_ledger_child(setup: &Setup, parent_token: &str) -> Child {
    setup.begin_waiting(&[
        "--audience",
        "ledger",
        "--op",
        "post",
        "--parent-token",
        parent_token,
    ])
}

#[test]
fn a_delegated_grant_waits_for_approval_and_is_issued_under_its_parent() {
    let setup = Setup::start("10m");
    let (parent_id, parent_token) = ledger_parent(&setup);
    let waiting = begin_ledger_child(&setup, &parent_token);
    let approval = setup.pending();
    assert_eq!(
        approval["policy_ids"],
        serde_json::json!(["ledger-delegated"])
    );
    let id = approval["id"].as_str().unwrap();
    setup.0.server.cli(&["task", "approve", "--id", id]).ok();
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let granted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(granted["task"]["parent_id"], parent_id.as_str());
    assert_eq!(granted["task"]["depth"], 1);
    let c = jwt_claims(granted["token"].as_str().unwrap());
    assert_eq!(c["lanyard"]["parent"], parent_id.as_str());
    assert_eq!(c["lanyard"]["approval"]["id"], id);
    assert_eq!(c["lanyard"]["chain"][0]["txn"], parent_id.as_str());
    assert_eq!(c["act"], serde_json::json!({ "sub": WORKLOAD }));
    // The child is the parent's: ending the parent ends it too.
    setup
        .0
        .agent()
        .cli(&["task", "end", "--id", &parent_id])
        .ok();
    let child = setup
        .0
        .server
        .cli(&[
            "task",
            "show",
            "--id",
            granted["task"]["id"].as_str().unwrap(),
            "--output",
            "json",
        ])
        .json();
    assert_ne!(child["ended_at"], 0, "{child}");
}

#[test]
fn an_approved_delegation_whose_parent_ended_meanwhile_is_refused() {
    let setup = Setup::start("10m");
    let (parent_id, parent_token) = ledger_parent(&setup);
    let waiting = begin_ledger_child(&setup, &parent_token);
    let approval = setup.pending();
    setup
        .0
        .agent()
        .cli(&["task", "end", "--id", &parent_id])
        .ok();
    setup
        .0
        .server
        .cli(&["task", "approve", "--id", approval["id"].as_str().unwrap()])
        .ok();
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("the parent task has ended"), "{stderr}");
    let tasks = setup
        .0
        .server
        .cli(&["task", "list", "--output", "json"])
        .json();
    assert_eq!(
        tasks["tasks"].as_array().unwrap().len(),
        1,
        "only the parent"
    );
}
