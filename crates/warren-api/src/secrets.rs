//! The tenant-scoped secret store: values sealed with the server's key (AES-256-GCM, the
//! tenant and name bound in as associated data, so a sealed value cannot be moved to another
//! row), write-only over the API, and handed to a node only as a sandbox starts with it.
//!
//! The key is `WARREN_SECRETS_KEY` (base64 of 32 bytes; control planes sharing a PostgreSQL
//! store must share it) or `secrets.key` in the data dir, made on first use (root only).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use warren_store::{SecretRecord, Store};
use warren_wire::cluster::SecretBinding;
use warren_wire::control::{EgressPolicy, NewSecret, SecretInfo};

const MAX_VALUE: usize = 64 * 1024;
const MAX_HOSTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// the caller's mistake; the message names the field
    #[error("{0}")]
    Invalid(String),
    #[error("no secret named {0:?}")]
    NotFound(String),
    #[error("a secret named {0:?} exists already")]
    Exists(String),
    /// a sealed value did not open with this server's key (another key, or a damaged row)
    #[error(
        "secret {0:?} cannot be opened with this server's key (was WARREN_SECRETS_KEY changed?)"
    )]
    Unsealable(String),
    #[error("store: {0}")]
    Store(#[from] warren_store::StoreError),
    #[error("the secrets key: {0}")]
    Key(String),
}

/// Which secret a sandbox got in which env var, and its placeholder (kept with the sandbox; no
/// value).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bound {
    env: String,
    secret: String,
    placeholder: String,
}

pub struct SecretVault {
    key: LessSafeKey,
    rng: SystemRandom,
    store: Store,
}

impl SecretVault {
    pub fn open(store: Store, data_dir: &Path) -> Result<Self, SecretError> {
        let raw = match std::env::var("WARREN_SECRETS_KEY") {
            Ok(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| SecretError::Key(format!("WARREN_SECRETS_KEY is not base64: {e}")))?,
            Err(_) => key_file(&data_dir.join("secrets.key"))?,
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| SecretError::Key("it must be 32 bytes".into()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
            store,
        })
    }

