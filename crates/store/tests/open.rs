//! Opening a store: URLs it refuses, databases it cannot reach, and the SQLite file it creates.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use lanyard_store::{Error, StoreConfig};

#[tokio::test]
async fn unknown_and_unsupported_urls_are_refused() {
    for url in [
        "mysql://db/x",
        "",
        "sqlite://",
        "sqlite::memory:",
        "sqlite:///tmp/x.db?mode=memory",
        "postgres://[::1/x",
    ] {
        let err = lanyard_store::connect(url).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
}

#[tokio::test]
async fn a_sqlite_file_in_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/no/such/dir/x.db", dir.path().display());
    let err = lanyard_store::connect(&url).await.unwrap_err();
    assert!(matches!(err, Error::CreateFile { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir/x.db"), "{err}");
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_connect_error_without_the_password() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let mut config = StoreConfig::new("postgres://lanyard:hunter2@127.0.0.1:1/lanyard");
    config.acquire_timeout = Duration::from_secs(2);
    let err = lanyard_store::open(config).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let debug = format!(
        "{:?}",
        StoreConfig::new("postgres://lanyard:hunter2@127.0.0.1:1/lanyard")
    );
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_file_is_private_and_in_wal_mode() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = lanyard_store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // WAL mode leaves a -wal file beside the database while connections are open.
    assert!(dir.path().join("store.db-wal").exists());
    let wal_mode = std::fs::metadata(dir.path().join("store.db-wal"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(wal_mode & 0o077, 0, "the WAL file is private too");
    store.close().await;
}

#[tokio::test]
async fn a_database_from_a_newer_lanyard_is_refused() {
    use sqlx::Connection as _;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = lanyard_store::connect(&url).await.unwrap();
    store.close().await;
    // Pretend a later version applied migration 999.
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'future', TRUE, X'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let err = lanyard_store::connect(&url).await.unwrap_err();
    assert!(matches!(err, Error::Migrate(_)), "{err}");
}
