use sqlx::Row;
use warren_core::{Resources, SandboxId, SandboxStatus};

use crate::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub template_id: String,
    pub template_name: String,
    pub status: SandboxStatus,
    pub resources: Resources,
    pub internet_access: bool,
    pub timeout_seconds: Option<i64>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub key_id: Option<String>,
    pub tenant: String,
    pub isolation: String,
}

pub struct NewSandbox<'a> {
    pub id: &'a SandboxId,
    pub template_id: &'a str,
    pub template_name: &'a str,
    pub resources: Resources,
    pub internet_access: bool,
    pub timeout_seconds: Option<i64>,
    pub key_id: Option<&'a str>,
    pub tenant: &'a str,
    pub isolation: &'a str,
}

pub struct SandboxPage {
    pub items: Vec<SandboxRecord>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

const COLUMNS: &str =
    "seq, id, template_id, template_name, status, vcpu, memory_mb, disk_mb, internet_access, \
                       timeout_seconds, expires_at, created_at, key_id, tenant, isolation";

impl Store {
    pub async fn insert_sandbox(
        &self,
        s: NewSandbox<'_>,
        now: i64,
    ) -> Result<SandboxRecord, StoreError> {
        let expires_at = s.timeout_seconds.map(|t| now + t);
        sqlx::query(
            "INSERT INTO sandboxes (id, template_id, template_name, status, vcpu, memory_mb, disk_mb, \
             internet_access, timeout_seconds, expires_at, created_at, updated_at, key_id, tenant, isolation) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.as_str())
        .bind(s.template_id)
        .bind(s.template_name)
        .bind(SandboxStatus::Creating.as_str())
        .bind(s.resources.vcpu)
        .bind(s.resources.memory_mb)
        .bind(s.resources.disk_mb)
        .bind(s.internet_access)
        .bind(s.timeout_seconds)
        .bind(expires_at)
        .bind(now)
        .bind(now)
        .bind(s.key_id)
        .bind(s.tenant)
        .bind(s.isolation)
        .execute(&self.pool)
        .await?;
        Ok(SandboxRecord {
            id: s.id.clone(),
            template_id: s.template_id.to_owned(),
            template_name: s.template_name.to_owned(),
            status: SandboxStatus::Creating,
            resources: s.resources,
            internet_access: s.internet_access,
            timeout_seconds: s.timeout_seconds,
            expires_at,
            created_at: now,
            key_id: s.key_id.map(str::to_owned),
            tenant: s.tenant.to_owned(),
            isolation: s.isolation.to_owned(),
        })
    }

    pub async fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    pub async fn set_sandbox_status(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sandboxes SET status = ?, updated_at = ? WHERE id = ?")
            .bind(status.as_str())
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the sandbox to expire `timeout_seconds` from `now`.
    pub async fn set_sandbox_timeout(
        &self,
        id: &SandboxId,
        timeout_seconds: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sandboxes SET timeout_seconds = ?, expires_at = ?, updated_at = ? WHERE id = ?",
        )
        .bind(timeout_seconds)
        .bind(now + timeout_seconds)
        .bind(now)
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lists a tenant's sandboxes oldest first. Only live ones unless a status filter asks
    /// otherwise.
    pub async fn list_sandboxes(
        &self,
        tenant: &str,
        status: Option<SandboxStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<SandboxPage, StoreError> {
        let after: i64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit = i64::from(limit.clamp(1, 1000));
        let rows = match status {
            Some(s) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM sandboxes WHERE tenant = ? AND status = ? AND seq > ? ORDER BY seq LIMIT ?"
                ))
                .bind(tenant)
                .bind(s.as_str())
                .bind(after)
                .bind(limit + 1)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM sandboxes WHERE tenant = ? AND status IN ('creating','running','paused') \
                     AND seq > ? ORDER BY seq LIMIT ?"
                ))
                .bind(tenant)
                .bind(after)
                .bind(limit + 1)
                .fetch_all(&self.pool)
                .await?
            }
        };
        let more = rows.len() as i64 > limit;
        let page = &rows[..rows.len().min(limit as usize)];
        let next_cursor = if more {
            page.last().map(|r| r.get::<i64, _>("seq").to_string())
        } else {
            None
        };
        let items = page
            .iter()
            .map(sandbox_from_row)
            .collect::<Result<_, _>>()?;
        Ok(SandboxPage { items, next_cursor })
    }

    /// Every sandbox whose processes may exist: what a restart must clean up.
    pub async fn live_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE status IN ('creating','running','paused') ORDER BY seq"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    /// Live sandboxes whose `expires_at` is at or before `now`.
    pub async fn expired_sandboxes(&self, now: i64) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE status IN ('creating','running','paused') \
             AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    /// The earliest `expires_at` among live sandboxes, so the reaper can sleep until then.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(expires_at) AS next FROM sandboxes WHERE status IN ('creating','running','paused')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get("next"))
    }
}

fn sandbox_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<SandboxRecord, StoreError> {
    let id: String = r.get("id");
    let status: String = r.get("status");
    Ok(SandboxRecord {
        id: SandboxId::parse(&id).map_err(|_| StoreError::Corrupt(format!("sandbox id {id}")))?,
        template_id: r.get("template_id"),
        template_name: r.get("template_name"),
        status: SandboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("sandbox status {status}")))?,
        resources: Resources {
            vcpu: r.get("vcpu"),
            memory_mb: r.get("memory_mb"),
            disk_mb: r.get("disk_mb"),
        },
        internet_access: r.get("internet_access"),
        timeout_seconds: r.get("timeout_seconds"),
        expires_at: r.get("expires_at"),
        created_at: r.get("created_at"),
        key_id: r.get("key_id"),
        tenant: r.get("tenant"),
        isolation: r.get("isolation"),
    })
}

impl Store {
    /// Live sandboxes of a tenant and the resources they hold: what quotas are checked against.
    pub async fn tenant_usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(vcpu), 0) AS vcpu, COALESCE(SUM(memory_mb), 0) AS mem \
             FROM sandboxes WHERE tenant = ? AND status IN ('creating','running','paused')",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?;
        Ok(TenantUsage {
            sandboxes: row.get::<i64, _>("n") as u64,
            vcpu: row.get::<i64, _>("vcpu") as u64,
            memory_mb: row.get::<i64, _>("mem") as u64,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    pub sandboxes: u64,
    pub vcpu: u64,
    pub memory_mb: u64,
}
