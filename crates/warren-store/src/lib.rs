//! The control plane's persistent state. SQLite is the embedded default; every query is plain SQL
//! so that a PostgreSQL backend can implement the same methods for scale-out.

mod audit;
mod keys;
mod sandboxes;
mod templates;

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use audit::{AuditEvent, AuditQuery};
pub use keys::{hash_key, ApiKeyRecord, KeyEnvironment, KeySpec, NewApiKey, Role};
pub use sandboxes::{NewSandbox, SandboxPage, SandboxRecord, TenantUsage};
pub use templates::{TemplateRecord, TemplateStatus};

/// A store operation failed
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// the database could not be opened or migrated
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// a stored row holds a value the code does not know (a newer server wrote it?)
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) `warren.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("warren.db");
        let url = format!("sqlite://{}", path.display());
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(open_err)?
            .create_if_missing(true)
            // WAL lets the reaper and request handlers read while one of them writes.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[cfg(test)]
mod tests;
