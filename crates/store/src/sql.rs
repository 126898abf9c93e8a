//! The one [`DataStore`] implementation, over SQLite or PostgreSQL: opening and migrating the
//! database here, the operations in one module per kind of record.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lanyard_core::{EntryId, RegistrationEntry, SharedClock, SpiffeId, SystemClock, TrustDomain};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::db::{Pool, Stmt};
use crate::{
    AgentFilter, AgentInfo, AgentRenewal, Approval, ApprovalState, AttestedAgent, AuditAppend,
    AuditFilter, AuditRow, Backend, BundleRecord, BundleWrite, CaJournal, DataStore, EntryChanges,
    EntryFilter, Error, JoinTokenGrant, Page, PageRequest, Result, ServerInfo, ServerRecord,
    StoredCheckpoint, TaskFilter, TaskRecord,
};

mod agents;
mod approvals;
mod audit;
mod bundles;
mod entries;
mod journal;
mod servers;
mod tasks;
mod tokens;

/// How to open a store.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative or, with a third slash, absolute) or `postgres://…`.
    pub url: String,
    /// The source of the times the store writes and of "now" for join token expiry.
    pub clock: SharedClock,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long to wait for a connection (and, at open, for the database to answer).
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for another writer's lock before failing.
    pub busy_timeout: Duration,
}

/// The migrations, in order: (version, description, SQLite SQL, PostgreSQL SQL). A released
/// migration is never edited (sqlx checks checksums); changes go in a new one.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "agent serials",
        include_str!("../migrations/sqlite/0002_agent_serials.sql"),
        include_str!("../migrations/postgres/0002_agent_serials.sql"),
    ),
    (
        3,
        "audit log",
        include_str!("../migrations/sqlite/0003_audit_log.sql"),
        include_str!("../migrations/postgres/0003_audit_log.sql"),
    ),
    (
        4,
        "task parents",
        include_str!("../migrations/sqlite/0004_task_parents.sql"),
        include_str!("../migrations/postgres/0004_task_parents.sql"),
    ),
    (
        5,
        "approvals",
        include_str!("../migrations/sqlite/0005_approvals.sql"),
        include_str!("../migrations/postgres/0005_approvals.sql"),
    ),
    (
        8,
        "servers",
        include_str!("../migrations/sqlite/0008_servers.sql"),
        include_str!("../migrations/postgres/0008_servers.sql"),
    ),
    (
        9,
        "change feed",
        include_str!("../migrations/sqlite/0009_change_feed.sql"),
        include_str!("../migrations/postgres/0009_change_feed.sql"),
    ),
];

/// The store: a pool and a clock.
pub(crate) struct SqlStore {
    pool: Pool,
    clock: SharedClock,
    /// PostgreSQL only: when the entry tables' planner statistics are refreshed.
    statistics: Option<Statistics>,
}

/// Refreshes PostgreSQL's planner statistics of the entry tables after bulk writes. Until
/// autovacuum's next pass (a minute by default) a freshly loaded table has none, and the
/// `Subset` selector filter then walks the primary key: 100× slower (docs/benchmarks.md).
#[derive(Debug, Default)]
struct Statistics {
    /// (entry rows written since the last ANALYZE, rows the table had then).
    counts: std::sync::Mutex<(u64, u64)>,
}

/// ANALYZE once at least this many rows were written since the last one…
const ANALYZE_MIN_ROWS: u64 = 1000;
/// …and at least this fraction (1/n) of the table: geometric, so its cost is amortized.
const ANALYZE_FRACTION: u64 = 5;
/// Total SQLite page cache of the pool, split across its connections: enough for the entry
/// indexes' hot pages, bounded whatever the pool size.
const SQLITE_CACHE_KIB: u32 = 64 * 1024;

