//! The audit trail: who did what to which sandbox, with what outcome. Inputs are recorded as size
//! and SHA-256 only, so the trail identifies code and files without holding them (or secrets).

use crate::row::{int, opt_int, opt_text, text};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEvent {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub tenant: String,
    pub key_id: Option<String>,
    pub sandbox_id: Option<String>,
    pub action: String,
    pub input_bytes: Option<i64>,
    pub input_sha256: Option<String>,
    pub outcome: String,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub request_id: Option<String>,
}

/// Filters of an audit query; all optional except the tenant (None: every tenant).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    pub sandbox_id: Option<String>,
    pub action: Option<String>,
    pub key_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Events after this sequence number (the previous page's cursor).
    pub after: Option<i64>,
    pub limit: u32,
}

const COLUMNS: &str = "seq, at, tenant, key_id, sandbox_id, action, input_bytes, input_sha256, \
                       outcome, status_code, duration_ms, request_id";

impl Store {
    /// Appends events in one transaction (the recorder batches them).
    pub async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO audit_events (at, tenant, key_id, sandbox_id, action, input_bytes, input_sha256, \
                 outcome, status_code, duration_ms, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(e.at)
            .bind(&e.tenant)
            .bind(&e.key_id)
            .bind(&e.sandbox_id)
            .bind(&e.action)
            .bind(e.input_bytes)
            .bind(&e.input_sha256)
            .bind(&e.outcome)
            .bind(e.status_code)
            .bind(e.duration_ms)
            .bind(&e.request_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Events oldest first, and whether more follow.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<(Vec<AuditEvent>, bool), StoreError> {
        let limit = i64::from(q.limit.clamp(1, 1000));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE ($1 IS NULL OR tenant = $2) \
             AND ($3 IS NULL OR sandbox_id = $4) AND ($5 IS NULL OR action = $6) AND ($7 IS NULL OR key_id = $8) \
             AND ($9 IS NULL OR at >= $10) AND ($11 IS NULL OR at < $12) AND seq > $13 ORDER BY seq LIMIT $14"
        ))
        .bind(&q.tenant)
        .bind(&q.tenant)
        .bind(&q.sandbox_id)
        .bind(&q.sandbox_id)
        .bind(&q.action)
        .bind(&q.action)
        .bind(&q.key_id)
        .bind(&q.key_id)
        .bind(q.since_ms)
        .bind(q.since_ms)
        .bind(q.until_ms)
        .bind(q.until_ms)
        .bind(q.after.unwrap_or(0))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() as i64 > limit;
        let events = rows
            .iter()
            .take(limit as usize)
            .map(|r| {
                Ok(AuditEvent {
                    seq: int(r, "seq")?,
                    at: int(r, "at")?,
                    tenant: text(r, "tenant")?,
                    key_id: opt_text(r, "key_id")?,
                    sandbox_id: opt_text(r, "sandbox_id")?,
                    action: text(r, "action")?,
                    input_bytes: opt_int(r, "input_bytes")?,
                    input_sha256: opt_text(r, "input_sha256")?,
                    outcome: text(r, "outcome")?,
                    status_code: opt_int(r, "status_code")?,
                    duration_ms: int(r, "duration_ms")?,
                    request_id: opt_text(r, "request_id")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((events, more))
    }

    /// Deletes events older than `before_ms`; returns how many.
    pub async fn purge_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
