//! Command-line surface: one module per command group.

mod audit;
mod build;
mod doctor;
mod keys;
mod mcp;
mod node;
mod sandbox;
mod secrets;
mod serve;
pub mod shared_volumes;
mod template;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::ClientOpts;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/warren";
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/warren";

#[derive(Parser, Debug)]
#[command(
    name = "warren",
    version = warren_api::long_version(),
    about = "Self-hosted, Hopx-compatible code-execution sandboxes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (control plane, proxy, reaper) on this machine. Needs root. Sandboxes
    /// outlive it: the next start with the same data dir takes them over. WARREN_API_KEY, if set,
    /// is accepted as an admin key (stored hashed).
    Serve(Box<serve::ServeArgs>),
    /// Stop every sandbox of a data dir and remove all they left, while no server runs (takes
    /// the same options as `serve`; --data-dir and --database-url matter).
    StopSandboxes(Box<serve::ServeArgs>),
    /// Manage API keys in a data dir's store, or in WARREN_DATABASE_URL's (works while the server
    /// runs).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Report which isolation tiers this host can run, why not where not, and how fast.
    Doctor(doctor::DoctorArgs),
    /// Show the audit trail of your organization (admin key).
    Audit(audit::AuditArgs),
    /// Secrets the host brokers for your sandboxes: they hold a placeholder, and the value goes
    /// only to the secret's hosts.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Persistent volumes: create, list, delete (their files: E2B's volume content API).
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Build or list template root file systems.
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Create, list, inspect and kill sandboxes.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Run code in a sandbox and print its output.
    Run(sandbox::RunArgs),
    /// Run a shell command in a sandbox (`--stream` for live output).
    Exec(sandbox::ExecArgs),
    /// Open an interactive shell in a sandbox (exit or Ctrl-D to leave).
    Shell(sandbox::ShellArgs),
    /// Read, write and list files in a sandbox.
    #[command(subcommand)]
    Files(sandbox::FilesCommand),
    /// Run this machine's sandboxes for a cluster: joins the control plane with
    /// WARREN_NODE_JOIN_SECRET and serves its sandboxes at --listen's host. `warren node drain
    /// <id>` / `activate <id>` stop and resume placements on a node.
    Node(Box<node::NodeArgs>),
    /// The nodes of a cluster (admin key).
    #[command(subcommand)]
    Nodes(node::NodesCommand),
    /// Serve Warren's tools to an AI agent over MCP on stdin/stdout (the tools of hopx-mcp:
    /// sandboxes, code, commands, files, env). Needs WARREN_URL and WARREN_API_KEY (or
    /// HOPX_API_KEY). The control plane serves the same tools at /mcp over HTTP.
    Mcp(ClientOpts),
    /// Internal: set up one sandbox (started by the server; reads its spec on stdin).
    #[command(hide = true)]
    Jail,
    /// Internal: serve the id-keeping view of a shared volume store (started by the server).
    #[command(hide = true)]
    VolumeView {
        source: PathBuf,
        mountpoint: PathBuf,
    },
}

/// The PEM files of `--egress-upstream-ca` (serve and node), read now so that a wrong path stops
/// the start.
fn read_pems(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .with_context(|| format!("--egress-upstream-ca: read {}", f.display()))
        })
        .collect()
}

pub fn data_dir_arg(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve::run(*a).await,
        Command::StopSandboxes(a) => serve::stop_all(*a).await,
        Command::Keys(c) => keys::run(c).await,
        Command::Audit(a) => audit::run(a).await,
        Command::Secrets(c) => secrets::run(c).await,
        Command::Volume(c) => volume::run(c).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Template(c) => template::run(c).await,
        Command::Sandbox(c) => sandbox::run_sandbox(c).await,
        Command::Run(a) => sandbox::run_code(a).await,
        Command::Exec(a) => sandbox::exec(a).await,
        Command::Shell(a) => sandbox::shell(a).await,
        Command::Files(c) => sandbox::files(c).await,
        Command::Node(a) => node::run(*a).await,
        Command::Nodes(c) => node::nodes(c).await,
        Command::Mcp(opts) => mcp::run(opts).await,
        Command::Jail | Command::VolumeView { .. } => unreachable_jail(),
    }
}

fn unreachable_jail() -> anyhow::Result<ExitCode> {
    anyhow::bail!("`warren jail` and `warren volume-view` are dispatched before the runtime starts")
}