/// Opens (creating if needed) and migrates the datastore `config.url` names.
pub async fn open(config: StoreConfig) -> Result<Arc<dyn DataStore>> {
    let pool = if let Some(path) = sqlite_path(&config.url)? {
        open_sqlite(&config, path).await?
    } else {
        open_postgres(&config).await?
    };
    migrate(&pool).await.map_err(Error::Migrate)?;
    let statistics = match pool.backend() {
        Backend::Sqlite => None,
        Backend::Postgres => Some(Statistics::read(&pool).await?),
    };
    Ok(Arc::new(SqlStore {
        pool,
        clock: config.clock,
        statistics,
    }))
}

/// Opens the datastore at `url` with default settings and the system clock.
pub async fn connect(url: &str) -> Result<Arc<dyn DataStore>> {
    open(StoreConfig::new(url)).await
}

// === impl Statistics ===

impl Statistics {
    /// Starts from the table's size as PostgreSQL last estimated it (none: 0).
    async fn read(pool: &Pool) -> Result<Self> {
        let row = pool
            .fetch_optional(Stmt::new(
                "SELECT GREATEST(reltuples, 0)::BIGINT FROM pg_class WHERE oid = 'entries'::regclass",
            ))
            .await?;
        let rows = match row {
            Some(row) => row.get::<i64>(0)?,
            None => 0,
        };
        Ok(Self {
            counts: std::sync::Mutex::new((0, u64::try_from(rows).unwrap_or(0))),
        })
    }

    /// Counts `n` rows written; true when an ANALYZE is due (and counts it as done).
    fn written(&self, n: u64) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (written, rows) = &mut *counts;
        *written += n;
        let due = *written >= ANALYZE_MIN_ROWS && *written * ANALYZE_FRACTION >= *rows;
        if due {
            *rows += *written;
            *written = 0;
        }
        due
    }
}

// === impl SqlStore ===

impl SqlStore {
    /// After a write of `n` entry rows: on PostgreSQL, refresh the entry tables' statistics if
    /// enough changed since the last time. Done before the write returns, so a caller that
    /// filters right after a bulk load gets the fast plan; it costs a sample of ~30,000 rows,
    /// and happens each time the table has grown by a fifth.
    pub(crate) async fn entries_written(&self, n: usize) {
        let Some(statistics) = &self.statistics else {
            return;
        };
        if statistics.written(n as u64) {
            // The write is committed whatever happens here; a failed ANALYZE leaves the
            // statistics to autovacuum, as before.
            let _ = self
                .pool
                .execute(Stmt::new("ANALYZE entries, entry_selectors"))
                .await;
        }
    }
}

// === impl StoreConfig ===

impl StoreConfig {
    /// Defaults: the system clock, 8 connections, 10 s to connect, 10 s SQLite busy timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            clock: Arc::new(SystemClock),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("clock", &self.clock)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("busy_timeout", &self.busy_timeout)
            .finish()
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
}

/// `Some(path)` for a SQLite URL, `None` for a PostgreSQL URL.
fn sqlite_path(url: &str) -> Result<Option<&str>> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(None);
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(invalid("unknown scheme"));
    };
    if rest.is_empty() {
        return Err(invalid("the SQLite file path is empty"));
    }
    if rest.contains('?') || rest.starts_with(':') || rest.starts_with("file:") {
        return Err(invalid(
            "only a plain file path is supported (no options, no in-memory database)",
        ));
    }
    Ok(Some(rest))
}

async fn open_sqlite(config: &StoreConfig, path: &str) -> Result<Pool> {
    create_private_file(path)?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL: readers never block the writer, and a commit is one append to the log.
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: the log is fsynced at every commit, so a write that returned survives SIGKILL
        // (NORMAL would too) and also power loss or an OS crash (NORMAL would not).
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(config.busy_timeout)
        // The pool's page cache, split across its connections (SQLite's default is 2 MiB
        // each): the entry indexes keyed by hashes take inserts all over them (docs/store.md),
        // and a million entries must not cost a 32 MiB cache on each of 8 connections.
        .pragma(
            "cache_size",
            format!("-{}", SQLITE_CACHE_KIB / config.max_connections.max(1)),
        );
    let pool = SqlitePoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|source| Error::Connect {
            url: redact_url(&config.url),
            source,
        })?;
    Ok(Pool::Sqlite(pool, Arc::default()))
}

