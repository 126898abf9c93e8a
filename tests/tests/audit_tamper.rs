//! The audit log against someone with write access to the datastore: rows edited, deleted and
//! reordered behind a running server's back are named exactly by `lanyard audit verify`, proofs
//! stop being handed out for a changed record, and a restarted server does not sign a checkpoint
//! over a changed log. Once the rows are put back, everything verifies again: detection is about
//! the content, not a sticky flag.
//!
//! Runs on SQLite (the default datastore in the server's data directory) and, when
//! LANYARD_TEST_POSTGRES names a server, on a fresh PostgreSQL database.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::time::Duration;

use lanyard_e2e::postgres::FreshDatabase;
use lanyard_e2e::{CliOutput, Server, lanyard, wait_for};
use serde_json::Value;
use sqlx::Connection as _;

const WAIT: Duration = Duration::from_secs(30);

/// One `audit_log` row, as stored: seq, time_us, kind, actor, subject, details.
type Row = (i64, i64, String, String, String, String);

/// A bound value of a tampering statement.
enum Arg {
    Int(i64),
    Text(String),
}

/// Where the server keeps its datastore, and a connection to it behind the server's back.
struct Backend {
    runtime: tokio::runtime::Runtime,
    /// None: SQLite in the server's data directory.
    postgres: Option<FreshDatabase>,
    /// Set once the server has started.
    url: Option<String>,
}

impl Backend {
    fn sqlite() -> Self {
        Self {
            runtime: runtime(),
            postgres: None,
            url: None,
        }
    }

    fn postgres(admin_url: &str) -> Self {
        let runtime = runtime();
        let db = runtime
            .block_on(FreshDatabase::create(admin_url, "lanyard_audit"))
            .unwrap();
        Self {
            runtime,
            postgres: Some(db),
            url: None,
        }
    }

    /// Starts a server on this backend.
    fn start(&mut self) -> Server {
        let server = match &self.postgres {
            Some(db) => Server::start_with(&["--datastore", &db.url]),
            None => Server::start(),
        };
        self.url = Some(match &self.postgres {
            Some(db) => db.url.clone(),
            None => format!(
                "sqlite://{}",
                server.dir.join("data/datastore.sqlite3").display()
            ),
        });
        server
    }

