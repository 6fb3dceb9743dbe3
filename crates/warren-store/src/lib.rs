//! The control plane's persistent state: sandboxes (with what a restarted server needs to take
//! them over), templates, hashed API keys with tenants and roles, the audit trail.
//!
//! Two backends behind the one `Store`: embedded SQLite (the default, a file in the data dir)
//! and PostgreSQL (`postgres://…`, for several control planes and scale-out), each with its own
//! migrations. Every query is written once, with `$n` placeholders both accept, through sqlx's
//! `Any` driver. So that one text serves both, values are kept to the types both share: 64-bit
//! integers (booleans as 0/1), text, and NULL.

mod audit;
mod idempotency;
mod keys;
mod leader;
mod nodes;
mod release;
mod row;
mod sandboxes;
mod secrets;
mod snapshots;
mod templates;
mod volumes;

use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use audit::{AuditEvent, AuditQuery};
pub use idempotency::KeyClaim;
pub use keys::{hash_key, ApiKeyRecord, KeyEnvironment, KeyShape, KeySpec, NewApiKey, Role};
pub use leader::Leadership;
pub use nodes::NodeRecord;
pub use release::{known_schema, RELEASE};
pub use sandboxes::{
    ClaimPooled, NewSandbox, OnTimeout, Quota, SandboxPage, SandboxRecord, TenantUsage,
};
pub use secrets::SecretRecord;
pub use snapshots::SnapshotRecord;
pub use templates::{TemplateRecord, TemplateStatus};
pub use volumes::{MountRecord, VolumeDeleted, VolumeRecord};

/// A store operation failed
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// the database could not be opened or migrated
    #[error("cannot open database {location}: {source}")]
    Open {
        location: String,
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// the store was migrated by a newer release than this one (a downgrade)
    #[error(
        "the store at {location} was last opened by Warren {} (store schema {found}), newer than \
         this Warren {} (store schema {known}): downgrades are not supported; run that release \
         or a later one, or restore the data from a backup taken before the upgrade",
        written_by.as_deref().unwrap_or("(a newer release)"),
        release::RELEASE
    )]
    NewerRelease {
        location: String,
        written_by: Option<String>,
        found: i64,
        known: i64,
    },
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// a stored row holds a value the code does not know (a newer server wrote it?)
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// the database URL names a system this store does not speak
    #[error("unsupported database URL {0:?}: use postgres://… (or leave it out for SQLite in the data dir)")]
    Unsupported(String),
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Connections per control plane. SQLite runs one writer at a time anyway, and a second
/// connection's writer waits in SQLite's busy handler, which sleeps (1, 2, 5, 10… ms) between
/// tries: under a burst of creates those sleeps were most of a create's time. One connection
/// queues statements in order instead (each takes tens of microseconds; no store method holds
/// the connection while it awaits anything else). PostgreSQL is shared by several control
/// planes, each holding this many.
const SQLITE_CONNECTIONS: u32 = 1;
const POSTGRES_CONNECTIONS: u32 = 16;

impl Store {
    /// Opens (creating if needed) `warren.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("warren.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect_as(&url, Backend::Sqlite, &path.display().to_string()).await
    }

    /// Opens the store at `database_url` (`postgres://…`), or SQLite in `data_dir` without one.
    pub async fn open_url_or_dir(
        database_url: Option<&str>,
        data_dir: &Path,
    ) -> Result<Self, StoreError> {
        match database_url.filter(|u| !u.is_empty()) {
            None => Self::open(data_dir).await,
            Some(url) => Self::connect(url).await,
        }
    }

    /// Connects to a PostgreSQL database (`postgres://` or `postgresql://`) and applies
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Unsupported(redacted(url)));
        }
        Self::connect_as(url, Backend::Postgres, &redacted(url)).await
    }

    async fn connect_as(url: &str, backend: Backend, location: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let open_err = |source| StoreError::Open {
            location: location.to_owned(),
            source,
        };
        let options = match backend {
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(SQLITE_CONNECTIONS)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL lets the reaper and request handlers read while one of them writes.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(POSTGRES_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(10)),
        };
        let pool = options.connect(url).await.map_err(open_err)?;
        release::migrate(&pool, backend, location).await?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// A database URL fit for logs and errors: the password replaced.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod test_postgres;
#[cfg(test)]
mod tests;