/// Creates the database file readable by its owner only, if it does not exist; SQLite gives its
/// `-wal` and `-shm` files the same permissions. The file holds token hashes and the CA journal.
fn create_private_file(path: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(drop)
        .map_err(|source| Error::CreateFile {
            path: path.to_owned(),
            source,
        })
}

async fn open_postgres(config: &StoreConfig) -> Result<Pool> {
    let options = PgConnectOptions::from_str(&config.url).map_err(|_| Error::InvalidUrl {
        url: redact_url(&config.url),
        reason: "not a valid PostgreSQL URL".to_owned(),
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|source| Error::Connect {
            url: redact_url(&config.url),
            source,
        })?;
    Ok(Pool::Postgres(pool))
}

fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sqlite, postgres)| {
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
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Applies the migrations not yet applied. A database that has a migration this build does not
/// know (written by a newer lanyard) is refused.
async fn migrate(pool: &Pool) -> Result<(), sqlx::migrate::MigrateError> {
    let migrator = migrator(pool.backend());
    // PostgreSQL: sqlx holds an advisory lock while migrating, so servers starting together on
    // one database apply each migration once.
    match pool {
        Pool::Sqlite(pool, _) => migrator.run(pool).await,
        Pool::Postgres(pool) => migrator.run(pool).await,
    }
}

// === impl SqlStore ===

impl SqlStore {
    fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.pool.backend())
            .finish_non_exhaustive()
    }
}

/// Reads the `value` of a named counter.
async fn read_counter(pool: &Pool, name: &'static str) -> Result<u64> {
    let row = pool
        .fetch_optional(Stmt::new("SELECT value FROM counters WHERE name = $1").bind(name))
        .await?;
    match row {
        Some(row) => counter_value(name, row.get(0)?),
        None => Err(missing_counter(name)),
    }
}

fn counter_value(name: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::InvalidData {
        kind: "counter",
        key: name.to_owned(),
        reason: format!("negative value {value}"),
    })
}

fn missing_counter(name: &'static str) -> Error {
    Error::InvalidData {
        kind: "counter",
        key: name.to_owned(),
        reason: "row is missing".to_owned(),
    }
}

