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

    /// Removes the record unless a sandbox that has not ended mounts the volume, in one
    /// statement, so that a create recording its mounts and a delete cannot both succeed.
    pub async fn delete_volume(&self, tenant: &str, id: &str) -> Result<VolumeDeleted, StoreError> {
        let done = sqlx::query(&format!(
            "DELETE FROM volumes WHERE tenant = $1 AND id = $2 AND NOT EXISTS ({MOUNTED_BY_LIVE})"
        ))
        .bind(tenant)
        .bind(id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(VolumeDeleted::Deleted);
        }
        Ok(match self.find_volume(tenant, id).await? {
            Some(_) => VolumeDeleted::InUse(self.sandboxes_mounting(id).await?),
            None => VolumeDeleted::NotFound,
        })
    }

    /// The sandboxes that have not ended and mount this volume.
    pub async fn sandboxes_mounting(&self, volume_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT sv.sandbox_id FROM sandbox_volumes sv \
             JOIN sandboxes s ON s.id = sv.sandbox_id \
             WHERE sv.volume_id = $1 AND s.status IN ('creating','running','paused') \
             ORDER BY sv.sandbox_id",
        )
        .bind(volume_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| text(r, "sandbox_id")).collect()
    }

    /// Records where a sandbox mounts its volumes.
    pub async fn record_mounts(
        &self,
        sandbox_id: &str,
        mounts: &[MountRecord],
    ) -> Result<(), StoreError> {
        for m in mounts {
            sqlx::query(
                "INSERT INTO sandbox_volumes (sandbox_id, volume_id, path, read_only) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(sandbox_id)
            .bind(&m.volume_id)
            .bind(&m.path)
            .bind(i64::from(m.read_only))
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Where a sandbox mounts volumes, by path; a volume deleted since (after the sandbox
    /// ended) has no name.
    pub async fn mounts_of(&self, sandbox_id: &str) -> Result<Vec<MountRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT sv.volume_id, v.name, sv.path, sv.read_only FROM sandbox_volumes sv \
             LEFT JOIN volumes v ON v.id = sv.volume_id WHERE sv.sandbox_id = $1 ORDER BY sv.path",
        )
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MountRecord {
                    volume_id: text(r, "volume_id")?,
                    name: crate::row::opt_text(r, "name")?,
                    path: text(r, "path")?,
                    read_only: int(r, "read_only")? != 0,
                })
            })
            .collect()
    }
}

/// A volume mounted by a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    pub volume_id: String,
    /// The volume's name; None once the volume is deleted.
    pub name: Option<String>,
    pub path: String,
    pub read_only: bool,
}

/// What `delete_volume` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeDeleted {
    Deleted,
    NotFound,
    /// Mounted by these sandboxes, which have not ended.
    InUse(Vec<String>),
}

/// Whether a sandbox that has not ended mounts volume `$3`.
const MOUNTED_BY_LIVE: &str =
    "SELECT 1 FROM sandbox_volumes sv JOIN sandboxes s ON s.id = sv.sandbox_id \
     WHERE sv.volume_id = $3 AND s.status IN ('creating','running','paused')";
