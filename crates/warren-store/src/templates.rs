use warren_core::Resources;

use crate::row::{flag, int, opt_int, opt_text, text, uint};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateStatus {
    /// Registered; its root file system is not built yet (built on first use).
    Pending,
    Building,
    Active,
    Failed,
}

impl TemplateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Building => "building",
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "building" => Self::Building,
            "active" => Self::Active,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TemplateRecord {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub language: Option<String>,
    pub resources: Resources,
    pub status: TemplateStatus,
    pub is_public: bool,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// None: shared by every tenant (built-in templates).
    pub tenant: Option<String>,
    /// For built templates: how to run them (JSON, see warren-api's `builds`).
    pub spec: Option<String>,
    pub build_started_at: Option<i64>,
    pub build_finished_at: Option<i64>,
}

const COLUMNS: &str =
    "id, name, display_name, description, category, language, vcpu, memory_mb, disk_mb, \
                       status, is_public, error_message, created_at, updated_at, tenant, spec, build_started_at, \
                       build_finished_at";

impl Store {
    /// Inserts a template, or refreshes the descriptive fields of an existing one with the same id
    /// (built-in templates are re-registered at every start; their build status is kept).
    pub async fn upsert_template(&self, t: &TemplateRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO templates (id, name, display_name, description, category, language, vcpu, memory_mb, \
             disk_mb, status, is_public, error_message, created_at, updated_at, tenant) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, display_name = excluded.display_name, \
             description = excluded.description, category = excluded.category, language = excluded.language, \
             vcpu = excluded.vcpu, memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, \
             is_public = excluded.is_public",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.display_name)
        .bind(&t.description)
        .bind(&t.category)
        .bind(&t.language)
        .bind(i64::from(t.resources.vcpu))
        .bind(i64::from(t.resources.memory_mb))
        .bind(i64::from(t.resources.disk_mb))
        .bind(t.status.as_str())
        .bind(i64::from(t.is_public))
        .bind(&t.error_message)
        .bind(t.created_at)
        .bind(t.updated_at)
        .bind(&t.tenant)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_template_status(
        &self,
        id: &str,
        status: TemplateStatus,
        error_message: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE templates SET status = $1, error_message = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(status.as_str())
        .bind(error_message)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Templates a tenant can see: the shared ones and its own.
    pub async fn list_templates(&self, tenant: &str) -> Result<Vec<TemplateRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM templates WHERE tenant IS NULL OR tenant = $1 ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(template_from_row).collect()
    }

    /// Looks a template a tenant can see up by id first, then by name (the SDKs use both).
    pub async fn find_template(
        &self,
        id_or_name: &str,
        tenant: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM templates WHERE (id = $1 OR name = $2) AND (tenant IS NULL OR tenant = $3) \
             ORDER BY (id = $4) DESC LIMIT 1"
        ))
        .bind(id_or_name)
        .bind(id_or_name)
        .bind(tenant)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    /// Records a build's start (status building) for a new or updated template.
    pub async fn begin_template_build(
        &self,
        t: &TemplateRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO templates (id, name, display_name, description, category, language, vcpu, memory_mb, \
             disk_mb, status, is_public, error_message, created_at, updated_at, tenant, spec, build_started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'building', 0, NULL, $10, $11, $12, NULL, $13) \
             ON CONFLICT(id) DO UPDATE SET status = 'building', error_message = NULL, vcpu = excluded.vcpu, \
             memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, description = excluded.description, \
             updated_at = excluded.updated_at, build_started_at = excluded.build_started_at, build_finished_at = NULL",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.display_name)
        .bind(&t.description)
        .bind(&t.category)
        .bind(&t.language)
        .bind(i64::from(t.resources.vcpu))
        .bind(i64::from(t.resources.memory_mb))
        .bind(i64::from(t.resources.disk_mb))
        .bind(now)
        .bind(now)
        .bind(&t.tenant)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a build's end: active with its spec, or failed with the reason.
    pub async fn finish_template_build(
        &self,
        id: &str,
        result: Result<&str, &str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let (status, spec, error) = match result {
            Ok(spec) => ("active", Some(spec), None),
            Err(e) => ("failed", None, Some(e)),
        };
        sqlx::query(
            "UPDATE templates SET status = $1, spec = COALESCE($2, spec), error_message = $3, \
             build_finished_at = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(spec)
        .bind(error)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Builds that were running when the server stopped can never finish.
    pub async fn fail_interrupted_builds(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE templates SET status = 'failed', error_message = 'the server stopped during the build', \
             build_finished_at = $1 WHERE status = 'building' AND tenant IS NOT NULL",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM templates WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn template_from_row(r: &sqlx::any::AnyRow) -> Result<TemplateRecord, StoreError> {
    let status = text(r, "status")?;
    Ok(TemplateRecord {
        id: text(r, "id")?,
        name: text(r, "name")?,
        display_name: text(r, "display_name")?,
        description: opt_text(r, "description")?,
        category: opt_text(r, "category")?,
        language: opt_text(r, "language")?,
        resources: Resources {
            vcpu: uint(r, "vcpu")?,
            memory_mb: uint(r, "memory_mb")?,
            disk_mb: uint(r, "disk_mb")?,
        },
        status: TemplateStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("template status {status}")))?,
        is_public: flag(r, "is_public")?,
        error_message: opt_text(r, "error_message")?,
        created_at: int(r, "created_at")?,
        updated_at: int(r, "updated_at")?,
        tenant: opt_text(r, "tenant")?,
        spec: opt_text(r, "spec")?,
        build_started_at: opt_int(r, "build_started_at")?,
        build_finished_at: opt_int(r, "build_finished_at")?,
    })
}
