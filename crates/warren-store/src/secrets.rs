//! Secrets brokered on the host. The store keeps only what the server sealed (see warren-api's
//! `secrets`): a value never reaches this table in clear.

use crate::row::{int, text};
use crate::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct SecretRecord {
    pub tenant: String,
    pub name: String,
    /// The value sealed with the server's key (opaque here).
    pub sealed: String,
    /// JSON array of the host patterns it is bound to.
    pub hosts: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub id: String,
    /// Counted up by every new value.
    pub version: i64,
    /// Customer metadata (JSON object).
    pub metadata: String,
}

const COLUMNS: &str = "tenant, name, sealed, hosts, created_at, updated_at, id, version, metadata";

fn record(r: &sqlx::any::AnyRow) -> Result<SecretRecord, StoreError> {
    Ok(SecretRecord {
        tenant: text(r, "tenant")?,
        name: text(r, "name")?,
        sealed: text(r, "sealed")?,
        hosts: text(r, "hosts")?,
        created_at: int(r, "created_at")?,
        updated_at: int(r, "updated_at")?,
        id: text(r, "id")?,
        version: int(r, "version")?,
        metadata: text(r, "metadata")?,
    })
}

impl Store {
    /// Creates the secret (E2B's create: no hosts yet, rules bind it); None when the tenant has
    /// one of that name already.
    pub async fn insert_secret(
        &self,
        tenant: &str,
        name: &str,
        sealed: &str,
        metadata: &str,
        now: i64,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let done = sqlx::query(
            "INSERT INTO secrets (tenant, name, sealed, hosts, created_at, updated_at, id, metadata) \
             VALUES ($1, $2, $3, '[]', $4, $5, $6, $7) ON CONFLICT (tenant, name) DO NOTHING",
        )
        .bind(tenant)
        .bind(name)
        .bind(sealed)
        .bind(now)
        .bind(now)
        .bind(crate::keys::random_hex(16))
        .bind(metadata)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_secret(tenant, name).await
    }

    /// A new value (and, when given, new metadata) for the secret `name`: its next version.
    pub async fn update_secret(
        &self,
        tenant: &str,
        name: &str,
        sealed: &str,
        metadata: Option<&str>,
        now: i64,
    ) -> Result<Option<SecretRecord>, StoreError> {
        sqlx::query(
            "UPDATE secrets SET sealed = $1, metadata = COALESCE($2, metadata), \
             version = version + 1, updated_at = $3 WHERE tenant = $4 AND name = $5",
        )
        .bind(sealed)
        .bind(metadata)
        .bind(now)
        .bind(tenant)
        .bind(name)
        .execute(&self.pool)
        .await?;
        self.get_secret(tenant, name).await
    }

    /// The secret whose id or name is `reference` (E2B's paths take either).
    pub async fn find_secret(
        &self,
        tenant: &str,
        reference: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM secrets WHERE tenant = $1 AND (id = $2 OR name = $3)"
        ))
        .bind(tenant)
        .bind(reference)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// Creates the secret, or replaces its value and hosts (a rotation); returns it.
    pub async fn put_secret(
        &self,
        tenant: &str,
        name: &str,
        sealed: &str,
        hosts: &str,
        now: i64,
    ) -> Result<SecretRecord, StoreError> {
        sqlx::query(
            "INSERT INTO secrets (tenant, name, sealed, hosts, created_at, updated_at, id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant, name) DO UPDATE SET sealed = $8, hosts = $9, updated_at = $10, \
             version = secrets.version + 1",
        )
        .bind(tenant)
        .bind(name)
        .bind(sealed)
        .bind(hosts)
        .bind(now)
        .bind(now)
        .bind(crate::keys::random_hex(16))
        .bind(sealed)
        .bind(hosts)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get_secret(tenant, name)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a secret just written is missing".into()))
    }

    pub async fn get_secret(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM secrets WHERE tenant = $1 AND name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    pub async fn list_secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM secrets WHERE tenant = $1 ORDER BY name"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// Whether there was such a secret.
    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM secrets WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
