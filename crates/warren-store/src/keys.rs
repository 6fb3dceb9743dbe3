use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::row::{int, opt_int, text};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// Separate keys for separate environments; the environment is also the key's visible prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEnvironment {
    Live,
    Test,
}

impl KeyEnvironment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Self::Live),
            "test" => Some(Self::Test),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Live => "wrn_live_",
            Self::Test => "wrn_test_",
        }
    }
}

/// How a key's text looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyShape {
    /// `wrn_live_`/`wrn_test_` + hex: the environment is visible in the key.
    #[default]
    Warren,
    /// `e2b_` + hex: the form older E2B SDKs check before they send a key (openai-agents' pinned
    /// e2b 2.31.0 among them). Its environment is recorded, not visible.
    E2b,
}

impl KeyShape {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "warren" => Some(Self::Warren),
            "e2b" => Some(Self::E2b),
            _ => None,
        }
    }

    fn label(self, environment: KeyEnvironment) -> &'static str {
        match self {
            Self::Warren => environment.prefix(),
            Self::E2b => "e2b_",
        }
    }

    /// The shape of a key whose listing prefix is `prefix`.
    fn of_prefix(prefix: &str) -> Self {
        if prefix.starts_with(Self::E2b.label(KeyEnvironment::Live)) {
            Self::E2b
        } else {
            Self::Warren
        }
    }
}

/// A stored key, without the secret (only its hash is kept).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// The first characters of the key, enough to tell keys apart in a listing.
    pub prefix: String,
    pub tenant: String,
    pub role: Role,
    pub environment: KeyEnvironment,
    pub created_at: i64,
    /// In the future: a rotation grace period (still valid until then).
    pub revoked_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl ApiKeyRecord {
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.revoked_at.is_none_or(|t| t > now) && self.expires_at.is_none_or(|t| t > now)
    }

    /// `wrn_live_ab12…` — what listings show instead of the key.
    pub fn masked(&self) -> String {
        format!("{}…", self.prefix)
    }
}

/// What a new key is for.
pub struct KeySpec<'a> {
    pub name: &'a str,
    pub tenant: &'a str,
    pub role: Role,
    pub environment: KeyEnvironment,
    pub expires_at: Option<i64>,
}

/// A key just created: the only moment its plaintext exists.
pub struct NewApiKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// How many random characters of a key are kept in clear for listings, after its fixed label
/// (`wrn_live_`, `e2b_`): far too few to help an attacker.
const SHOWN_RANDOM: usize = 4;

fn shown_prefix(secret: &str) -> String {
    let labels = [
        KeyShape::Warren.label(KeyEnvironment::Live),
        KeyShape::Warren.label(KeyEnvironment::Test),
        KeyShape::E2b.label(KeyEnvironment::Live),
    ];
    let label = labels
        .iter()
        .find(|l| secret.starts_with(**l))
        .map_or(0, |l| l.len());
    secret.chars().take(label + SHOWN_RANDOM).collect()
}

const COLUMNS: &str =
    "id, name, prefix, tenant, role, environment, created_at, revoked_at, expires_at";

impl Store {
    /// Creates a new random key: `wrn_live_`/`wrn_test_` + 256 bits of hex.
    pub async fn create_api_key(
        &self,
        spec: &KeySpec<'_>,
        now: i64,
    ) -> Result<NewApiKey, StoreError> {
        self.create_api_key_shaped(spec, KeyShape::Warren, now)
            .await
    }

    /// Creates a new random key of `shape`: its label + 256 bits of hex.
    pub async fn create_api_key_shaped(
        &self,
        spec: &KeySpec<'_>,
        shape: KeyShape,
        now: i64,
    ) -> Result<NewApiKey, StoreError> {
        let secret = format!("{}{}", shape.label(spec.environment), random_hex(32));
        let record = self.insert_key(spec, &secret, now).await?;
        Ok(NewApiKey { record, secret })
    }

