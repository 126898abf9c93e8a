//! A thin layer over the two sqlx drivers, so that the store's logic and SQL are written once.
//!
//! Both backends take the same SQL: parameters are written `$1`, `$2`, … (rewritten for SQLite, see
//! [`sqlite_positional`]), and the schema keeps to types both databases share (64-bit integers,
//! text, blobs, booleans). Only the migrations and how a transaction begins differ.
//! SQL text is built only from constants in this crate; every value goes in as a bound argument.

use std::borrow::Cow;
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Postgres, Row as _, Sqlite, Transaction};

use crate::Backend;

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// With the lock every write transaction holds: SQLite has one writer at a time, and
    /// writers queued here wait their turn in order, where writers contending in SQLite would
    /// back off in its busy handler (sleeps of 1 to 100 ms), which at 50 concurrent writers cut
    /// the append rate to a third (`task-load`, docs/benchmarks.md).
    Sqlite(SqlitePool, Arc<tokio::sync::Mutex<()>>),
    Postgres(PgPool),
}

/// An open transaction; rolled back when dropped without [`Tx::commit`].
#[derive(Debug)]
pub(crate) enum Tx {
    /// A write transaction holds the pool's writer lock until it ends.
    Sqlite(
        Transaction<'static, Sqlite>,
        Option<tokio::sync::OwnedMutexGuard<()>>,
    ),
    Postgres(Transaction<'static, Postgres>),
}

/// One result row.
#[derive(Debug)]
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
}

/// SQL text and its arguments. Static SQL is written with `$N` placeholders and [`Stmt::bind`];
/// dynamic SQL is assembled with [`Stmt::push`] and [`Stmt::push_bind`], which numbers the
/// placeholders.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
    /// Whether the driver keeps the prepared statement for reuse: yes for fixed SQL, no for
    /// assembled SQL (multi-row inserts of every batch size would crowd the cache, and on
    /// PostgreSQL hold server memory, for no reuse).
    persistent: bool,
}

/// The largest number of bound parameters put in one statement. SQLite's limit is 32766 and
/// PostgreSQL's 65535; multi-row statements are split to stay under this.
pub(crate) const MAX_PARAMS: usize = 30_000;

// === impl Stmt ===

impl Stmt {
    pub(crate) fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
            persistent: true,
        }
    }

    /// Adds the next argument of a statement whose placeholders are already written.
    pub(crate) fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends SQL text (a constant of this crate, never a value).
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.persistent = false;
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Appends a placeholder for `arg`.
    pub(crate) fn push_bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.persistent = false;
        self.args.push(arg.into());
        let placeholder = format!("${}", self.args.len());
        self.sql.to_mut().push_str(&placeholder);
        self
    }

    /// How many arguments are bound so far.
    pub(crate) fn arg_count(&self) -> usize {
        self.args.len()
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v)
    }
}

impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}

