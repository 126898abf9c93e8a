//! Delegation that only narrows, against a real server and agent: a task begun with a parent
//! task's token gets the chain in its token (the `lanyard` claim and RFC 8693 `act`), and every
//! widening is refused and recorded: more operations, another tool, a later expiry, one hop too
//! many, a forged, expired or ended parent. Ending a task ends the tasks delegated from it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use lanyard_e2e::tasks::{TaskSetup, jwt_claims};
use lanyard_e2e::{CliOutput, wait_for};
use serde_json::Value;

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/deleg";
const WORKLOAD: &str = "spiffe://example.org/agents/orchestrator";
const PROMPT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
@id("tickets")
@on_behalf_of("unverified")
permit(
  principal,
  action in [Action::"read", Action::"list", Action::"write"],
  resource == Tool::"tickets"
);
@id("wiki")
permit(principal, action == Action::"read", resource == Tool::"wiki");
"#;

struct Setup(TaskSetup);

impl Setup {
    fn start() -> Self {
        Self(TaskSetup::start(POLICY, "", WORKLOAD, &[AGENT_ID]))
    }

    fn begin(&self, args: &[&str]) -> CliOutput {
        let mut all = vec!["task", "begin", "--output", "json"];
        all.extend_from_slice(args);
        self.0.agent().cli(&all)
    }

    /// A granted task: (the task, its token).
    fn granted(&self, args: &[&str]) -> (Value, String) {
        let out = self.begin(args).json();
        (
            out["task"].clone(),
            out["token"].as_str().unwrap().to_owned(),
        )
    }

    /// The refusal of a delegation: its message, checked to be PermissionDenied.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.begin(args);
        assert!(!out.success, "granted: {}", out.stdout);
        assert!(out.stderr.contains("PermissionDenied"), "{}", out.stderr);
        out.stderr
    }
}

#[test]
fn a_delegated_task_narrows_its_parent_and_carries_the_chain() {
    let setup = Setup::start();
    let (parent, parent_token) = setup.granted(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--op",
        "list",
        "--ttl",
        "5m",
        "--on-behalf-of",
        "user:alice",
    ]);
    let (child, child_token) = setup.granted(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--parent-token",
        &parent_token,
    ]);
    assert_eq!(child["parent_id"], parent["id"]);
    assert_eq!(child["depth"], 1);
    assert_eq!(
        child["on_behalf_of"], "user:alice",
        "inherited from the root"
    );
    assert!(child["expires_at"].as_i64() <= parent["expires_at"].as_i64());

    let c = jwt_claims(&child_token);
    assert_eq!(c["lanyard"]["parent"], parent["id"]);
    assert_eq!(c["lanyard"]["depth"], 1);
    let alice = serde_json::json!({ "sub": "user:alice", "verified": false });
    assert_eq!(c["lanyard"]["obo"], alice);
    assert_eq!(
        c["lanyard"]["chain"],
        serde_json::json!([{ "sub": WORKLOAD, "txn": parent["id"], "ops": ["read", "list"], "obo": alice }])
    );
    assert_eq!(c["act"], serde_json::json!({ "sub": WORKLOAD }));

    // A grandchild: the chain grows root first, `act` nests with the latest delegator outermost.
    let (_, grandchild_token) = setup.granted(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--parent-token",
        &child_token,
    ]);
    let g = jwt_claims(&grandchild_token);
    assert_eq!(g["lanyard"]["depth"], 2);
    let chain = g["lanyard"]["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0]["txn"], parent["id"]);
    assert_eq!(chain[1]["txn"], child["id"]);
    assert_eq!(
        g["act"],
        serde_json::json!({ "sub": WORKLOAD, "act": { "sub": WORKLOAD } })
    );
    // The token is still a JWT-SVID every agent accepts.
    assert!(
        setup
            .0
            .agent()
            .cli(&[
                "jwt",
                "validate",
                "--audience",
                "tickets",
                "--token",
                &grandchild_token
            ])
            .success
    );
}

