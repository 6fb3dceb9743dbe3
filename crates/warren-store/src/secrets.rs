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
}

const COLUMNS: &str = "tenant, name, sealed, hosts, created_at, updated_at";

fn record(r: &sqlx::any::AnyRow) -> Result<SecretRecord, StoreError> {
    Ok(SecretRecord {
        tenant: text(r, "tenant")?,
        name: text(r, "name")?,
        sealed: text(r, "sealed")?,
        hosts: text(r, "hosts")?,
        created_at: int(r, "created_at")?,
        updated_at: int(r, "updated_at")?,
    })
}

impl Store {
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
            "INSERT INTO secrets (tenant, name, sealed, hosts, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant, name) DO UPDATE SET sealed = $7, hosts = $8, updated_at = $9",
        )
        .bind(tenant)
        .bind(name)
        .bind(sealed)
        .bind(hosts)
        .bind(now)
        .bind(now)
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