/// Builds the sqlx query for `$stmt` and runs `$method` on `$executor`. A macro rather than a
/// generic function: each expansion sees one concrete driver, which spares the long lists of
/// sqlx trait bounds a function generic over the database would need.
macro_rules! run {
    (@bind $executor:expr, $sql:expr, $args:expr, $persistent:expr, $method:ident) => {{
        let mut query = sqlx::query(AssertSqlSafe($sql)).persistent($persistent);
        for arg in $args {
            query = match arg {
                Arg::Int(v) => query.bind(v),
                Arg::OptInt(v) => query.bind(v),
                Arg::Bool(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
                Arg::OptText(v) => query.bind(v),
                Arg::Bytes(v) => query.bind(v),
            };
        }
        query.$method($executor).await
    }};
    (sqlite $executor:expr, $stmt:expr, $method:ident) => {{
        let Stmt { sql, args, persistent } = $stmt;
        match sqlite_positional(sql, args) {
            Ok((sql, args)) => run!(@bind $executor, sql, args, persistent, $method),
            Err(e) => Err(e),
        }
    }};
    (pg $executor:expr, $stmt:expr, $method:ident) => {{
        let Stmt { sql, args, persistent } = $stmt;
        run!(@bind $executor, sql, args, persistent, $method)
    }};
}

/// Rewrites `$N` placeholders as anonymous `?`, with the arguments in order of appearance
/// (repeated where a placeholder is). SQLite takes `$N` as a *named* parameter, and both naming a
/// parameter and sqlx's lookup of each name are linear scans, so a statement with n parameters
/// costs O(n²): a 1,000-entry batch insert (18,000 parameters) spent a second there. Safe because
/// the store's SQL has no string literals: every value is a bound argument.
fn sqlite_positional(
    sql: Cow<'static, str>,
    args: Vec<Arg>,
) -> Result<(Cow<'static, str>, Vec<Arg>), sqlx::Error> {
    if !sql.contains('$') {
        return Ok((sql, args));
    }
    let mut out = String::with_capacity(sql.len());
    let mut order: Vec<usize> = Vec::with_capacity(args.len());
    let mut rest = sql.as_ref();
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) if n >= 1 => {
                out.push('?');
                order.push(n);
            }
            _ => out.push_str(&rest[dollar..=dollar + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);

    let in_order = order.len() == args.len() && order.iter().enumerate().all(|(i, &n)| n == i + 1);
    if in_order {
        return Ok((Cow::Owned(out), args));
    }
    let reordered = order
        .iter()
        .map(|&n| {
            args.get(n - 1)
                .cloned()
                .ok_or_else(|| sqlx::Error::Protocol(format!("placeholder ${n} has no argument")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((Cow::Owned(out), reordered))
}

// === impl Pool ===

impl Pool {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(..) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one statement in its own (implicit) transaction; returns the rows it changed.
    pub(crate) async fn execute(&self, stmt: Stmt) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(pool, _) => run!(sqlite pool, stmt, execute).map(|r| r.rows_affected()),
            Self::Postgres(pool) => run!(pg pool, stmt, execute).map(|r| r.rows_affected()),
        }
    }

    pub(crate) async fn fetch_all(&self, stmt: Stmt) -> Result<Vec<Row>, sqlx::Error> {
        match self {
            Self::Sqlite(pool, _) => run!(sqlite pool, stmt, fetch_all)
                .map(|rows| rows.into_iter().map(Row::Sqlite).collect()),
            Self::Postgres(pool) => run!(pg pool, stmt, fetch_all)
                .map(|rows| rows.into_iter().map(Row::Postgres).collect()),
        }
    }

    pub(crate) async fn fetch_optional(&self, stmt: Stmt) -> Result<Option<Row>, sqlx::Error> {
        match self {
            Self::Sqlite(pool, _) => {
                run!(sqlite pool, stmt, fetch_optional).map(|r| r.map(Row::Sqlite))
            }
            Self::Postgres(pool) => {
                run!(pg pool, stmt, fetch_optional).map(|r| r.map(Row::Postgres))
            }
        }
    }

    /// Begins a transaction that will write. SQLite: `BEGIN IMMEDIATE` takes the write lock now
    /// (waiting up to `busy_timeout`), so the transaction cannot fail later on a lock upgrade.
    /// PostgreSQL: READ COMMITTED; writers that must be ordered take a counter row lock first.
    pub(crate) async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Self::Sqlite(pool, writer) => {
                let turn = writer.clone().lock_owned().await;
                let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Tx::Sqlite(tx, Some(turn)))
            }
            Self::Postgres(pool) => pool.begin().await.map(Tx::Postgres),
        }
    }

    /// Begins a read-only transaction whose statements all see one snapshot.
    pub(crate) async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        match self {
            // In WAL mode a deferred transaction reads one snapshot from its first read on.
            Self::Sqlite(pool, _) => pool.begin().await.map(|tx| Tx::Sqlite(tx, None)),
            Self::Postgres(pool) => pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map(Tx::Postgres),
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Self::Sqlite(pool, _) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

// === impl Tx ===

impl Tx {
    pub(crate) async fn execute(&mut self, stmt: Stmt) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(tx, _) => run!(sqlite &mut **tx, stmt, execute).map(|r| r.rows_affected()),
            Self::Postgres(tx) => run!(pg &mut **tx, stmt, execute).map(|r| r.rows_affected()),
        }
    }

    pub(crate) async fn fetch_all(&mut self, stmt: Stmt) -> Result<Vec<Row>, sqlx::Error> {
        match self {
            Self::Sqlite(tx, _) => run!(sqlite &mut **tx, stmt, fetch_all)
                .map(|rows| rows.into_iter().map(Row::Sqlite).collect()),
            Self::Postgres(tx) => run!(pg &mut **tx, stmt, fetch_all)
                .map(|rows| rows.into_iter().map(Row::Postgres).collect()),
        }
    }

    pub(crate) async fn fetch_optional(&mut self, stmt: Stmt) -> Result<Option<Row>, sqlx::Error> {
        match self {
            Self::Sqlite(tx, _) => {
                run!(sqlite &mut **tx, stmt, fetch_optional).map(|r| r.map(Row::Sqlite))
            }
            Self::Postgres(tx) => {
                run!(pg &mut **tx, stmt, fetch_optional).map(|r| r.map(Row::Postgres))
            }
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx, _turn) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}

// === impl Row ===

impl Row {
    /// The value of column `index` (0-based, in SELECT order).
    pub(crate) fn get<T>(&self, index: usize) -> Result<T, sqlx::Error>
    where
        T: for<'r> sqlx::Decode<'r, Sqlite>
            + sqlx::Type<Sqlite>
            + for<'r> sqlx::Decode<'r, Postgres>
            + sqlx::Type<Postgres>,
    {
        match self {
            Self::Sqlite(row) => row.try_get(index),
            Self::Postgres(row) => row.try_get(index),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    fn ints(args: &[Arg]) -> Vec<i64> {
        args.iter()
            .map(|a| match a {
                Arg::Int(v) => *v,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn sqlite_placeholders_become_positional() {
        let (sql, args) = sqlite_positional(
            Cow::Borrowed("SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"),
            vec![Arg::Int(1), Arg::Int(2), Arg::Int(3)],
        )
        .unwrap();
        assert_eq!(sql, "SELECT a FROM t WHERE b = ? AND c IN (?, ?)");
        assert_eq!(ints(&args), [1, 2, 3]);

        // Reused and out-of-order placeholders get their arguments repeated and moved.
        let (sql, args) = sqlite_positional(
            Cow::Borrowed("VALUES ($2, $1, $2, $10)"),
            (1..=10).map(Arg::Int).collect(),
        )
        .unwrap();
        assert_eq!(sql, "VALUES (?, ?, ?, ?)");
        assert_eq!(ints(&args), [2, 1, 2, 10]);

        let (sql, _) = sqlite_positional(Cow::Borrowed("SELECT 1"), Vec::new()).unwrap();
        assert!(matches!(sql, Cow::Borrowed(_)));
        assert!(sqlite_positional(Cow::Borrowed("SELECT $3"), vec![Arg::Int(1)]).is_err());
    }
}
