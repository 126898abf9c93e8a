//! Task credentials end to end: a real `lanyard server run` with Cedar policies in a policy
//! directory, a real `lanyard agent run`, and workloads asking through the agent's socket (the
//! `lanyard task begin` CLI, or a tonic `Tasks` client). Tokens are checked by decoding them here
//! and with the `spiffe` crate; decisions through the CLI and the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lanyard_e2e::agent_process::Agent;
use lanyard_e2e::{CliOutput, Server, lanyard, lanyard_bin, wait_for};
use lanyard_proto::task::{self as pb, tasks_client::TasksClient};
use lanyard_workload::SecurityHeader;
use serde_json::{Value, json};
use spiffe::{JwtSvid, JwtSvidError, JwtVerificationErrorKind, WorkloadApiClient};
use tokio::runtime::Runtime;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const AGENT_ID: &str = "spiffe://example.org/lanyard/agent/tasks";
/// The workload of most tests: every process of this uid.
const WORKLOAD: &str = "spiffe://example.org/tasks/summarizer";
/// How long anything that should happen at once may take.
const PROMPT: Duration = Duration::from_secs(30);

/// Reads on tool A for the workload (at most 5 minutes); nothing at all on tool B.
const P1: &str = r#"
@id("read-a")
@max_ttl("5m")
@on_behalf_of("unverified")
permit(
  principal == Workload::"spiffe://example.org/tasks/summarizer",
  action == Action::"read",
  resource == Tool::"A"
);

@id("no-b")
forbid(principal, action, resource == Tool::"B");
"#;

/// Writes on tool A.
const P2: &str = r#"
@id("write-a")
permit(principal, action == Action::"write", resource == Tool::"A");
"#;

/// Writes and comments on tool A.
const P3: &str = r#"
@id("write-a")
permit(principal, action == Action::"write", resource == Tool::"A");

@id("comment-a")
permit(principal, action == Action::"comment", resource == Tool::"A");
"#;

/// A missing comma: Cedar refuses it at line 2.
const BAD: &str = "@id(\"bad\")\npermit(principal, action == Action::\"read\" resource);\n";

type Tasks = TasksClient<InterceptedService<Channel, SecurityHeader>>;

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// A temporary policy directory holding `files` (name, text).
fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn create_entry(server: &Server, spiffe_id: &str, selector: &str) {
    server
        .cli(&[
            "entry",
            "create",
            "--parent-id",
            AGENT_ID,
            "--spiffe-id",
            spiffe_id,
            "--selector",
            selector,
        ])
        .ok();
}

/// A server deciding with the policies in `dir` (none: no `--policy-dir`), and its agent.
#[derive(Debug)]
struct Setup {
    server: Server,
    agent: Agent,
    rt: Runtime,
}

impl Setup {
    /// Starts the server and, after the entries `(SPIFFE ID, selector)` are created, the agent.
    fn start(dir: Option<&Path>, entries: &[(&str, &str)]) -> Self {
        let server = match dir {
            Some(dir) => Server::start_with(&["--policy-dir", dir.to_str().unwrap()]),
            None => Server::start(),
        };
        for (id, selector) in entries {
            create_entry(&server, id, selector);
        }
        let agent = Agent::start(&server, AGENT_ID);
        Self {
            server,
            agent,
            rt: Runtime::new().unwrap(),
        }
    }

    /// [`start`](Self::start) with [`WORKLOAD`] for this uid, waiting until the agent serves it.
    fn with_workload(dir: Option<&Path>) -> Self {
        let setup = Self::start(dir, &[(WORKLOAD, &format!("unix:uid:{}", uid()))]);
        setup.wait_for_cli_identity(WORKLOAD);
        setup
    }

    /// Waits until a CLI process is served `id` by the agent.
    fn wait_for_cli_identity(&self, id: &str) {
        wait_for("the workload's identity at the agent", PROMPT, || {
            let out = self.agent.cli(&["x509", "fetch", "--output", "json"]);
            (out.success && out.json()["svids"][0]["spiffe_id"] == id).then_some(())
        });
    }

