//! Snapshots of running sandboxes: a read-only layer on disk (`layer_dir`) and the spec that runs
//! it on top of its template's layers. A tenant's own; copies are sandboxes whose `snapshot_id`
//! names it.

use warren_core::Tier;

use crate::row::{flag, int, opt_text, text, tier};
use crate::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    pub id: String,
    pub tenant: String,
    pub source_sandbox_id: String,
    pub template_id: String,
    pub template_name: String,
    pub isolation: Tier,
    /// How to run a copy (JSON of the control plane's template spec).
    pub spec: String,
    pub layer_dir: String,
    pub size_bytes: i64,
    pub created_at: i64,
    /// The name given when it was taken (E2B's `name`), if any.
    pub name: Option<String>,
    /// A fork's own snapshot: removed once no copy runs from it (`ephemeral_unused`).
    pub ephemeral: bool,
}

const COLUMNS: &str = "id, tenant, source_sandbox_id, template_id, template_name, isolation, \
                       spec, layer_dir, size_bytes, created_at, name, ephemeral";

impl Store {
    pub async fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO snapshots (id, tenant, source_sandbox_id, template_id, template_name, \
             isolation, spec, layer_dir, size_bytes, created_at, name, ephemeral) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.source_sandbox_id)
        .bind(&s.template_id)
        .bind(&s.template_name)
        .bind(s.isolation.as_str())
        .bind(&s.spec)
        .bind(&s.layer_dir)
        .bind(s.size_bytes)
        .bind(s.created_at)
        .bind(&s.name)
        .bind(i64::from(s.ephemeral))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The snapshot if it belongs to `tenant` (another tenant's is not found, like a missing one).
    pub async fn get_snapshot(
        &self,
        id: &str,
        tenant: &str,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE id = $1 AND tenant = $2"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    /// A tenant's snapshots, oldest first.
    pub async fn list_snapshots(&self, tenant: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE tenant = $1 ORDER BY created_at, id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM snapshots WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Fork snapshots (of every tenant) no live sandbox runs from, taken before `before` (a fork
    /// starts its copies after taking its snapshot: a fresh one is not unused yet).
    pub async fn ephemeral_unused(&self, before: i64) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots s WHERE ephemeral = 1 AND created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM sandboxes WHERE snapshot_id = s.id \
             AND status IN ('creating','running','paused'))"
        ))
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// How many live sandboxes run from the snapshot (they have its layer mounted).
    pub async fn snapshot_users(&self, id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sandboxes WHERE snapshot_id = $1 \
             AND status IN ('creating','running','paused')",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        int(&row, "n")
    }
}

fn snapshot_from_row(r: &sqlx::any::AnyRow) -> Result<SnapshotRecord, StoreError> {
    Ok(SnapshotRecord {
        id: text(r, "id")?,
        tenant: text(r, "tenant")?,
        source_sandbox_id: text(r, "source_sandbox_id")?,
        template_id: text(r, "template_id")?,
        template_name: text(r, "template_name")?,
        isolation: tier(r, "isolation")?,
        spec: text(r, "spec")?,
        layer_dir: text(r, "layer_dir")?,
        size_bytes: int(r, "size_bytes")?,
        created_at: int(r, "created_at")?,
        name: opt_text(r, "name")?,
        ephemeral: flag(r, "ephemeral")?,
    })
}