    /// Makes sure `secret` is an accepted key (used for `WARREN_API_KEY`); stores only its hash.
    pub async fn ensure_api_key(
        &self,
        spec: &KeySpec<'_>,
        secret: &str,
        now: i64,
    ) -> Result<ApiKeyRecord, StoreError> {
        if let Some(existing) = self.find_key(secret, now).await? {
            return Ok(existing);
        }
        match self.insert_key(spec, secret, now).await {
            Ok(k) => Ok(k),
            // Another control plane on the same store registered it at the same moment.
            Err(e) => self.find_key(secret, now).await?.ok_or(e),
        }
    }

    async fn insert_key(
        &self,
        spec: &KeySpec<'_>,
        secret: &str,
        now: i64,
    ) -> Result<ApiKeyRecord, StoreError> {
        let record = ApiKeyRecord {
            id: format!("key_{}", random_hex(8)),
            name: spec.name.to_owned(),
            prefix: shown_prefix(secret),
            tenant: spec.tenant.to_owned(),
            role: spec.role,
            environment: spec.environment,
            created_at: now,
            revoked_at: None,
            expires_at: spec.expires_at,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, created_at, tenant, role, environment, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.prefix)
        .bind(hash_key(secret))
        .bind(now)
        .bind(&record.tenant)
        .bind(record.role.as_str())
        .bind(record.environment.as_str())
        .bind(record.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(record)
    }

    /// The key whose hash matches `secret`, if it is valid at `now`.
    pub async fn find_key(
        &self,
        secret: &str,
        now: i64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE hash = $1"))
            .bind(hash_key(secret))
            .fetch_optional(&self.pool)
            .await?;
        let key = row.as_ref().map(key_from_row).transpose()?;
        Ok(key.filter(|k| k.is_valid_at(now)))
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Keys of one tenant, or of all tenants.
    pub async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE ($1 IS NULL OR tenant = $2) ORDER BY created_at, id"
        ))
        .bind(tenant)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key (by id, or by name within the scope) at `at` (now, or later for a grace
    /// period). Only keys of `tenant` when one is given. Returns whether a key was revoked.
    pub async fn revoke_key(
        &self,
        id_or_name: &str,
        tenant: Option<&str>,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR name = $3) \
             AND (revoked_at IS NULL OR revoked_at > $4) AND ($5 IS NULL OR tenant = $6)",
        )
        .bind(at)
        .bind(id_or_name)
        .bind(id_or_name)
        .bind(at)
        .bind(tenant)
        .bind(tenant)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces key `id` with a new one of the same name, tenant, role, environment and shape; the old
    /// key keeps working for `grace_seconds`, so clients can switch without downtime.
    pub async fn rotate_key(
        &self,
        id: &str,
        tenant: Option<&str>,
        grace_seconds: i64,
        now: i64,
    ) -> Result<Option<NewApiKey>, StoreError> {
        let Some(old) = self.get_key(id).await? else {
            return Ok(None);
        };
        if tenant.is_some_and(|t| t != old.tenant) || !old.is_valid_at(now) {
            return Ok(None);
        }
        let new = self
            .create_api_key_shaped(
                &KeySpec {
                    name: &old.name,
                    tenant: &old.tenant,
                    role: old.role,
                    environment: old.environment,
                    expires_at: old.expires_at,
                },
                KeyShape::of_prefix(&old.prefix),
                now,
            )
            .await?;
        self.revoke_key(&old.id, None, now + grace_seconds.max(0))
            .await?;
        Ok(Some(new))
    }
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<ApiKeyRecord, StoreError> {
    let role = text(r, "role")?;
    let env = text(r, "environment")?;
    Ok(ApiKeyRecord {
        id: text(r, "id")?,
        name: text(r, "name")?,
        prefix: text(r, "prefix")?,
        tenant: text(r, "tenant")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("key role {role}")))?,
        environment: KeyEnvironment::parse(&env)
            .ok_or_else(|| StoreError::Corrupt(format!("key environment {env}")))?,
        created_at: int(r, "created_at")?,
        revoked_at: opt_int(r, "revoked_at")?,
        expires_at: opt_int(r, "expires_at")?,
    })
}
