//! A fresh PostgreSQL database for one test or benchmark run, on the server that
//! `LANYARD_TEST_POSTGRES` (or `task-load --postgres`) names; dropped when the value is.

use sqlx::Connection as _;

/// A database made for one run; dropped (best effort, `WITH (FORCE)`) by [`Drop`].
#[derive(Debug)]
pub struct FreshDatabase {
    /// Where the run's store connects.
    pub url: String,
    admin_url: String,
    name: String,
}

impl FreshDatabase {
    /// Makes `<prefix>_<random hex>` on the server at `admin_url` (a URL to any database there).
    /// `prefix` must be letters, digits and underscores: it is part of SQL text.
    pub async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database prefix {prefix:?} is not a plain identifier"
        );
        let name = format!("{prefix}_{}", crate::bench::Rng::from_clock().hex(8));
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        // `name` is made here of the checked prefix and hex digits only.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        Ok(Self {
            url: format!("{base}/{name}"),
            admin_url: admin_url.to_owned(),
            name,
        })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Whatever used the database is gone by now; drop it on a runtime of its own, so that
        // this works inside and outside an async context alike.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
