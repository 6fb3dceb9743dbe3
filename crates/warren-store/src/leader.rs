//! Periodic jobs (the expiry reaper, audit retention, node health) that must run on exactly one
//! control plane at a time. On PostgreSQL the one holding a session advisory lock runs them; the
//! lock goes with its connection, so when that control plane dies another takes over within a
//! retry. SQLite serves one control plane, which always leads.

use sqlx::AnyConnection;
use sqlx::Row;

use crate::{Backend, Store, StoreError};

/// The advisory lock key of the periodic jobs ("warren" in ASCII).
const JOBS_LOCK: i64 = 0x7761_7272_656e;

/// Held while this control plane runs the periodic jobs.
pub struct Leadership {
    /// The connection holding the lock (PostgreSQL), out of the pool: dropping it closes it,
    /// which lets the lock go. None for SQLite.
    conn: Option<AnyConnection>,
}

impl Store {
    /// Takes the lead of the periodic jobs if no other control plane holds it.
    pub async fn try_lead(&self) -> Result<Option<Leadership>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(Leadership { conn: None }));
        }
        let mut conn = self.pool.acquire().await?.detach();
        let row = sqlx::query("SELECT CAST(pg_try_advisory_lock($1) AS INTEGER) AS got")
            .bind(JOBS_LOCK)
            .fetch_one(&mut conn)
            .await?;
        let got: i32 = row.try_get("got")?;
        Ok((got == 1).then_some(Leadership { conn: Some(conn) }))
    }
}

impl Leadership {
    /// Whether the lead is still held (its connection alive).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(conn).await.is_ok(),
        }
    }
}
