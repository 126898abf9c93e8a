//! Revocation when a task ends: a real server and two real agents. A workload on agent A gets a
//! task token; agent B (any agent of the trust domain) validates it; the task ends (by its owner
//! through A, or by an administrator) and B refuses the token, long before it expires. An agent
//! that was down while a task ended refuses its token from its first answer after it comes back.
//! A service at agent B that validates tokens itself (bundles and the revocation feed from B, the
//! checks of lanyard-core) refuses them as B does.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::{Duration, SystemTime};

use lanyard_core::{RevocationList, verify_jwt_svid};
use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::tasks::{TaskSetup, jwt_claims};
use lanyard_e2e::{CliOutput, wait_for};
use lanyard_workload::{Updates, WorkloadClient};
use serde_json::Value;
use tokio::runtime::Runtime;

const AGENT_A: &str = "spiffe://example.org/lanyard/agent/a";
const AGENT_B: &str = "spiffe://example.org/lanyard/agent/b";
const WORKLOAD: &str = "spiffe://example.org/agents/summarizer";
/// The tool the tokens are for, running under agent B (this test process, in
/// [`a_service_validating_locally_refuses_an_ended_tasks_token_from_its_agents_feed`]).
const TOOL: &str = "spiffe://example.org/tools/tickets";
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

/// Registers [`TOOL`] for this uid under agent B and waits until B serves it: the service must
/// hold an identity to follow the feed, and B has then synced (the list came with the entries).
fn start_tool_at_b(setup: &Setup) {
    let uid = rustix::process::getuid().as_raw();
    setup
        .inner
        .server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            AGENT_B,
            "--spiffe-id",
            TOOL,
            "--selector",
            &format!("unix:uid:{uid}"),
        ])
        .ok();
    wait_for("agent B to serve the tool's identity", PROMPT, || {
        let out = setup.b().cli(&["x509", "fetch", "--output", "json"]);
        (out.success && out.json()["svids"][0]["spiffe_id"] == TOOL).then_some(())
    });
}

/// What a service validating locally does with a bearer token: the JWT-SVID checks with the
/// bundles from its agent, then revocation with the list from its agent's feed.
fn accepts(bundles: &lanyard_core::BundleSet, revoked: &RevocationList, token: &str) -> bool {
    let verified = verify_jwt_svid(token, "tickets", bundles, SystemTime::now())
        .unwrap_or_else(|e| panic!("the task token does not verify: {e}"));
    revoked.check(&verified).is_ok()
}

/// The next list from the feed that names `jti`: a list that does not is skipped (a change of
/// another task's), none within [`PROMPT`] fails the test.
async fn list_naming(feed: &mut Updates<RevocationList>, jti: &str) -> RevocationList {
    tokio::time::timeout(PROMPT, async {
        loop {
            let list = feed.next().await.unwrap();
            if list.contains(jti) {
                return list;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no list naming {jti} came within {PROMPT:?}"))
}

#[test]
fn a_service_validating_locally_refuses_an_ended_tasks_token_from_its_agents_feed() {
    let setup = Setup::start();
    start_tool_at_b(&setup);
    let rt = Runtime::new().unwrap();
    let (id, token) = setup.begin();
    let jti = jwt_claims(&token)["jti"].as_str().unwrap().to_owned();

    // The service (this process, the tool at agent B) follows B's keys and revocations.
    let (bundles, mut feed, revoked) = rt.block_on(async {
        let mut agent = WorkloadClient::connect(&setup.b().socket).await.unwrap();
        let bundles = agent.fetch_jwt_bundles().await.unwrap();
        let mut feed = agent.watch_revocations().await.unwrap();
        let revoked = tokio::time::timeout(PROMPT, feed.next())
            .await
            .expect("the first revocation list")
            .unwrap();
        (bundles, feed, revoked)
    });
    assert!(!revoked.contains(&jti), "{revoked:?}");
    assert!(accepts(&bundles, &revoked, &token), "accepted before");

    // The owner ends the task through agent A; B's feed brings the change.
    setup.a().cli(&["task", "end", "--id", &id]).ok();
    let revoked = rt.block_on(list_naming(&mut feed, &jti));
    assert!(!accepts(&bundles, &revoked, &token), "refused after");
    let refusal = revoked
        .check(&verify_jwt_svid(&token, "tickets", &bundles, SystemTime::now()).unwrap())
        .unwrap_err();
    assert_eq!(refusal.jti(), jti);
    // The entry lives as long as the token would have.
    let exp = jwt_claims(&token)["exp"].as_u64().unwrap();
    assert_eq!(
        revoked.expiry(&jti),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
    );
    // B's own ValidateJWTSVID agrees with the service.
    wait_revoked(
        setup.b(),
        &token,
        "agent B to refuse the ended task's token",
    );

    // Another task: still accepted; revoked by an administrator, it is refused too, and a
    // service connecting afterwards has it in its first list.
    let (other_id, other) = setup.begin();
    let other_jti = jwt_claims(&other)["jti"].as_str().unwrap().to_owned();
    assert!(accepts(&bundles, &revoked, &other));
    setup
        .inner
        .server
        .cli(&[
            "task",
            "revoke",
            "--id",
            &other_id,
            "--reason",
            "incident 43",
        ])
        .ok();
    let revoked = rt.block_on(list_naming(&mut feed, &other_jti));
    assert!(!accepts(&bundles, &revoked, &other));
    assert!(revoked.contains(&jti), "the whole list, every time");
    let first = rt.block_on(async {
        let mut agent = WorkloadClient::connect(&setup.b().socket).await.unwrap();
        let mut feed = agent.watch_revocations().await.unwrap();
        tokio::time::timeout(PROMPT, feed.next())
            .await
            .expect("the first revocation list")
            .unwrap()
    });
    assert!(
        first.contains(&jti) && first.contains(&other_jti),
        "{first:?}"
    );
    assert!(!accepts(&bundles, &first, &token));
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