/// `SELECT COUNT(*)` of a whole table.
async fn count_rows(store: &SqlStore, table: &'static str) -> Result<u64> {
    let row = store
        .pool
        .fetch_optional(Stmt::new(format!("SELECT COUNT(*) FROM {table}")))
        .await?;
    let n: i64 = match row {
        Some(row) => row.get(0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Parses a page token this store issued (the key of the last item of the previous page).
fn page_after<T>(page: &PageRequest, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>> {
    page.token
        .as_deref()
        .map(|token| {
            parse(token).ok_or_else(|| Error::InvalidArgument {
                field: "page_token",
                reason: "not a token this store issued".to_owned(),
            })
        })
        .transpose()
}

/// The LIMIT to use for a page: one more than its size, to learn whether another page follows;
/// `None` for no limit.
fn page_limit(page: &PageRequest) -> Option<i64> {
    (page.size > 0).then(|| i64::from(page.size) + 1)
}

/// Cuts a fetched list to the page size; the token of the next page is the key of the last item.
fn finish_page<T>(mut items: Vec<T>, page: &PageRequest, key: impl Fn(&T) -> String) -> Page<T> {
    let size = usize::try_from(page.size).unwrap_or(usize::MAX);
    if page.size > 0 && items.len() > size {
        items.truncate(size);
        let next_token = items.last().map(key);
        Page { items, next_token }
    } else {
        Page {
            items,
            next_token: None,
        }
    }
}

/// Appends `$a, $b, …` for the values (the inside of an `IN (…)`).
fn push_list(stmt: &mut Stmt, values: impl Iterator<Item = String>) {
    for (i, value) in values.enumerate() {
        if i > 0 {
            stmt.push(", ");
        }
        stmt.push_bind(value);
    }
}

#[async_trait]
impl DataStore for SqlStore {
    fn backend(&self) -> Backend {
        self.pool.backend()
    }

    async fn ping(&self) -> Result<()> {
        self.pool.fetch_optional(Stmt::new("SELECT 1")).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn change_feed(&self) -> Result<crate::ChangeFeed> {
        crate::feed::subscribe(&self.pool).await
    }

    async fn create_entries(
        &self,
        entries: Vec<RegistrationEntry>,
    ) -> Result<Vec<Result<RegistrationEntry>>> {
        entries::create(self, entries).await
    }

    async fn get_entry(&self, id: &EntryId) -> Result<Option<RegistrationEntry>> {
        entries::get(self, id).await
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &PageRequest,
    ) -> Result<Page<RegistrationEntry>> {
        entries::list(self, filter, page).await
    }

    async fn count_entries(&self) -> Result<u64> {
        entries::count(self).await
    }

    async fn update_entry(&self, entry: RegistrationEntry) -> Result<RegistrationEntry> {
        entries::update(self, entry).await
    }

    async fn delete_entries(&self, ids: &[EntryId]) -> Result<Vec<Result<()>>> {
        entries::delete(self, ids).await
    }

    async fn current_revision(&self) -> Result<u64> {
        read_counter(&self.pool, entries::REVISION_COUNTER).await
    }

    async fn entry_changes_since(&self, revision: u64, limit: u32) -> Result<EntryChanges> {
        entries::changes_since(self, revision, limit).await
    }

    async fn prune_entry_tombstones(&self, revision: u64) -> Result<u64> {
        entries::prune_tombstones(self, revision).await
    }

    async fn create_agent(&self, agent: &AgentInfo) -> Result<AttestedAgent> {
        agents::create(self, agent).await
    }

    async fn update_agent(&self, agent: &AgentInfo) -> Result<AttestedAgent> {
        agents::update(self, agent).await
    }

    async fn renew_agent(&self, renewal: &AgentRenewal) -> Result<AttestedAgent> {
        agents::renew(self, renewal).await
    }

    async fn promote_agent_serial(&self, id: &SpiffeId, serial: &str) -> Result<bool> {
        agents::promote(self, id, serial).await
    }

    async fn get_agent(&self, id: &SpiffeId) -> Result<Option<AttestedAgent>> {
        agents::get(self, id).await
    }

    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: &PageRequest,
    ) -> Result<Page<AttestedAgent>> {
        agents::list(self, filter, page).await
    }

    async fn count_agents(&self) -> Result<u64> {
        agents::count(self).await
    }

    async fn delete_agent(&self, id: &SpiffeId) -> Result<()> {
        agents::delete(self, id).await
    }

    async fn ban_agent(&self, id: &SpiffeId) -> Result<AttestedAgent> {
        agents::ban(self, id).await
    }

    async fn create_join_token(
        &self,
        token: &str,
        spiffe_id: Option<&SpiffeId>,
        expires_at: SystemTime,
    ) -> Result<()> {
        tokens::create(self, token, spiffe_id, expires_at).await
    }

    async fn consume_join_token(&self, token: &str) -> Result<JoinTokenGrant> {
        tokens::consume(self, token).await
    }

    async fn prune_join_tokens(&self, used_before: SystemTime) -> Result<u64> {
        tokens::prune(self, used_before).await
    }

    async fn set_bundle(
        &self,
        trust_domain: &TrustDomain,
        document: &str,
        sequence: u64,
        mode: BundleWrite,
    ) -> Result<BundleRecord> {
        bundles::set(self, trust_domain, document, sequence, mode).await
    }

    async fn get_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<BundleRecord>> {
        bundles::get(self, trust_domain).await
    }

    async fn list_bundles(&self) -> Result<Vec<BundleRecord>> {
        bundles::list(self).await
    }

    async fn delete_bundle(&self, trust_domain: &TrustDomain) -> Result<()> {
        bundles::delete(self, trust_domain).await
    }

    async fn get_ca_journal(&self, server_id: &str) -> Result<Option<CaJournal>> {
        journal::get(self, server_id).await
    }

    async fn list_ca_journals(&self) -> Result<Vec<CaJournal>> {
        journal::list(self).await
    }

    async fn put_ca_journal(
        &self,
        server_id: &str,
        data: &[u8],
        expected_version: Option<u64>,
    ) -> Result<u64> {
        journal::put(self, server_id, data, expected_version).await
    }

    async fn server_heartbeat(&self, server: &ServerInfo) -> Result<ServerRecord> {
        servers::heartbeat(self, server).await
    }

    async fn list_servers(&self) -> Result<Vec<ServerRecord>> {
        servers::list(self).await
    }

    async fn append_audit(&self, record: &AuditAppend) -> Result<AuditRow> {
        let mut rows = audit::append(self, std::slice::from_ref(record)).await?;
        rows.pop().ok_or_else(|| Error::InvalidArgument {
            field: "record",
            reason: "the store appended nothing".to_owned(),
        })
    }

    async fn append_audits(&self, records: &[AuditAppend]) -> Result<Vec<AuditRow>> {
        audit::append(self, records).await
    }

    async fn list_audit(&self, filter: &AuditFilter, limit: u32) -> Result<Vec<AuditRow>> {
        audit::list(self, filter, limit).await
    }

    async fn audit_size(&self) -> Result<u64> {
        read_counter(&self.pool, audit::COUNTER).await
    }

    async fn append_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<()> {
        audit::append_checkpoint(self, checkpoint).await
    }

    async fn list_checkpoints(
        &self,
        signer: Option<&str>,
        after: Option<(u64, &str)>,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>> {
        audit::list_checkpoints(self, signer, after, limit).await
    }

    async fn latest_checkpoint(&self, signer: &str) -> Result<Option<StoredCheckpoint>> {
        audit::latest_checkpoint(self, signer).await
    }

    async fn create_task(&self, task: &TaskRecord, audit: &AuditAppend) -> Result<AuditRow> {
        tasks::create(self, task, audit).await
    }

    async fn create_approval(&self, approval: &Approval, audit: &AuditAppend) -> Result<AuditRow> {
        approvals::create(self, approval, audit).await
    }

    async fn get_approval(&self, id: &str) -> Result<Option<Approval>> {
        approvals::get(self, id).await
    }

    async fn pending_approvals(&self) -> Result<Vec<Approval>> {
        approvals::pending(self).await
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one conditional transition: every part is named at the call"
    )]
    async fn decide_approval(
        &self,
        id: &str,
        from: ApprovalState,
        to: ApprovalState,
        decided_by: &str,
        reason: &str,
        task_id: Option<&str>,
        audit: &AuditAppend,
    ) -> Result<Approval> {
        approvals::decide(self, id, from, to, decided_by, reason, task_id, audit).await
    }

    async fn end_task(&self, id: &str, audit: &AuditAppend) -> Result<(TaskRecord, Vec<AuditRow>)> {
        tasks::end(self, id, audit).await
    }

    async fn revoked_tokens(&self, now: SystemTime) -> Result<Vec<(String, SystemTime)>> {
        tasks::revoked(self, now).await
    }

    async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>> {
        tasks::get(self, id).await
    }

    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: &PageRequest,
    ) -> Result<Page<TaskRecord>> {
        tasks::list(self, filter, page).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact_url("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x"
        );
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_path("sqlite:///abs/x.db").unwrap(),
            Some("/abs/x.db")
        );
        assert_eq!(sqlite_path("sqlite://rel/x.db").unwrap(), Some("rel/x.db"));
        assert_eq!(sqlite_path("sqlite:x.db").unwrap(), Some("x.db"));
        assert_eq!(sqlite_path("postgres://u@h/d").unwrap(), None);
        for bad in [
            "sqlite://",
            "sqlite::memory:",
            "sqlite://x.db?mode=memory",
            "mysql://h/d",
            "",
        ] {
            assert!(
                matches!(sqlite_path(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