    /// `lanyard task begin <args>` against the agent.
    fn begin(&self, args: &[&str]) -> CliOutput {
        let mut all = vec!["task", "begin"];
        all.extend_from_slice(args);
        self.agent.cli(&all)
    }

    /// A granted task, as `task begin --output json` prints it.
    fn granted(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--output", "json"]);
        self.begin(&all).json()
    }

    /// A Tasks client on the agent's socket, with the security header or without.
    fn tasks(&self) -> Tasks {
        self.rt.block_on(async {
            let channel = lanyard_workload::connect_channel(&self.agent.socket)
                .await
                .unwrap();
            TasksClient::with_interceptor(channel, SecurityHeader)
        })
    }

    fn tasks_without_header(&self) -> TasksClient<Channel> {
        self.rt.block_on(async {
            TasksClient::new(
                lanyard_workload::connect_channel(&self.agent.socket)
                    .await
                    .unwrap(),
            )
        })
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.agent.socket.display())
    }
}

/// `audit list --output json <args>`'s records.
fn audit(server: &Server, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "list", "--output", "json"];
    all.extend_from_slice(args);
    server.cli(&all).json()["records"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every audit record except SVID issuance, which the agent causes in the background.
fn decisions_and_changes(server: &Server) -> Vec<Value> {
    audit(server, &[])
        .into_iter()
        .filter(|r| !r["kind"].as_str().unwrap().starts_with("svid."))
        .collect()
}

/// Every task, as `lanyard task list --output json` (admin) has them.
fn all_tasks(server: &Server) -> Vec<Value> {
    server.cli(&["task", "list", "--output", "json"]).json()["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

fn kinds(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect()
}

/// The payload of a JWT, decoded here (base64url without padding, then JSON).
fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact token: {token}");
    serde_json::from_slice(&base64url(parts[1])).unwrap()
}

fn base64url(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {text}"),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).unwrap());
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

#[test]
fn a_permitted_workload_gets_a_token_for_one_tool_and_its_operations() {
    let dir = policy_dir(&[("main.cedar", P1)]);
    let s = Setup::with_workload(Some(dir.path()));

    // 10 minutes asked; the permit allows 5.
    let out = s.granted(&[
        "--audience",
        "A",
        "--op",
        "read",
        "--ttl",
        "10m",
        "--purpose",
        "triage INC-42",
        "--on-behalf-of",
        "user:alice",
    ]);
    let task = &out["task"];
    let id = task["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{task}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{task}");
    assert_eq!(task["spiffe_id"], WORKLOAD);
    assert_eq!(task["audience"], "A");
    assert_eq!(task["operations"], json!(["read"]));
    assert_eq!(task["purpose"], "triage INC-42");
    assert_eq!(task["on_behalf_of"], "user:alice");
    assert_eq!(task["policy_ids"], json!(["read-a"]));
    assert_eq!(task["ended_at"], 0);

    let token = out["token"].as_str().unwrap();
    let c = claims(token);
    assert_eq!(c["sub"], WORKLOAD);
    assert_eq!(c["aud"], json!(["A"]));
    let (iat, exp) = (int(&c["iat"]), int(&c["exp"]));
    assert_eq!(exp - iat, 300, "min(asked 600, @max_ttl 300, 900): {c}");
    assert_eq!(int(&task["issued_at"]), iat);
    assert_eq!(int(&task["expires_at"]), exp);
    let jti = c["jti"].as_str().unwrap();
    assert!(!jti.is_empty());
    assert_eq!(task["token_id"], jti);
    assert_ne!(jti, id);
    assert_eq!(
        c["lanyard"],
        json!({"txn": id, "ops": ["read"], "purpose": "triage INC-42",
               "obo": {"sub": "user:alice", "verified": false}})
    );

    // No TTL asked: the longest allowed, still the policy's 5 minutes; no purpose, no `obo`: not
    // in the claim; a new task with a new token id.
    let out = s.granted(&["--audience", "A", "--op", "read"]);
    let c = claims(out["token"].as_str().unwrap());
    assert_eq!(int(&c["exp"]) - int(&c["iat"]), 300, "{c}");
    assert_eq!(
        c["lanyard"],
        json!({"txn": out["task"]["id"], "ops": ["read"]})
    );
    assert_ne!(out["task"]["id"], id);
    assert_ne!(c["jti"], jti);
}

#[test]
fn refusals_name_the_rule_and_every_decision_is_in_the_audit_log() {
    let dir = policy_dir(&[("main.cedar", P1)]);
    let s = Setup::with_workload(Some(dir.path()));
    let granted = s.granted(&["--audience", "A", "--op", "read"]);
    let task_id = granted["task"]["id"].as_str().unwrap();

    // Exactly the rule, nothing of the machinery.
    assert_eq!(
        s.begin(&["--audience", "A", "--op", "write"]).err(),
        r#"error: task refused (PermissionDenied): operation "write" on tool "A" is refused: no policy permits it"#
    );
    assert_eq!(
        s.begin(&["--audience", "B", "--op", "read"]).err(),
        r#"error: task refused (PermissionDenied): operation "read" on tool "B" is forbidden by policy "no-b""#
    );
    // Every operation must be allowed: read is, write is not.
    assert_eq!(
        s.begin(&["--audience", "A", "--op", "read", "--op", "write"])
            .err(),
        r#"error: task refused (PermissionDenied): operation "write" on tool "A" is refused: no policy permits it"#
    );
    assert_eq!(all_tasks(&s.server).len(), 1);

    let denied = audit(&s.server, &["--kind", "task.denied"]);
    assert_eq!(denied.len(), 3, "{denied:#?}");
    for record in &denied {
        assert_eq!(record["actor"], WORKLOAD, "{record}");
        assert_eq!(record["details"]["agent"], AGENT_ID, "{record}");
    }
    let write = &denied[0];
    assert_eq!(write["subject"], "A");
    assert_eq!(write["details"]["operations"], json!(["write"]));
    assert_eq!(
        write["details"]["decision"],
        json!([{"operation": "write", "outcome": "no policy permits it", "policy_ids": []}])
    );
    let b = &denied[1];
    assert_eq!(b["subject"], "B");
    assert_eq!(b["details"]["decision"][0]["operation"], "read");
    assert_eq!(b["details"]["decision"][0]["policy_ids"], json!(["no-b"]));
    assert_eq!(b["details"]["policy_ids"], json!(["no-b"]));
    assert!(
        b["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("\"no-b\""),
        "{b}"
    );
    let both = &denied[2]["details"]["decision"];
    assert_eq!(both[0]["operation"], "read");
    assert_eq!(both[0]["policy_ids"], json!(["read-a"]));
    assert_eq!(both[1]["operation"], "write");
    assert_eq!(both[1]["policy_ids"], json!([]));

    let grants = audit(&s.server, &["--kind", "task.granted"]);
    assert_eq!(grants.len(), 1, "{grants:#?}");
    let grant = &grants[0];
    assert_eq!(grant["actor"], WORKLOAD);
    assert_eq!(grant["subject"], task_id);
    assert_eq!(grant["details"]["policy_ids"], json!(["read-a"]));
    assert_eq!(grant["details"]["operations"], json!(["read"]));
    assert_eq!(grant["details"]["audience"], "A");
    assert_eq!(grant["details"]["jti"], granted["task"]["token_id"]);
    // The task's own records.
    let of_task = audit(&s.server, &["--task", task_id]);
    assert_eq!(kinds(&of_task), ["task.granted"]);
}

#[test]
fn the_token_is_a_jwt_svid_that_independent_validators_accept_until_it_expires() {
    let dir = policy_dir(&[("main.cedar", P1)]);
    let s = Setup::with_workload(Some(dir.path()));
    let out = s.granted(&["--audience", "A", "--op", "read", "--ttl", "5m"]);
    let token = out["token"].as_str().unwrap();

    // The spiffe crate, with the JWT bundles it fetched from the agent itself.
    let client =
        s.rt.block_on(WorkloadApiClient::connect_to(s.endpoint()))
            .unwrap();
    let bundles = s.rt.block_on(client.fetch_jwt_bundles()).unwrap();
    let svid = JwtSvid::parse_and_validate(token, &bundles, &["A"]).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WORKLOAD);
    assert_eq!(svid.audience(), ["A"]);
    let wrong = JwtSvid::parse_and_validate(token, &bundles, &["B"]).unwrap_err();
    assert!(
        matches!(&wrong, JwtSvidError::InvalidToken(e) if e.kind() == JwtVerificationErrorKind::AudienceMismatch),
        "{wrong:?}"
    );

    // The agent's ValidateJWTSVID.
    let validated = s
        .agent
        .cli(&[
            "jwt",
            "validate",
            "--audience",
            "A",
            "--token",
            token,
            "--output",
            "json",
        ])
        .json();
    assert_eq!(validated["spiffe_id"], WORKLOAD);
    assert_eq!(validated["claims"]["lanyard"]["txn"], out["task"]["id"]);
    s.agent
        .cli(&["jwt", "validate", "--audience", "B", "--token", token])
        .err();

    // A one-second task: refused once it is over.
    let short = s.granted(&["--audience", "A", "--op", "read", "--ttl", "1s"]);
    let short_token = short["token"].as_str().unwrap();
    let c = claims(short_token);
    assert_eq!(int(&c["exp"]) - int(&c["iat"]), 1, "{c}");
    let error = wait_for(
        "the spiffe crate to refuse the expired token",
        Duration::from_secs(10),
        || JwtSvid::parse_and_validate(short_token, &bundles, &["A"]).err(),
    );
    assert!(
        matches!(&error, JwtSvidError::InvalidToken(e) if e.kind() == JwtVerificationErrorKind::Expired),
        "{error:?}"
    );
    // The agent allows 30 s of clock skew past `exp` (lanyard_core::JWT_LEEWAY).
    let refusal = wait_for(
        "the agent to refuse the expired token",
        Duration::from_secs(45),
        || {
            let out = s
                .agent
                .cli(&["jwt", "validate", "--audience", "A", "--token", short_token]);
            (!out.success).then_some(out.stderr)
        },
    );
    assert!(refusal.contains("expired"), "{refusal}");
}

#[test]
fn admins_see_every_task_and_workloads_only_their_own() {
    const CLI: &str = "spiffe://example.org/tasks/cli";
    const TEST: &str = "spiffe://example.org/tasks/test";
    let dir = policy_dir(&[(
        "main.cedar",
        r#"@id("read-a") permit(principal, action == Action::"read", resource == Tool::"A");"#,
    )]);
    // Two workloads on one agent: the lanyard CLI and this test executable.
    let cli_path: PathBuf = lanyard_bin().canonicalize().unwrap();
    let test_path: PathBuf = std::env::current_exe().unwrap().canonicalize().unwrap();
    let s = Setup::start(
        Some(dir.path()),
        &[
            (CLI, &format!("unix:path:{}", cli_path.display())),
            (TEST, &format!("unix:path:{}", test_path.display())),
        ],
    );
    s.wait_for_cli_identity(CLI);
    let mut tasks = s.tasks();
    wait_for("this test's identity at the agent", PROMPT, || {
        s.rt.block_on(tasks.list_tasks(pb::ListTasksRequest::default()))
            .ok()
    });

    let theirs = s.granted(&["--audience", "A", "--op", "read", "--purpose", "cli"]);
    let their_id = theirs["task"]["id"].as_str().unwrap();
    assert_eq!(theirs["task"]["spiffe_id"], CLI);
    let mine =
        s.rt.block_on(tasks.begin_task(pb::BeginTaskRequest {
            audience: "A".into(),
            operations: vec!["read".into()],
            purpose: "test".into(),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    let mine = mine.task.unwrap();
    assert_eq!(mine.spiffe_id, TEST);

    // Admin: both.
    let listed = all_tasks(&s.server);
    let ids: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let mut expected = vec![their_id, mine.id.as_str()];
    expected.sort_unstable();
    let mut got = ids.clone();
    got.sort_unstable();
    assert_eq!(got, expected);
    let table = s.server.cli(&["task", "list"]);
    assert!(
        table.ok().contains(their_id) && table.ok().contains(&mine.id),
        "{}",
        table.stdout
    );
    let only_cli = s
        .server
        .cli(&["task", "list", "--spiffe-id", CLI, "--output", "json"])
        .json();
    assert_eq!(only_cli["tasks"], json!([theirs["task"]]));
    let shown = s
        .server
        .cli(&["task", "show", "--id", their_id, "--output", "json"])
        .json();
    assert_eq!(shown, theirs["task"]);
    let text = s.server.cli(&["task", "show", "--id", &mine.id]);
    for field in [mine.id.as_str(), TEST, "read", "test", "read-a"] {
        assert!(text.ok().contains(field), "{field} in:\n{}", text.stdout);
    }
    let unknown = s
        .server
        .cli(&["task", "show", "--id", "0123456789abcdef0123456789abcdef"]);
    assert!(unknown.err().contains("NotFound"), "{}", unknown.stderr);

    // The agent's socket: this workload's own task only; the other's is as unknown as a made-up
    // one.
    let own =
        s.rt.block_on(tasks.list_tasks(pb::ListTasksRequest::default()))
            .unwrap()
            .into_inner();
    assert_eq!(own.tasks, std::slice::from_ref(&mine));
    assert!(own.next_page_token.is_empty());
    let got =
        s.rt.block_on(tasks.get_task(pb::GetTaskRequest {
            task_id: mine.id.clone(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(got, mine);
    for id in [their_id, "0123456789abcdef0123456789abcdef"] {
        let status =
            s.rt.block_on(tasks.get_task(pb::GetTaskRequest {
                task_id: id.to_owned(),
            }))
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), format!("no task {id:?}"));
    }
}

#[test]
fn policies_reload_on_command_and_on_sighup_and_a_bad_set_changes_nothing() {
    let dir = policy_dir(&[("main.cedar", P1)]);
    let s = Setup::with_workload(Some(dir.path()));
    let read = ["--audience", "A", "--op", "read"];
    let write = ["--audience", "A", "--op", "write"];
    let comment = ["--audience", "A", "--op", "comment"];
    s.granted(&read);
    s.begin(&write).err();

    // A bad file: refused with its place; the old set keeps deciding.
    let extra = dir.path().join("zz.cedar");
    std::fs::write(&extra, BAD).unwrap();
    let refused = s.server.cli(&["policy", "reload"]);
    let message = refused.err();
    assert!(message.contains("zz.cedar:2:"), "{message}");
    assert!(message.contains("keep deciding"), "{message}");
    assert_eq!(s.granted(&read)["task"]["policy_ids"], json!(["read-a"]));
    s.begin(&write).err();

    // Replaced with a good file: loaded; write is granted without a restart.
    std::fs::write(&extra, P2).unwrap();
    let loaded = s
        .server
        .cli(&["policy", "reload", "--output", "json"])
        .json();
    assert_eq!(loaded["files"], json!(["main.cedar", "zz.cedar"]));
    let mut ids: Vec<&str> = loaded["policy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["no-b", "read-a", "write-a"]);
    assert_eq!(s.granted(&write)["task"]["policy_ids"], json!(["write-a"]));
    s.granted(&read);

    // SIGHUP: the directory is read again.
    s.begin(&comment).err();
    std::fs::write(&extra, P3).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &s.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let out = wait_for("a comment grant after SIGHUP", PROMPT, || {
        let out = s.begin(&["--audience", "A", "--op", "comment", "--output", "json"]);
        out.success.then(|| out.json())
    });
    assert_eq!(out["task"]["policy_ids"], json!(["comment-a"]));

    let refusals = audit(&s.server, &["--kind", "policy.refused"]);
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert!(
        refusals[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("zz.cedar:2:"),
        "{}",
        refusals[0]
    );
    let reloads = audit(&s.server, &["--kind", "policy.reloaded"]);
    assert_eq!(reloads.len(), 2, "{reloads:#?}");
    assert!(
        reloads[0]["actor"].as_str().unwrap().starts_with("admin:"),
        "{}",
        reloads[0]
    );
    assert_eq!(
        reloads[0]["details"]["files"],
        json!(["main.cedar", "zz.cedar"])
    );
    assert_eq!(reloads[1]["actor"], "signal:SIGHUP");
    assert!(
        reloads[1]["details"]["policy_ids"]
            .as_array()
            .unwrap()
            .contains(&json!("comment-a")),
        "{}",
        reloads[1]
    );
}

#[test]
fn bad_requests_are_refused_recorded_once_and_store_no_task() {
    let dir = policy_dir(&[("main.cedar", P1)]);
    let s = Setup::with_workload(Some(dir.path()));
    s.granted(&["--audience", "A", "--op", "read"]);
    let mut tasks = s.tasks();
    let good = || pb::BeginTaskRequest {
        audience: "A".into(),
        operations: vec!["read".into()],
        ..Default::default()
    };

    // Each must be refused with `code`, a message containing `says`, and exactly one new record,
    // `task.refused` by the workload; the tasks stay as they were.
    let expect_refusal =
        |what: &str, call: &mut dyn FnMut() -> (Code, String), code, says: &str| {
            let before = decisions_and_changes(&s.server);
            let tasks_before = all_tasks(&s.server);
            let (got, message) = call();
            assert_eq!(got, code, "{what}: {message}");
            assert!(message.contains(says), "{what}: {message}");
            let after = decisions_and_changes(&s.server);
            let new = &after[before.len()..];
            assert_eq!(kinds(new), ["task.refused"], "{what}: {new:#?}");
            assert_eq!(new[0]["actor"], WORKLOAD, "{what}");
            assert!(
                new[0]["details"]["reason"].as_str().unwrap().contains(says),
                "{what}: {}",
                new[0]
            );
            assert_eq!(all_tasks(&s.server), tasks_before, "{what}");
        };
    let cli = |args: &[&str]| {
        let out = s.begin(args);
        let line = out.err().to_owned();
        let code = if line.contains("(InvalidArgument)") {
            Code::InvalidArgument
        } else {
            Code::Unknown
        };
        (code, line)
    };
    let rt = &s.rt;
    let mut grpc = |request: pb::BeginTaskRequest| {
        let status = rt.block_on(tasks.begin_task(request)).unwrap_err();
        (status.code(), status.message().to_owned())
    };

    expect_refusal(
        "empty audience",
        &mut || cli(&["--audience", "", "--op", "read"]),
        Code::InvalidArgument,
        "audience",
    );
    expect_refusal(
        "an operation with a control character",
        &mut || cli(&["--audience", "A", "--op", "re\u{7}ad"]),
        Code::InvalidArgument,
        "control character",
    );
    expect_refusal(
        "no operation",
        &mut || {
            grpc(pb::BeginTaskRequest {
                operations: vec![],
                ..good()
            })
        },
        Code::InvalidArgument,
        "operation",
    );
    for ttl in [-1, 1_000_000_000_000] {
        expect_refusal(
            &format!("ttl_seconds {ttl}"),
            &mut || {
                grpc(pb::BeginTaskRequest {
                    ttl_seconds: ttl,
                    ..good()
                })
            },
            Code::InvalidArgument,
            &format!("ttl_seconds {ttl} is out of range"),
        );
    }
    expect_refusal(
        "a 5000-byte purpose",
        &mut || {
            grpc(pb::BeginTaskRequest {
                purpose: "x".repeat(5000),
                ..good()
            })
        },
        Code::InvalidArgument,
        "purpose",
    );

    // No security header: refused before anyone looks at the caller; nothing is recorded.
    let before = decisions_and_changes(&s.server);
    let mut bare = s.tasks_without_header();
    let status = s.rt.block_on(bare.begin_task(good())).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("security header"), "{status:?}");
    assert_eq!(decisions_and_changes(&s.server), before);
    assert_eq!(all_tasks(&s.server).len(), 1);
}

#[test]
fn a_caller_without_identity_is_refused_and_nothing_is_recorded() {
    let dir = policy_dir(&[("main.cedar", P1)]);
    // No entry for anyone.
    let s = Setup::start(Some(dir.path()), &[]);
    let refusal = wait_for("the attested agent to answer", PROMPT, || {
        let out = s.begin(&["--audience", "A", "--op", "read"]);
        (!out.success && !out.stderr.contains("(Unavailable)")).then_some(out)
    });
    assert_eq!(
        refusal.err(),
        "error: task refused (PermissionDenied): no identity issued"
    );
    let mut tasks = s.tasks();
    for status in [
        s.rt.block_on(tasks.list_tasks(pb::ListTasksRequest::default()))
            .unwrap_err(),
        s.rt.block_on(tasks.get_task(pb::GetTaskRequest {
            task_id: "0123456789abcdef0123456789abcdef".into(),
        }))
        .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(status.message(), "no identity issued");
    }
    let records = decisions_and_changes(&s.server);
    assert!(
        !kinds(&records).iter().any(|k| k.starts_with("task.")),
        "{records:#?}"
    );
    assert!(all_tasks(&s.server).is_empty());
}

#[test]
fn without_a_policy_directory_every_grant_is_refused() {
    let s = Setup::with_workload(None);
    for (tool, op) in [("A", "read"), ("B", "write")] {
        assert_eq!(
            s.begin(&["--audience", tool, "--op", op]).err(),
            format!(
                "error: task refused (PermissionDenied): operation \"{op}\" on tool \"{tool}\" is refused: the server has no grant policy (every grant is refused)"
            )
        );
    }
    assert_eq!(audit(&s.server, &["--kind", "task.denied"]).len(), 2);
    assert!(all_tasks(&s.server).is_empty());
    let test = s.server.cli(&[
        "policy",
        "test",
        "--principal",
        WORKLOAD,
        "--action",
        "read",
        "--resource",
        "A",
    ]);
    assert_eq!(test.ok().lines().next(), Some("DENY"), "{}", test.stdout);
}

#[test]
fn policy_check_reads_files_offline_and_names_each_problem_with_its_place() {
    let dir = policy_dir(&[("good.cedar", P1), ("bad.cedar", BAD)]);
    let good = dir.path().join("good.cedar");
    let bad = dir.path().join("bad.cedar");

    let out = lanyard(["policy".as_ref(), "check".as_ref(), good.as_os_str()]);
    let listed = out.ok();
    assert!(listed.contains("ok: 2 policies in 1 files"), "{listed}");
    for id in ["read-a", "no-b"] {
        assert!(listed.lines().any(|l| l.trim() == id), "{id} in:\n{listed}");
    }

    let out = lanyard(["policy".as_ref(), "check".as_ref(), bad.as_os_str()]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let first = out.stderr.lines().next().unwrap();
    // file:line:column: message
    let place = format!("{}:2:", bad.display());
    let rest = first
        .strip_prefix(&place)
        .unwrap_or_else(|| panic!("`{first}` does not start with `{place}`"));
    let (column, message) = rest.split_once(": ").unwrap();
    assert!(column.parse::<u32>().unwrap() >= 1, "{first}");
    assert!(message.contains("resource"), "{first}");

    // The directory: both files, one problem, nothing loaded.
    let out = lanyard([
        "policy".as_ref(),
        "check".as_ref(),
        dir.path().as_os_str(),
        "--output".as_ref(),
        "json".as_ref(),
    ]);
    assert!(!out.success);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["file"], bad.display().to_string());
    assert_eq!(problems[0]["line"], 2);
}

#[test]
fn policy_test_puts_one_request_to_the_loaded_policies() {
    let dir = policy_dir(&[("main.cedar", P1)]);
    let server = Server::start_with(&["--policy-dir", dir.path().to_str().unwrap()]);
    let test = |principal: &str, action: &str, resource: &str| {
        let out = server.cli(&[
            "policy",
            "test",
            "--principal",
            principal,
            "--action",
            action,
            "--resource",
            resource,
        ]);
        let text = out.ok().to_owned();
        let rows: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        rows
    };
    assert_eq!(
        test(WORKLOAD, "read", "A"),
        ["ALLOW", "ACTION OUTCOME POLICIES", "read allowed read-a"]
    );
    assert_eq!(
        test(WORKLOAD, "write", "A"),
        [
            "DENY",
            "ACTION OUTCOME POLICIES",
            "write no policy permits it"
        ]
    );
    let forbidden = test(WORKLOAD, "read", "B");
    assert_eq!(forbidden[0], "DENY");
    assert!(forbidden[2].ends_with("no-b"), "{forbidden:?}");
    // The permit names one principal.
    assert_eq!(
        test("spiffe://example.org/someone-else", "read", "A")[0],
        "DENY"
    );
}
