//! Idempotency keys of sandbox creates (`Idempotency-Key`): the first request with a key claims
//! it, and a retry finds the sandbox it made, or waits while it is being made.

use crate::row::{opt_text, text};
use crate::{Store, StoreError};

/// What a claim of a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key was free: this request makes the sandbox.
    Claimed,
    /// An earlier request holds the key.
    Taken {
        request_sha256: String,
        /// None while that request is still making its sandbox.
        sandbox_id: Option<String>,
    },
}

impl Store {
    /// Claims `key` for a request whose digest is `request_sha256`. A key older than
    /// `expired_before` is free again.
    pub async fn claim_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
        request_sha256: &str,
        now: i64,
        expired_before: i64,
    ) -> Result<KeyClaim, StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant = $1 AND idem_key = $2 AND created_at < $3",
        )
        .bind(tenant)
        .bind(key)
        .bind(expired_before)
        .execute(&self.pool)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (tenant, idem_key, request_sha256, sandbox_id, created_at) \
             VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (tenant, idem_key) DO NOTHING",
        )
        .bind(tenant)
        .bind(key)
        .bind(request_sha256)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(KeyClaim::Claimed);
        }
        let row = sqlx::query(
            "SELECT request_sha256, sandbox_id FROM idempotency_keys \
             WHERE tenant = $1 AND idem_key = $2",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(KeyClaim::Taken {
                request_sha256: text(&r, "request_sha256")?,
                sandbox_id: opt_text(&r, "sandbox_id")?,
            }),
            // Released between the insert and the read: the caller asks again.
            None => Ok(KeyClaim::Taken {
                request_sha256: request_sha256.to_owned(),
                sandbox_id: None,
            }),
        }
    }

    /// Records the sandbox the claiming request made.
    pub async fn finish_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
        sandbox_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET sandbox_id = $1 WHERE tenant = $2 AND idem_key = $3",
        )
        .bind(sandbox_id)
        .bind(tenant)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees a key whose request failed: a retry makes a sandbox afresh.
    pub async fn release_idempotency_key(&self, tenant: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE tenant = $1 AND idem_key = $2")
            .bind(tenant)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets keys older than `before`.
    pub async fn remove_idempotency_keys_before(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
