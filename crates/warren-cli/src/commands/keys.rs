use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use warren_store::Store;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key. The key is printed once, on the last line; only its hash is stored.
    Create {
        #[arg(long, env = "WARREN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        name: String,
    },
    /// List keys (masked).
    List {
        #[arg(long, env = "WARREN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Revoke a key by id or name.
    Revoke {
        #[arg(long, env = "WARREN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        id_or_name: String,
    },
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn open(dir: Option<PathBuf>) -> anyhow::Result<Store> {
    let dir = super::data_dir_arg(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Store::open(&dir)
        .await
        .with_context(|| format!("open store in {}", dir.display()))
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create { data_dir, name } => {
            let store = open(data_dir).await?;
            let key = store.create_api_key(&name, now()).await?;
            println!(
                "Created key {} ({}). It is shown only now; store it safely:",
                key.record.id, key.record.name
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { data_dir } => {
            let store = open(data_dir).await?;
            println!("{:<22} {:<20} {:<18} {:<10}", "ID", "NAME", "KEY", "STATUS");
            for k in store.list_keys().await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<22} {:<20} {:<18} {:<10}",
                    k.id,
                    k.name,
                    format!("{}…", k.prefix),
                    status
                );
            }
        }
        KeysCommand::Revoke {
            data_dir,
            id_or_name,
        } => {
            let store = open(data_dir).await?;
            if !store.revoke_key(&id_or_name, now()).await? {
                anyhow::bail!("no active key with id or name {id_or_name:?}");
            }
            println!("revoked {id_or_name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
