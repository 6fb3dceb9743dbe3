use sqlx::Row;
use warren_core::Resources;

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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        .bind(t.resources.vcpu)
        .bind(t.resources.memory_mb)
        .bind(t.resources.disk_mb)
        .bind(t.status.as_str())
        .bind(t.is_public)
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
            "UPDATE templates SET status = ?, error_message = ?, updated_at = ? WHERE id = ?",
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
            "SELECT {COLUMNS} FROM templates WHERE tenant IS NULL OR tenant = ? ORDER BY created_at, id"
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
            "SELECT {COLUMNS} FROM templates WHERE (id = ? OR name = ?) AND (tenant IS NULL OR tenant = ?) \
             ORDER BY (id = ?) DESC LIMIT 1"
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'building', 0, NULL, ?, ?, ?, NULL, ?) \
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
        .bind(t.resources.vcpu)
        .bind(t.resources.memory_mb)
        .bind(t.resources.disk_mb)
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
            "UPDATE templates SET status = ?, spec = COALESCE(?, spec), error_message = ?, \
             build_finished_at = ?, updated_at = ? WHERE id = ?",
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
             build_finished_at = ? WHERE status = 'building' AND tenant IS NOT NULL",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn delete_template(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM templates WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn template_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TemplateRecord, StoreError> {
    let status: String = r.get("status");
    Ok(TemplateRecord {
        id: r.get("id"),
        name: r.get("name"),
        display_name: r.get("display_name"),
        description: r.get("description"),
        category: r.get("category"),
        language: r.get("language"),
        resources: Resources {
            vcpu: r.get("vcpu"),
            memory_mb: r.get("memory_mb"),
            disk_mb: r.get("disk_mb"),
        },
        status: TemplateStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("template status {status}")))?,
        is_public: r.get("is_public"),
        error_message: r.get("error_message"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        tenant: r.get("tenant"),
        spec: r.get("spec"),
        build_started_at: r.get("build_started_at"),
        build_finished_at: r.get("build_finished_at"),
    })
}
