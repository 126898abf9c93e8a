//! The store's test suite, written once (`backends/cases.rs`) and run against each backend:
//! SQLite in a fresh temporary directory, PostgreSQL in a fresh database on the server that
//! `LANYARD_TEST_POSTGRES` names (skipped, with a message, when it is unset; CI always sets it).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_core::ManualClock;
use lanyard_store::{Backend, DataStore, StoreConfig};
use sqlx::Connection as _;
use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};

#[path = "backends/cases.rs"]
mod cases;

/// What a test case gets: an open store, the URL it was opened from, and its clock.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Arc<dyn DataStore>,
    pub(crate) url: String,
    pub(crate) clock: Arc<ManualClock>,
}

impl Ctx {
    async fn open(url: String) -> Self {
        // A fixed, whole-second start keeps times exact across the microsecond storage.
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000),
        ));
        let store = lanyard_store::open(config(&url, &clock)).await.unwrap();
        Self { store, url, clock }
    }

    /// Closes the store and opens the same database again.
    pub(crate) async fn reopen(&mut self) {
        self.store.close().await;
        self.store = lanyard_store::open(config(&self.url, &self.clock))
            .await
            .unwrap();
    }

    /// Runs SQL on a connection of its own, behind the store's back (to plant corrupt rows).
    pub(crate) async fn raw_sql(&self, sql: &'static str) {
        match self.store.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// The first column of the first row of a query, as text, read behind the store's back.
    pub(crate) async fn raw_text(&self, sql: &'static str) -> String {
        match self.store.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let v: String = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                v
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                let v: String = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                v
            }
        }
    }

    /// Turns the database into one written by a lanyard that knew only migrations 1 and 2 (the
    /// schema with the event log): drops every table, then applies those two, exactly as that
    /// version did. The store must be closed; reopen it to migrate to the current schema.
    pub(crate) async fn recreate_at_schema_2(&self) {
        self.raw_sql(
            "DROP TABLE IF EXISTS _sqlx_migrations; DROP TABLE IF EXISTS counters; \
             DROP TABLE IF EXISTS entry_selectors; DROP TABLE IF EXISTS entries; \
             DROP TABLE IF EXISTS entry_tombstones; DROP TABLE IF EXISTS agents; \
             DROP TABLE IF EXISTS join_tokens; DROP TABLE IF EXISTS bundles; \
             DROP TABLE IF EXISTS ca_journals; DROP TABLE IF EXISTS events; \
             DROP TABLE IF EXISTS audit_log; DROP TABLE IF EXISTS audit_checkpoints; \
             DROP TABLE IF EXISTS tasks; DROP TABLE IF EXISTS approvals; \
             DROP TABLE IF EXISTS servers;",
        )
        .await;
        let backend = self.store.backend();
        let migration =
            |version: i64, description: &'static str, sqlite: &'static str, postgres| {
                let sql = match backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            };
        let migrator = Migrator::with_migrations(vec![
            migration(
                1,
                "initial",
                include_str!("../migrations/sqlite/0001_initial.sql"),
                include_str!("../migrations/postgres/0001_initial.sql"),
            ),
            migration(
                2,
                "agent serials",
                include_str!("../migrations/sqlite/0002_agent_serials.sql"),
                include_str!("../migrations/postgres/0002_agent_serials.sql"),
            ),
        ]);
        // Through a pool: `run` on a bare connection makes the future not `Send` (sqlx's
        // `Acquire` bounds), and the PostgreSQL cases run as spawned tasks.
        match backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }
}

fn config(url: &str, clock: &Arc<ManualClock>) -> StoreConfig {
    let mut config = StoreConfig::new(url).with_clock(clock.clone());
    // Tests run in parallel, one database each; a small pool keeps the PostgreSQL server under
    // its connection limit (100 by default) on machines with many cores.
    config.max_connections = 4;
    config
}

/// Runs `case` against a store in a new SQLite file.
pub(crate) async fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    case(Ctx::open(url).await).await;
}

/// Runs `case` against a store in a new PostgreSQL database, dropped afterwards (also when the
/// case fails).
pub(crate) async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(admin_url) = std::env::var("LANYARD_TEST_POSTGRES") else {
        eprintln!("skipped: LANYARD_TEST_POSTGRES is not set");
        return;
    };
    let mut name_bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut name_bytes).unwrap();
    let name = format!(
        "lanyard_test_{}",
        name_bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();

    let url = database_url(&admin_url, &name);
    let ctx = Ctx::open(url).await;
    // Run the case as a task so that a failure comes back as an error and the database is
    // dropped before the failure is passed on.
    let outcome = tokio::spawn(case(ctx)).await;

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `postgres://user@host:port/olddb?opts` with the database replaced.
fn database_url(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{host_part}/{database}{query}")
}

/// Generates one `#[tokio::test]` per case and backend: `sqlite::<case>` and `postgres::<case>`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::on_sqlite(crate::cases::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::on_postgres(crate::cases::$case).await;
                }
            )*
        }
    };
}

suite!(
    ping_and_backend,
    ca_journals_are_listed_per_server,
    entry_crud,
    entry_fields_round_trip,
    entry_batch_per_item_results,
    entry_duplicates_refused,
    entry_filter_by_ids,
    entry_filter_selector_modes,
    entry_paging,
    entry_revision_monotonic,
    entry_changes_since,
    entry_tombstone_pruning,
    entry_concurrent_writers,
    entry_batch_of_1000,
    bulk_entry_writes_refresh_statistics,
    agent_lifecycle,
    agent_serial_rotation,
    agent_listing,
    join_token_single_use_under_concurrency,
    join_token_expiry_and_pruning,
    join_token_stored_hashed,
    bundle_sequence,
    ca_journal_optimistic_concurrency,
    servers_beat_and_are_listed,
    audit_append_and_list,
    audit_batch_append,
    audit_concurrent_appends,
    audit_checkpoints,
    tasks_create_get_list,
    tasks_end_and_revoked_tokens,
    ending_a_task_ends_every_task_delegated_from_it,
    approvals_move_from_pending_once,
    task_conflict_appends_no_audit_record,
    corrupt_rows_are_invalid_data,
    reopen_keeps_everything,
    audit_log_replaces_event_log,
    change_feed_notices_writes,
    change_feed_ends_when_its_connection_or_the_store_closes,
);

#[test]
fn database_url_replaces_only_the_database() {
    assert_eq!(
        database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        database_url("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(database_url("postgres://h:1", "x"), "postgres://h:1/x");
}
