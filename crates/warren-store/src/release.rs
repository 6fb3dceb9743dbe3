//! Which release may open a store. Migrations only go forward: a store that a newer release
//! migrated holds tables and rows an older one would misread, so an older release refuses to
//! start on it (before touching it) and names the release that wrote it. Every open records
//! this release as the last one.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::migrate::Migrator;
use sqlx::AnyPool;

use crate::{Backend, StoreError};

/// This build's release (the workspace version), as recorded in the store.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// The newest store schema this build knows (its last migration's number).
pub fn known_schema(backend: Backend) -> i64 {
    migrator(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Refuses a store migrated past this build's migrations, then migrates it forward and records
/// this release as the last to open it.
pub(crate) async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    location: &str,
) -> Result<(), StoreError> {
    let known = known_schema(backend);
    if let Some(found) = applied_schema(pool, backend).await? {
        if found > known {
            return Err(StoreError::NewerRelease {
                location: location.to_owned(),
                written_by: last_release(pool).await,
                found,
                known,
            });
        }
    }
    migrator(backend).run(pool).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    sqlx::query(
        "INSERT INTO store_release (id, version, schema_version, opened_at) VALUES (1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
         schema_version = excluded.schema_version, opened_at = excluded.opened_at",
    )
    .bind(RELEASE)
    .bind(known)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// The newest migration applied to the store, or None for a new one.
async fn applied_schema(pool: &AnyPool, backend: Backend) -> Result<Option<i64>, StoreError> {
    let exists = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
    };
    let (count,): (i64,) = sqlx::query_as(exists).fetch_one(pool).await?;
    if count == 0 {
        return Ok(None);
    }
    let (max,): (Option<i64>,) = sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?;
    Ok(max)
}

/// The release recorded by the last open, if the store has that record (0.1.0 did not write it).
pub(crate) async fn last_release(pool: &AnyPool) -> Option<String> {
    sqlx::query_as::<_, (String,)>("SELECT version FROM store_release WHERE id = 1")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
        .map(|(v,)| v)
}