    /// Runs `statements` in one transaction.
    fn execute(&self, statements: &[(&'static str, Vec<Arg>)]) {
        let url = self.url.as_deref().expect("a started server");
        macro_rules! run {
            ($conn:ty) => {{
                let mut conn = <$conn>::connect(url).await.unwrap();
                let mut tx = conn.begin().await.unwrap();
                for (sql, args) in statements {
                    let mut query = sqlx::query(*sql);
                    for arg in args {
                        query = match arg {
                            Arg::Int(n) => query.bind(*n),
                            Arg::Text(s) => query.bind(s.clone()),
                        };
                    }
                    let done = query.execute(&mut *tx).await.unwrap();
                    assert_eq!(done.rows_affected(), 1, "{sql}");
                }
                tx.commit().await.unwrap();
            }};
        }
        self.runtime.block_on(async {
            if self.postgres.is_some() {
                run!(sqlx::PgConnection)
            } else {
                run!(sqlx::SqliteConnection)
            }
        });
    }

    /// The stored row at `seq`.
    fn row(&self, seq: i64) -> Row {
        const SQL: &str =
            "SELECT seq, time_us, kind, actor, subject, details FROM audit_log WHERE seq = $1";
        let url = self.url.as_deref().expect("a started server");
        self.runtime.block_on(async {
            if self.postgres.is_some() {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_as(SQL)
                    .bind(seq)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            } else {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query_as(SQL)
                    .bind(seq)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        })
    }

    fn set_details(&self, seq: i64, details: &str) {
        self.execute(&[(
            "UPDATE audit_log SET details = $1 WHERE seq = $2",
            vec![Arg::Text(details.to_owned()), Arg::Int(seq)],
        )]);
    }

    fn delete(&self, seq: i64) {
        self.execute(&[("DELETE FROM audit_log WHERE seq = $1", vec![Arg::Int(seq)])]);
    }

    fn insert(&self, row: &Row) {
        let (seq, time_us, kind, actor, subject, details) = row.clone();
        self.execute(&[(
            "INSERT INTO audit_log (seq, time_us, kind, actor, subject, details) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                Arg::Int(seq),
                Arg::Int(time_us),
                Arg::Text(kind),
                Arg::Text(actor),
                Arg::Text(subject),
                Arg::Text(details),
            ],
        )]);
    }

    /// Swaps the seqs of rows `a` and `b` (through a temporary seq): their contents trade places.
    fn swap(&self, a: i64, b: i64) {
        const MOVE: &str = "UPDATE audit_log SET seq = $1 WHERE seq = $2";
        self.execute(&[
            (MOVE, vec![Arg::Int(-1), Arg::Int(a)]),
            (MOVE, vec![Arg::Int(a), Arg::Int(b)]),
            (MOVE, vec![Arg::Int(b), Arg::Int(-1)]),
        ]);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `lanyard audit verify --output json`: the summary, checked against the exit status.
fn verify(server: &Server) -> Value {
    let out = server.cli(&["audit", "verify", "--output", "json"]);
    let summary: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", out.stdout, out.stderr));
    assert_eq!(
        summary["ok"].as_bool(),
        Some(out.success),
        "{summary} / {}",
        out.stderr
    );
    summary
}

/// Asserts that `lanyard audit verify` passes over `records` records, all of them signed.
#[track_caller]
fn assert_verifies(server: &Server, records: u64) {
    let summary = verify(server);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["records"], records, "{summary}");
    assert_eq!(summary["signed_size"], records, "{summary}");
}

/// Asserts that `lanyard audit verify` fails and names `seq` as the first bad record, in its
/// JSON and in its message; returns the error.
#[track_caller]
fn assert_names(server: &Server, seq: u64, message: &str) -> Value {
    let summary = verify(server);
    assert_eq!(summary["ok"], false, "{summary}");
    assert_eq!(summary["first_bad_seq"], seq, "{summary}");
    let error = summary["error"].as_str().unwrap();
    assert!(error.contains(message), "{error}");
    let out = server.cli(&["audit", "verify"]);
    let line = out.err();
    assert!(line.contains(message), "{line}");
    summary
}

/// Waits until a checkpoint covers all `records` records, and the log verifies.
fn wait_signed(server: &Server, records: u64) {
    wait_for(
        &format!("a checkpoint over {records} records"),
        WAIT,
        || {
            let summary = verify(server);
            (summary["ok"] == true && summary["signed_size"] == records).then_some(())
        },
    );
    assert_verifies(server, records);
}

fn check_proof(path: &Path) -> CliOutput {
    lanyard(["audit".as_ref(), "check-proof".as_ref(), path.as_os_str()])
}

/// The sizes of the checkpoints in `lanyard audit export`.
fn exported_checkpoint_sizes(server: &Server) -> Vec<u64> {
    server
        .cli(&["audit", "export"])
        .ok()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["type"] == "checkpoint")
        .map(|line| line["size"].as_u64().unwrap())
        .collect()
}

/// Seqs of the records `lanyard audit list` shows.
fn listed_seqs(server: &Server) -> Vec<u64> {
    server.cli(&["audit", "list", "--output", "json"]).json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

fn tamper_scenario(mut backend: Backend) {
    let mut server = backend.start();
    let work = tempfile::tempdir().unwrap();

    // Ten records: seven entries (seq 0..=6), three join tokens (7..=9).
    for i in 0..7 {
        let id = format!("spiffe://example.org/workload/{i}");
        server
            .cli(&[
                "entry",
                "create",
                "--parent-id",
                "spiffe://example.org/lanyard/agent/x",
                "--spiffe-id",
                &id,
                "--selector",
                "unix:uid:1000",
                "--output",
                "json",
            ])
            .json();
    }
    for _ in 0..3 {
        server.join_token(&[]);
    }
    let records = 10;
    assert_eq!(listed_seqs(&server), (0..records).collect::<Vec<_>>());
    wait_signed(&server, records);
    let out = server.cli(&["audit", "verify"]);
    assert!(out.ok().starts_with("ok: 10 records;"), "{}", out.stdout);

    // A proof of record 4, checked offline.
    let proof_text = server.cli(&["audit", "prove", "4"]).ok().to_owned();
    let proof_path = work.path().join("proof-4.json");
    std::fs::write(&proof_path, &proof_text).unwrap();
    let out = check_proof(&proof_path);
    assert!(
        out.ok().starts_with("ok: record 4 is in the log"),
        "{}",
        out.stdout
    );

    // Edit: record 4 now names another SPIFFE ID.
    let original = backend.row(4);
    assert_eq!(original.2, "entry.created");
    let mut details: Value = serde_json::from_str(&original.5).unwrap();
    details["spiffe_id"] = "spiffe://example.org/forged".into();
    let forged = serde_json::to_string(&details).unwrap();
    backend.set_details(4, &forged);
    assert_names(&server, 4, "record 4 was changed");
    let out = server.cli(&["audit", "prove", "4"]);
    let line = out.err();
    assert!(
        line.contains("DataLoss") && line.contains("record 4") && line.contains("not the record"),
        "{line}"
    );
    // The proof taken before still checks out: it carries the original record...
    check_proof(&proof_path).ok();
    // ... and the edited record with the same path is not in the signed log.
    let mut proof: Value = serde_json::from_str(&proof_text).unwrap();
    proof["record"]["details"] = details;
    let forged_path = work.path().join("forged-4.json");
    std::fs::write(&forged_path, proof.to_string()).unwrap();
    let line = check_proof(&forged_path).err().to_owned();
    assert!(line.contains("record 4 is not in the log"), "{line}");
    // A row that is not a record at all.
    backend.set_details(4, "{not json");
    assert_names(&server, 4, "record 4 is not a valid audit record");
    // Put back, it verifies and proves again.
    backend.set_details(4, &original.5);
    assert_verifies(&server, records);
    server.cli(&["audit", "prove", "4"]).ok();

    // Delete record 6.
    let saved = backend.row(6);
    backend.delete(6);
    assert_names(&server, 6, "from seq 6");
    backend.insert(&saved);
    assert_verifies(&server, records);

    // Reorder: rows 2 and 3 trade places.
    backend.swap(2, 3);
    assert_names(&server, 2, "record 2 was changed");
    backend.swap(2, 3);
    assert_verifies(&server, records);

    // Restart over an edited log: the server must not sign a checkpoint over it.
    backend.set_details(4, &forged);
    server.restart();
    let summary = assert_names(&server, 4, "record 4 was changed");
    let stopped = summary["signing_stopped"].as_str().unwrap();
    assert!(!stopped.is_empty(), "{summary}");
    // A new record (seq 10), which the server reads...
    server.join_token(&[]);
    assert_eq!(listed_seqs(&server).last(), Some(&records));
    // ... but does not sign.
    let line = server
        .cli(&["audit", "prove", &records.to_string()])
        .err()
        .to_owned();
    assert!(
        line.contains("not covered by a signed checkpoint"),
        "{line}"
    );
    // A clean stop signs a last checkpoint if it may (after record 10 was written): it may not.
    assert!(server.terminate(), "{}", server.log());
    server.restart();
    assert_eq!(
        exported_checkpoint_sizes(&server).iter().max(),
        Some(&records)
    );
    let summary = assert_names(&server, 4, "record 4 was changed");
    assert_eq!(summary["signing_stopped"].as_str(), Some(stopped));
    let line = server
        .cli(&["audit", "prove", &records.to_string()])
        .err()
        .to_owned();
    assert!(
        line.contains("not covered by a signed checkpoint"),
        "{line}"
    );

    // Put back, a restarted server finds the log it signed and signs again.
    backend.set_details(4, &original.5);
    server.restart();
    wait_signed(&server, records + 1);
    assert_eq!(verify(&server)["signing_stopped"], "");
    let proof = server
        .cli(&["audit", "prove", &records.to_string()])
        .ok()
        .to_owned();
    let path = work.path().join("proof-10.json");
    std::fs::write(&path, proof).unwrap();
    check_proof(&path).ok();
}

#[test]
fn tampering_is_named_on_sqlite() {
    tamper_scenario(Backend::sqlite());
}

#[test]
fn tampering_is_named_on_postgres() {
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    tamper_scenario(Backend::postgres(&admin_url));
}

/// A server restarted over an edited log rebuilds its view from the leaf hashes its checkpoints
/// vouch for, not from the rows: the edited record is refused (DataLoss), and an intact record,
/// even one whose path crosses the edited one, gets a proof that checks out. (Before this, the
/// server re-read the edited row and handed out proofs that failed.)
#[test]
fn a_server_restarted_over_an_edited_log_gives_no_proof_that_fails() {
    let mut backend = Backend::sqlite();
    let mut server = backend.start();
    let work = tempfile::tempdir().unwrap();
    for _ in 0..6 {
        server.join_token(&[]);
    }
    wait_signed(&server, 6);
    let (.., details) = backend.row(4);
    let mut details: Value = serde_json::from_str(&details).unwrap();
    details["spiffe_id"] = "spiffe://example.org/forged".into();
    backend.set_details(4, &details.to_string());
    server.restart();
    assert!(
        !verify(&server)["signing_stopped"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    // The edited record: refused, as before the restart.
    let out = server.cli(&["audit", "prove", "4"]);
    assert!(
        !out.success,
        "a proof of the edited record:\n{}",
        out.stdout
    );
    assert!(out.err().contains("DataLoss"), "{}", out.stderr);
    // An intact record whose path crosses the edited one: a proof that checks out.
    let out = server.cli(&["audit", "prove", "2"]);
    assert!(out.success, "no proof of an intact record:\n{}", out.stderr);
    let path = work.path().join("proof-2.json");
    std::fs::write(&path, &out.stdout).unwrap();
    check_proof(&path).ok();
}