#[test]
fn every_widening_is_refused_and_recorded() {
    let setup = Setup::start();
    let (parent, parent_token) =
        setup.granted(&["--audience", "tickets", "--op", "read", "--ttl", "2m"]);
    let with_parent = |extra: &[&str]| {
        let mut args = vec!["--parent-token", parent_token.as_str()];
        args.extend_from_slice(extra);
        setup.refused(&args)
    };
    let more_ops = with_parent(&["--audience", "tickets", "--op", "read", "--op", "write"]);
    assert!(
        more_ops.contains("operation \"write\" is not one of the parent's"),
        "{more_ops}"
    );
    let other_tool = with_parent(&["--audience", "wiki", "--op", "read"]);
    assert!(
        other_tool.contains("tool \"wiki\" is not the parent's"),
        "{other_tool}"
    );
    let later = with_parent(&["--audience", "tickets", "--op", "read", "--ttl", "10m"]);
    assert!(later.contains("expire after the parent"), "{later}");
    let other_human = with_parent(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--on-behalf-of",
        "user:mallory",
    ]);
    assert!(
        other_human.contains("on_behalf_of differs"),
        "{other_human}"
    );

    // A forged parent: one character of the signature changed.
    let mut forged = parent_token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let message = setup.refused(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--parent-token",
        &forged,
    ]);
    assert!(message.contains("parent token is not valid"), "{message}");
    let message = setup.refused(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--parent-token",
        "not-a-jwt",
    ]);
    assert!(message.contains("not a task token"), "{message}");

    // Depth: root → 1 → 2 → 3 is the limit (3 by default); a fourth hop is refused.
    let mut token = parent_token.clone();
    for _ in 0..3 {
        token = setup
            .granted(&[
                "--audience",
                "tickets",
                "--op",
                "read",
                "--parent-token",
                &token,
            ])
            .1;
    }
    let message = setup.refused(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--parent-token",
        &token,
    ]);
    assert!(message.contains("4 hops deep"), "{message}");

    // Every refusal is in the audit log with its reason; no child task was stored for them.
    let records = setup
        .0
        .server
        .cli(&[
            "audit",
            "list",
            "--kind",
            "task.refused",
            "--output",
            "json",
        ])
        .json();
    let reasons: Vec<String> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["details"]["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    let tasks = setup
        .0
        .server
        .cli(&["task", "list", "--output", "json"])
        .json();
    let children = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["parent_id"] == parent["id"])
        .count();
    assert_eq!(children, 1, "only the first hop of the depth chain");
}

#[test]
fn an_expired_or_ended_parent_delegates_nothing_and_ending_it_ends_its_children() {
    let setup = Setup::start();
    // Expired: a one-second parent.
    let (_, short) = setup.granted(&["--audience", "tickets", "--op", "read", "--ttl", "1s"]);
    let message = wait_for("the parent to expire", PROMPT, || {
        let out = setup.begin(&[
            "--audience",
            "tickets",
            "--op",
            "read",
            "--parent-token",
            &short,
        ]);
        (!out.success).then_some(out.stderr)
    });
    assert!(
        message.contains("expired"),
        "an expired parent is refused as expired: {message}"
    );

    // Ended: the parent's end also ends the child, and neither delegates any more.
    let (parent, parent_token) = setup.granted(&["--audience", "tickets", "--op", "read"]);
    let (_, child_token) = setup.granted(&[
        "--audience",
        "tickets",
        "--op",
        "read",
        "--parent-token",
        &parent_token,
    ]);
    setup
        .0
        .agent()
        .cli(&["task", "end", "--id", parent["id"].as_str().unwrap()])
        .ok();
    wait_for("the child's token to be refused", PROMPT, || {
        let out = setup.0.agent().cli(&[
            "jwt",
            "validate",
            "--audience",
            "tickets",
            "--token",
            &child_token,
        ]);
        (!out.success && out.stderr.contains("revoked")).then_some(())
    });
    for token in [&parent_token, &child_token] {
        let message = setup.refused(&[
            "--audience",
            "tickets",
            "--op",
            "read",
            "--parent-token",
            token,
        ]);
        assert!(message.contains("has ended"), "{message}");
    }
    let ended = setup
        .0
        .server
        .cli(&["audit", "list", "--kind", "task.ended", "--output", "json"])
        .json();
    assert_eq!(ended["records"].as_array().unwrap().len(), 2, "{ended}");
}
