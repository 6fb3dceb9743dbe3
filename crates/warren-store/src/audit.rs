//! The audit trail: who did what to which sandbox, with what outcome. Inputs are recorded as size
//! and SHA-256 only, so the trail identifies code and files without holding them (or secrets).

use sqlx::Row;

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
                 outcome, status_code, duration_ms, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT {COLUMNS} FROM audit_events WHERE (? IS NULL OR tenant = ?) \
             AND (? IS NULL OR sandbox_id = ?) AND (? IS NULL OR action = ?) AND (? IS NULL OR key_id = ?) \
             AND (? IS NULL OR at >= ?) AND (? IS NULL OR at < ?) AND seq > ? ORDER BY seq LIMIT ?"
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
            .map(|r| AuditEvent {
                seq: r.get("seq"),
                at: r.get("at"),
                tenant: r.get("tenant"),
                key_id: r.get("key_id"),
                sandbox_id: r.get("sandbox_id"),
                action: r.get("action"),
                input_bytes: r.get("input_bytes"),
                input_sha256: r.get("input_sha256"),
                outcome: r.get("outcome"),
                status_code: r.get("status_code"),
                duration_ms: r.get("duration_ms"),
                request_id: r.get("request_id"),
            })
            .collect();
        Ok((events, more))
    }

    /// Deletes events older than `before_ms`; returns how many.
    pub async fn purge_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_events WHERE at < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
