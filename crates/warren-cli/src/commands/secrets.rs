//! `warren secrets`: secrets the host brokers for your sandboxes. A sandbox created with
//! the API's `secrets` field holds only a placeholder in ENV; the value is put
//! in its place on the host, in HTTPS requests to the secret's hosts only.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use warren_wire::control::{NewSecret, SecretInfo, SecretList};

use crate::client::{Client, ClientOpts, NO_BODY};

#[derive(clap::Subcommand, Debug)]
pub enum SecretsCommand {
    /// Store a secret (or replace its value and hosts). The value is read from stdin, so that it
    /// stays out of shell history and the process list.
    Set {
        #[command(flatten)]
        opts: ClientOpts,
        /// Letters, digits, '_' and '-'.
        name: String,
        /// A host it is sent to: a name or *.name (repeatable, at least one).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// List your secrets (never their values).
    List {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete a secret.
    Delete {
        #[command(flatten)]
        opts: ClientOpts,
        name: String,
    },
}

pub async fn run(c: SecretsCommand) -> anyhow::Result<ExitCode> {
    match c {
        SecretsCommand::Set { opts, name, hosts } => {
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("read the value from stdin")?;
            let value = value.trim_end_matches(['\r', '\n']).to_owned();
            let body = NewSecret { name, value, hosts };
            let info: SecretInfo = Client::new(&opts)?
                .call(reqwest::Method::POST, "/v1/secrets", Some(&body))
                .await?;
            println!("{}\t{}", info.name, info.hosts.join(","));
        }
        SecretsCommand::List { opts } => {
            let list: SecretList = Client::new(&opts)?
                .call(reqwest::Method::GET, "/v1/secrets", NO_BODY)
                .await?;
            for s in list.secrets {
                println!("{}\t{}\t{}", s.name, s.hosts.join(","), s.updated_at);
            }
        }
        SecretsCommand::Delete { opts, name } => {
            Client::new(&opts)?
                .call_no_answer(reqwest::Method::DELETE, &format!("/v1/secrets/{name}"))
                .await?;
            println!("deleted {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
