//! Revocation when a task ends: a real server and two real agents. A workload on agent A gets a
//! task token; agent B (any agent of the trust domain) validates it; the task ends (by its owner
//! through A, or by an administrator) and B refuses the token, long before it expires. An agent
//! that was down while a task ended refuses its token from its first answer after it comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::tasks::TaskSetup;
use lanyard_e2e::{CliOutput, wait_for};
use serde_json::Value;

const AGENT_A: &str = "spiffe://example.org/lanyard/agent/a";
const AGENT_B: &str = "spiffe://example.org/lanyard/agent/b";
const WORKLOAD: &str = "spiffe://example.org/agents/summarizer";
/// How long anything that should happen at once may take.
const PROMPT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
@id("read-tickets")
permit(principal, action == Action::"read", resource == Tool::"tickets");
"#;

struct Setup {
    inner: TaskSetup,
}

impl Setup {
    fn start() -> Self {
        Self {
            inner: TaskSetup::start(POLICY, "", WORKLOAD, &[AGENT_A, AGENT_B]),
        }
    }

    fn a(&self) -> &Agent {
        &self.inner.agents[0]
    }

    fn b(&self) -> &Agent {
        &self.inner.agents[1]
    }

    /// A granted task: (task id, token).
    fn begin(&self) -> (String, String) {
        let out = self.a().cli(&[
            "task",
            "begin",
            "--audience",
            "tickets",
            "--op",
            "read",
            "--output",
            "json",
        ]);
        let granted: Value = out.json();
        (
            granted["task"]["id"].as_str().unwrap().to_owned(),
            granted["token"].as_str().unwrap().to_owned(),
        )
    }
}

/// `lanyard jwt validate` at `agent`.
fn validate(agent: &Agent, token: &str) -> CliOutput {
    agent.cli(&["jwt", "validate", "--audience", "tickets", "--token", token])
}

/// Waits until `agent` refuses `token` as revoked.
fn wait_revoked(agent: &Agent, token: &str, what: &str) {
    wait_for(what, PROMPT, || {
        let out = validate(agent, token);
        (!out.success && out.stderr.contains("revoked")).then_some(())
    });
}

#[test]
fn an_ended_task_is_refused_by_every_agent_and_recorded() {
    let setup = Setup::start();
    let (id, token) = setup.begin();
    wait_for("agent B to accept the token", PROMPT, || {
        validate(setup.b(), &token).success.then_some(())
    });
    assert!(validate(setup.a(), &token).success);

    // The owner ends it through its own agent.
    let ended = setup
        .a()
        .cli(&["task", "end", "--id", &id, "--output", "json"])
        .json();
    assert!(ended["ended_at"].as_i64().unwrap() > 0, "{ended}");
    wait_revoked(
        setup.b(),
        &token,
        "agent B to refuse the ended task's token",
    );
    wait_revoked(
        setup.a(),
        &token,
        "agent A to refuse the ended task's token",
    );
    // It is still within its lifetime: only the revocation refuses it.
    assert!(
        ended["expires_at"].as_i64().unwrap() > lanyard_e2e_now() + 60,
        "{ended}"
    );

    // Ending it again is not an error and records nothing more.
    let again = setup
        .a()
        .cli(&["task", "end", "--id", &id, "--output", "json"])
        .json();
    assert_eq!(again["ended_at"], ended["ended_at"]);
    let records = setup
        .inner
        .server
        .cli(&["audit", "list", "--kind", "task.ended", "--output", "json"])
        .json();
    let records = records["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["subject"], id.as_str());
    assert_eq!(records[0]["actor"], WORKLOAD);

    // An unknown task: NotFound, through the agent and for an administrator.
    let out = setup.a().cli(&["task", "end", "--id", "no-such-task"]);
    assert!(
        !out.success && out.err().contains("NotFound"),
        "{}",
        out.stderr
    );
    let out = setup
        .inner
        .server
        .cli(&["task", "revoke", "--id", "no-such-task"]);
    assert!(
        !out.success && out.err().contains("NotFound"),
        "{}",
        out.stderr
    );

    // An administrator revokes another task; both agents refuse it.
    let (id, token) = setup.begin();
    assert!(validate(setup.b(), &token).success);
    setup
        .inner
        .server
        .cli(&["task", "revoke", "--id", &id, "--reason", "incident 42"])
        .ok();
    wait_revoked(
        setup.b(),
        &token,
        "agent B to refuse the revoked task's token",
    );
    let records = setup
        .inner
        .server
        .cli(&[
            "audit",
            "list",
            "--kind",
            "task.revoked",
            "--output",
            "json",
        ])
        .json();
    let record = &records["records"][0];
    assert_eq!(record["subject"], id.as_str());
    assert_eq!(record["details"]["reason"], "incident 42");
    assert!(
        record["actor"].as_str().unwrap().starts_with("admin:"),
        "{record}"
    );

    // A task that was not ended is still accepted.
    let (_, live) = setup.begin();
    assert!(validate(setup.b(), &live).success);
}

#[test]
fn an_agent_that_was_down_refuses_a_token_revoked_meanwhile_from_its_first_answer() {
    let mut setup = Setup::start();
    let (id, token) = setup.begin();
    wait_for("agent B to accept the token", PROMPT, || {
        validate(setup.b(), &token).success.then_some(())
    });
    setup.inner.agents[1].kill();
    setup
        .inner
        .server
        .cli(&[
            "task",
            "revoke",
            "--id",
            &id,
            "--reason",
            "while B was down",
        ])
        .ok();
    setup.inner.agents[1].restart_without_token();
    // From the moment it answers at all, it never calls the token valid: before its first sync it
    // has no bundle to validate with; the sync that brings the bundle brings the revocations.
    let verdict = wait_for("agent B to give a verdict on the token", PROMPT, || {
        let out = validate(setup.b(), &token);
        assert!(
            !out.success,
            "agent B accepted a revoked token after restarting"
        );
        (out.stderr.contains("revoked")).then_some(out.stderr)
    });
    assert!(verdict.contains("revoked"), "{verdict}");
}

fn lanyard_e2e_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}
