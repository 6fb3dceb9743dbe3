//! `warren keys`: API keys in a data dir's store (the operator's view across all tenants; tenant
//! admins use the HTTP admin API). Works while the server runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use warren_store::{KeyEnvironment, KeyShape, KeySpec, Role, Store};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key. The key is printed once, on the last line; only its hash is stored.
    Create {
        #[arg(long, env = "WARREN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        name: String,
        /// Organization the key belongs to; its sandboxes and templates are visible only to it.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// admin (may manage keys and read the audit trail of its tenant) or member.
        #[arg(long, default_value = "admin", value_parser = ["admin", "member"])]
        role: String,
        /// live (wrn_live_…) or test (wrn_test_…): separate keys per environment.
        #[arg(long, default_value = "live", value_parser = ["live", "test"])]
        env: String,
        /// Days until the key stops working.
        #[arg(long)]
        expires_in_days: Option<i64>,
        /// warren (wrn_live_…) or e2b (e2b_… + hex: for E2B SDKs that check a key's form before
        /// sending it, e.g. the e2b 2.31 that openai-agents pins).
        #[arg(long, default_value = "warren", value_parser = ["warren", "e2b"])]
        format: String,
    },
    /// List keys (masked).
    List {
        #[arg(long, env = "WARREN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Only this organization's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id or name.
    Revoke {
        #[arg(long, env = "WARREN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        id_or_name: String,
    },
    /// Replace a key with a new one; the old one keeps working for the grace period.
    Rotate {
        #[arg(long, env = "WARREN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        id: String,
        /// Seconds the old key stays valid.
        #[arg(long, default_value_t = 86_400)]
        grace_seconds: i64,
    },
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn date(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Key operations made by the operator on the data dir are audited like the HTTP ones.
async fn audit(store: &Store, tenant: &str, key_id: &str, action: &str) -> anyhow::Result<()> {
    let at = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    store
        .append_audit(&[warren_store::AuditEvent {
            at: at as i64,
            tenant: tenant.to_owned(),
            key_id: Some(key_id.to_owned()),
            action: action.to_owned(),
            outcome: "ok (operator cli)".to_owned(),
            ..Default::default()
        }])
        .await?;
    Ok(())
}

/// The store of a data dir, or the PostgreSQL database in `WARREN_DATABASE_URL` (as `serve`).
async fn open(dir: Option<PathBuf>) -> anyhow::Result<Store> {
    let dir = super::data_dir_arg(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let url = std::env::var("WARREN_DATABASE_URL").ok();
    Store::open_url_or_dir(url.as_deref(), &dir)
        .await
        .with_context(|| match &url {
            Some(u) => format!("open store {}", warren_store::redacted(u)),
            None => format!("open store in {}", dir.display()),
        })
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            data_dir,
            name,
            tenant,
            role,
            env,
            expires_in_days,
            format,
        } => {
            if tenant.starts_with("warren:") {
                anyhow::bail!("tenant names starting with \"warren:\" are reserved for the server's own sandboxes");
            }
            let store = open(data_dir).await?;
            let spec = KeySpec {
                name: &name,
                tenant: &tenant,
                role: Role::parse(&role).context("role")?,
                environment: KeyEnvironment::parse(&env).context("env")?,
                expires_at: expires_in_days.map(|d| now() + d * 86_400),
            };
            let shape = KeyShape::parse(&format).context("format")?;
            let key = store.create_api_key_shaped(&spec, shape, now()).await?;
            audit(&store, &key.record.tenant, &key.record.id, "key.create").await?;
            println!(
                "Created {} key {} ({}) for organization {}. It is shown only now; store it safely:",
                key.record.role.as_str(),
                key.record.id,
                key.record.name,
                key.record.tenant
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { data_dir, tenant } => {
            let store = open(data_dir).await?;
            println!(
                "{:<22} {:<18} {:<12} {:<7} {:<18} {:<8} EXPIRES",
                "ID", "NAME", "TENANT", "ROLE", "KEY", "STATUS"
            );
            let t = now();
            for k in store.list_keys(tenant.as_deref()).await? {
                let status = match (k.is_valid_at(t), k.revoked_at) {
                    (true, Some(_)) => "grace",
                    (true, None) => "active",
                    (false, Some(_)) => "revoked",
                    (false, None) => "expired",
                };
                println!(
                    "{:<22} {:<18} {:<12} {:<7} {:<18} {:<8} {}",
                    k.id,
                    k.name,
                    k.tenant,
                    k.role.as_str(),
                    k.masked(),
                    status,
                    k.expires_at.map(date).unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysCommand::Revoke {
            data_dir,
            id_or_name,
        } => {
            let store = open(data_dir).await?;
            let target = store
                .list_keys(None)
                .await?
                .into_iter()
                .find(|k| k.id == id_or_name || k.name == id_or_name);
            if !store.revoke_key(&id_or_name, None, now()).await? {
                anyhow::bail!("no active key with id or name {id_or_name:?}");
            }
            if let Some(k) = target {
                audit(&store, &k.tenant, &k.id, "key.revoke").await?;
            }
            println!("revoked {id_or_name}");
        }
        KeysCommand::Rotate {
            data_dir,
            id,
            grace_seconds,
        } => {
            let store = open(data_dir).await?;
            let new = store
                .rotate_key(&id, None, grace_seconds, now())
                .await?
                .with_context(|| format!("no active key {id}"))?;
            audit(&store, &new.record.tenant, &id, "key.rotate").await?;
            println!(
                "Rotated {id}: it stays valid until {}. New key {} (shown only now):",
                date(now() + grace_seconds),
                new.record.id
            );
            println!("{}", new.secret);
        }
    }
    Ok(ExitCode::SUCCESS)
}
