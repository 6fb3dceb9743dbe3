//! Persistent volumes: one row per volume, unique by name within a tenant. The files are the
//! volume backend's (warren-api's `volumes`).

use crate::row::{int, text};
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub quota_bytes: i64,
    pub created_at: i64,
}

const COLUMNS: &str = "id, tenant, name, quota_bytes, created_at";

fn record(r: &sqlx::any::AnyRow) -> Result<VolumeRecord, StoreError> {
    Ok(VolumeRecord {
        id: text(r, "id")?,
        tenant: text(r, "tenant")?,
        name: text(r, "name")?,
        quota_bytes: int(r, "quota_bytes")?,
        created_at: int(r, "created_at")?,
    })
}

impl Store {
    /// Records a new volume; false when the tenant has one of that name already.
    pub async fn insert_volume(&self, v: &VolumeRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO volumes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant, name) DO NOTHING"
        ))
        .bind(&v.id)
        .bind(&v.tenant)
        .bind(&v.name)
        .bind(v.quota_bytes)
        .bind(v.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The tenant's volumes, oldest first.
    pub async fn list_volumes(&self, tenant: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volumes WHERE tenant = $1 ORDER BY created_at, name"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// The tenant's volume with this id, or else this name.
    pub async fn find_volume(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<Option<VolumeRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volumes WHERE tenant = $1 AND (id = $2 OR name = $3) \
             ORDER BY (id = $4) DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(id_or_name)
        .bind(id_or_name)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// A volume by its id alone (ids are unique across tenants): what a volume token names.
    pub async fn volume_by_id(&self, id: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM volumes WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Removes the record; false when there was none.
    pub async fn delete_volume(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM volumes WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
