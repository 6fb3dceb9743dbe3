//! `warren volume`: your persistent volumes (the same as E2B's `/volumes`), which creates mount
//! with `"volumes": [{"name", "path"}]` (docs/volumes.md).

use std::process::ExitCode;

use warren_wire::control::{CloneVolume, NewVolume, VolumeInfo, VolumeList};

use crate::client::{Client, ClientOpts, NO_BODY};

#[derive(clap::Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        #[command(flatten)]
        opts: ClientOpts,
        /// Letters, digits, '_' and '-'; unique among your volumes.
        name: String,
        /// Its size in MB: writes past it fail with "No space left on device" [default: 10240].
        #[arg(long)]
        size_mb: Option<u64>,
    },
    /// List your volumes.
    List {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Make a new volume with a copy of a volume's files.
    Clone {
        #[command(flatten)]
        opts: ClientOpts,
        /// The volume to copy: its id or name.
        volume: String,
        /// The new volume's name.
        name: String,
        /// The new volume's size in MB [default: the source's].
        #[arg(long)]
        size_mb: Option<u64>,
    },
    /// Delete a volume and its files (refused while a sandbox mounts it).
    Delete {
        #[command(flatten)]
        opts: ClientOpts,
        /// Its id or name.
        volume: String,
    },
}

/// A made volume, as `list` shows it (without the date): id, name, size.
fn print_made(v: &VolumeInfo) {
    println!("{}\t{}\t{} MB", v.id, v.name, v.size_mb);
}

pub async fn run(c: VolumeCommand) -> anyhow::Result<ExitCode> {
    match c {
        VolumeCommand::Create {
            opts,
            name,
            size_mb,
        } => {
            let v: VolumeInfo = Client::new(&opts)?
                .call(
                    reqwest::Method::POST,
                    "/v1/volumes",
                    Some(&NewVolume { name, size_mb }),
                )
                .await?;
            print_made(&v);
        }
        VolumeCommand::List { opts } => {
            let list: VolumeList = Client::new(&opts)?
                .call(reqwest::Method::GET, "/v1/volumes", NO_BODY)
                .await?;
            for v in list.volumes {
                println!("{}\t{}\t{} MB\t{}", v.id, v.name, v.size_mb, v.created_at);
            }
        }
        VolumeCommand::Clone {
            opts,
            volume,
            name,
            size_mb,
        } => {
            let v: VolumeInfo = Client::new(&opts)?
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/volumes/{volume}/clone"),
                    Some(&CloneVolume { name, size_mb }),
                )
                .await?;
            print_made(&v);
        }
        VolumeCommand::Delete { opts, volume } => {
            Client::new(&opts)?
                .call_no_answer(reqwest::Method::DELETE, &format!("/v1/volumes/{volume}"))
                .await?;
            println!("deleted {volume}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