    fn seal(&self, tenant: &str, name: &str, value: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| SecretError::Key("no randomness".into()))?;
        let mut data = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(format!("{tenant}/{name}").as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretError::Key("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    fn unseal(&self, rec: &SecretRecord) -> Result<String, SecretError> {
        let bad = || SecretError::Unsealable(rec.name.clone());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&rec.sealed)
            .map_err(|_| bad())?;
        if raw.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(format!("{}/{}", rec.tenant, rec.name).as_bytes()),
                &mut data,
            )
            .map_err(|_| bad())?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad())
    }

    /// Creates or replaces a secret of `tenant`.
    pub async fn put(&self, tenant: &str, s: &NewSecret) -> Result<SecretInfo, SecretError> {
        check_name(&s.name)?;
        check_value(&s.value)?;
        if s.hosts.is_empty() || s.hosts.len() > MAX_HOSTS {
            return Err(SecretError::Invalid(format!(
                "hosts: between 1 and {MAX_HOSTS} host names the secret is sent to"
            )));
        }
        warren_egress::policy::parse_hosts(&s.hosts)
            .map_err(|e| SecretError::Invalid(format!("hosts: {e}")))?;
        let sealed = self.seal(tenant, &s.name, &s.value)?;
        let hosts =
            serde_json::to_string(&s.hosts).map_err(|e| SecretError::Invalid(e.to_string()))?;
        let rec = self
            .store
            .put_secret(tenant, &s.name, &sealed, &hosts, crate::clock::now())
            .await?;
        Ok(info(&rec))
    }

    /// E2B's create: a new secret with no hosts of its own (a sandbox's `network.rules` bind
    /// it); a name in use is refused.
    pub async fn create(
        &self,
        tenant: &str,
        name: &str,
        value: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<SecretRecord, SecretError> {
        check_name(name)?;
        check_value(value)?;
        let sealed = self.seal(tenant, name, value)?;
        let metadata =
            serde_json::to_string(metadata).map_err(|e| SecretError::Invalid(e.to_string()))?;
        self.store
            .insert_secret(tenant, name, &sealed, &metadata, crate::clock::now())
            .await?
            .ok_or_else(|| SecretError::Exists(name.to_owned()))
    }

    /// E2B's update: the secret named or numbered `reference` gets a new value (its next
    /// version) and, when given, new metadata.
    pub async fn update(
        &self,
        tenant: &str,
        reference: &str,
        value: &str,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<SecretRecord, SecretError> {
        check_value(value)?;
        let rec = self.find(tenant, reference).await?;
        let sealed = self.seal(tenant, &rec.name, value)?;
        let metadata = metadata
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| SecretError::Invalid(e.to_string()))?;
        self.store
            .update_secret(
                tenant,
                &rec.name,
                &sealed,
                metadata.as_deref(),
                crate::clock::now(),
            )
            .await?
            .ok_or_else(|| SecretError::NotFound(reference.to_owned()))
    }

    /// The secret whose id or name is `reference`.
    pub async fn find(&self, tenant: &str, reference: &str) -> Result<SecretRecord, SecretError> {
        self.store
            .find_secret(tenant, reference)
            .await?
            .ok_or_else(|| SecretError::NotFound(reference.to_owned()))
    }

    pub async fn records(&self, tenant: &str) -> Result<Vec<SecretRecord>, SecretError> {
        Ok(self.store.list_secrets(tenant).await?)
    }

    /// What a node needs for the secrets `policy`'s header rules name (`${e2b.secrets.NAME}`),
    /// each bound to the hosts of the rules naming it. A name with no such secret is the
    /// caller's mistake.
    pub async fn for_rules(
        &self,
        tenant: &str,
        policy: &EgressPolicy,
    ) -> Result<Vec<SecretBinding>, SecretError> {
        let mut hosts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (host, headers) in policy.rule_headers() {
            for (_, value) in headers {
                for name in warren_egress::policy::rule_secrets(value) {
                    let bound = hosts.entry(name).or_default();
                    if !bound.iter().any(|h| h == host) {
                        bound.push(host.to_owned());
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (name, hosts) in hosts {
            let rec = self.store.get_secret(tenant, name).await?.ok_or_else(|| {
                SecretError::Invalid(format!("network.rules: no secret named {name:?}"))
            })?;
            out.push(SecretBinding {
                name: rec.name.clone(),
                placeholder: warren_egress::policy::rule_placeholder(name),
                value: self.unseal(&rec)?,
                hosts,
                rule_only: true,
            });
        }
        Ok(out)
    }

    /// Everything a sandbox's node needs for `policy`: the secrets the sandbox was given in its
    /// environment (`rebind`) and those `policy`'s rules name.
    pub async fn bindings(
        &self,
        rec: &warren_store::SandboxRecord,
        policy: Option<&EgressPolicy>,
    ) -> Result<Vec<SecretBinding>, SecretError> {
        let mut out = self.rebind(rec).await;
        if let Some(p) = policy {
            out.extend(self.for_rules(&rec.tenant, p).await?);
        }
        Ok(out)
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<SecretInfo>, SecretError> {
        Ok(self
            .store
            .list_secrets(tenant)
            .await?
            .iter()
            .map(info)
            .collect())
    }

    pub async fn delete(&self, tenant: &str, name: &str) -> Result<(), SecretError> {
        if self.store.delete_secret(tenant, name).await? {
            Ok(())
        } else {
            Err(SecretError::NotFound(name.to_owned()))
        }
    }

    /// For a create: each env var named in `wanted` (env var → secret name) gets a fresh
    /// placeholder. Returns the env vars, what the sandbox record keeps, and what its node needs.
    pub async fn bind(
        &self,
        tenant: &str,
        wanted: &BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, String>, String, Vec<SecretBinding>), SecretError> {
        let mut env = BTreeMap::new();
        let mut kept = Vec::new();
        let mut bindings = Vec::new();
        for (var, name) in wanted {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(SecretError::Invalid(format!(
                    "secrets: {var:?} is not an environment variable name"
                )));
            }
            let rec = self.store.get_secret(tenant, name).await?.ok_or_else(|| {
                SecretError::Invalid(format!("secrets: no secret named {name:?}"))
            })?;
            if rec.hosts == "[]" {
                return Err(SecretError::Invalid(format!(
                    "secrets: secret {name:?} is bound to no host (set its hosts with \
                     POST /v1/secrets, or name it in network.rules)"
                )));
            }
            let placeholder = warren_egress::secrets::placeholder();
            bindings.push(binding(&rec, self.unseal(&rec)?, &placeholder)?);
            env.insert(var.clone(), placeholder.clone());
            kept.push(Bound {
                env: var.clone(),
                secret: name.clone(),
                placeholder,
            });
        }
        let kept = serde_json::to_string(&kept).map_err(|e| SecretError::Invalid(e.to_string()))?;
        Ok((env, kept, bindings))
    }

    /// What a sandbox's node needs again (a policy change, a restart): the secrets it was given,
    /// with their values now. A secret deleted since is left out (its placeholder stays as it is).
    pub async fn rebind(&self, rec: &warren_store::SandboxRecord) -> Vec<SecretBinding> {
        let Some(kept) = rec
            .secret_bindings
            .as_deref()
            .and_then(|j| serde_json::from_str::<Vec<Bound>>(j).ok())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for b in kept {
            let found = self.store.get_secret(&rec.tenant, &b.secret).await;
            let Ok(Some(secret)) = found else { continue };
            match self
                .unseal(&secret)
                .and_then(|v| binding(&secret, v, &b.placeholder))
            {
                Ok(binding) => out.push(binding),
                Err(e) => {
                    tracing::error!(sandbox = %rec.id, error = %e, "a secret cannot be given again")
                }
            }
        }
        out
    }
}

fn binding(
    rec: &SecretRecord,
    value: String,
    placeholder: &str,
) -> Result<SecretBinding, SecretError> {
    Ok(SecretBinding {
        name: rec.name.clone(),
        placeholder: placeholder.to_owned(),
        value,
        hosts: serde_json::from_str(&rec.hosts)
            .map_err(|_| SecretError::Unsealable(rec.name.clone()))?,
        rule_only: false,
    })
}

fn info(rec: &SecretRecord) -> SecretInfo {
    SecretInfo {
        name: rec.name.clone(),
        hosts: serde_json::from_str(&rec.hosts).unwrap_or_default(),
        created_at: crate::clock::rfc3339(rec.created_at),
        updated_at: crate::clock::rfc3339(rec.updated_at),
    }
}

fn check_value(value: &str) -> Result<(), SecretError> {
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(SecretError::Invalid(format!(
            "value: between 1 byte and {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SecretError::Invalid(
            "name: 1 to 128 letters, digits, '_' or '-'".into(),
        ))
    }
}

/// The key in `path`, made (32 random bytes, root only) when it does not exist yet.
fn key_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    if let Ok(raw) = std::fs::read(path) {
        return Ok(raw);
    }
    let mut raw = vec![0u8; 32];
    SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| SecretError::Key("no randomness".into()))?;
    warren_egress::ca::create_private(path, &raw)
        .map_err(|e| SecretError::Key(format!("write {}: {e}", path.display())))?;
    Ok(raw)
}
