use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Store, StoreError};

/// A stored key, without the secret (only its hash is kept).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A key just created: the only moment its plaintext exists.
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// How many characters of a key are kept in clear for listings: the fixed `wrn_live_` label
/// plus four random characters, far too few to help an attacker.
const SHOWN_PREFIX: usize = 13;

impl Store {
    /// Creates a new random key: `wrn_live_` + 256 bits of hex.
    pub async fn create_api_key(&self, name: &str, now: i64) -> Result<NewApiKey, StoreError> {
        let secret = format!("wrn_live_{}", random_hex(32));
        let record = self.insert_key(name, &secret, now).await?;
        Ok(NewApiKey { record, secret })
    }

    /// Makes sure `secret` is an accepted key (used for `WARREN_API_KEY`); stores only its hash.
    pub async fn ensure_api_key(
        &self,
        name: &str,
        secret: &str,
        now: i64,
    ) -> Result<ApiKeyRecord, StoreError> {
        if let Some(existing) = self.find_key(secret).await? {
            return Ok(existing);
        }
        self.insert_key(name, secret, now).await
    }

    async fn insert_key(
        &self,
        name: &str,
        secret: &str,
        now: i64,
    ) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            id: format!("key_{}", random_hex(8)),
            name: name.to_owned(),
            prefix: secret.chars().take(SHOWN_PREFIX).collect(),
            created_at: now,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.prefix)
        .bind(hash_key(secret))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    /// The active key whose hash matches `secret`, if any.
    pub async fn find_key(&self, secret: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, prefix, created_at, revoked_at FROM api_keys WHERE hash = ? AND revoked_at IS NULL",
        )
        .bind(hash_key(secret))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| key_from_row(&r)))
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, prefix, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    /// Revokes a key by id or by name. Returns whether a key was revoked.
    pub async fn revoke_key(&self, id_or_name: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id_or_name)
        .bind(id_or_name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn key_from_row(r: &sqlx::sqlite::SqliteRow) -> ApiKeyRecord {
    ApiKeyRecord {
        id: r.get("id"),
        name: r.get("name"),
        prefix: r.get("prefix"),
        created_at: r.get("created_at"),
        revoked_at: r.get("revoked_at"),
    }
}
