use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use warren_wire::agent::{
    CommandRequest, CommandResponse, ExecuteRequest, ExecuteResponse, FileList,
};
use warren_wire::control::{CreateSandboxRequest, ListPage, Sandbox, SandboxUsage};

use crate::client::{Client, ClientOpts, NO_BODY};

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Create a sandbox and print its id.
    Create {
        #[command(flatten)]
        opts: ClientOpts,
        /// Template name or id.
        #[arg(short, long, default_value = "code-interpreter")]
        template: String,
        /// Seconds until the sandbox is killed automatically.
        #[arg(long)]
        timeout: Option<i64>,
        /// Disable all network access from the sandbox.
        #[arg(long)]
        no_internet: bool,
        /// Environment variables (KEY=VALUE), repeatable.
        #[arg(short, long = "env")]
        env: Vec<String>,
    },
    /// List live sandboxes.
    List {
        #[command(flatten)]
        opts: ClientOpts,
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one sandbox as JSON.
    Get {
        #[command(flatten)]
        opts: ClientOpts,
        id: String,
    },
    /// What a sandbox uses now (CPU, memory, disk, processes), measured outside it.
    Usage {
        #[command(flatten)]
        opts: ClientOpts,
        id: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Kill a sandbox and delete its data.
    Kill {
        #[command(flatten)]
        opts: ClientOpts,
        id: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Sandbox id.
    id: String,
    /// Code to run; `-` reads it from stdin.
    code: String,
    #[arg(short, long, default_value = "python")]
    language: String,
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    opts: ClientOpts,
    id: String,
    /// The shell command (run with bash -c).
    command: String,
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[arg(long, default_value = "/workspace")]
    workdir: String,
    /// Print output as it is produced (over the agent's /execute/stream WebSocket).
    #[arg(long)]
    stream: bool,
}

#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    opts: ClientOpts,
    /// Sandbox id.
    id: String,
}

#[derive(Subcommand, Debug)]
pub enum FilesCommand {
    /// Download a file from the sandbox (to stdout, or to LOCAL).
    Get {
        #[command(flatten)]
        opts: ClientOpts,
        id: String,
        remote: String,
        local: Option<PathBuf>,
    },
    /// Upload a local file into the sandbox.
    Put {
        #[command(flatten)]
        opts: ClientOpts,
        id: String,
        local: PathBuf,
        remote: String,
    },
    /// List a directory in the sandbox.
    Ls {
        #[command(flatten)]
        opts: ClientOpts,
        id: String,
        #[arg(default_value = "/workspace")]
        path: String,
    },
}

/// An optional field as a table cell.
fn cell(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

pub async fn run_sandbox(cmd: SandboxCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SandboxCommand::Create {
            opts,
            template,
            timeout,
            no_internet,
            env,
        } => {
            let client = Client::new(&opts)?;
            let mut env_vars = BTreeMap::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                env_vars.insert(k.to_owned(), v.to_owned());
            }
            let body = CreateSandboxRequest {
                template_name: Some(template),
                internet_access: Some(!no_internet),
                env_vars: Some(env_vars),
                timeout_seconds: timeout,
                ..Default::default()
            };
            let sb: Sandbox = client
                .call(Method::POST, "/v1/sandboxes", Some(&body))
                .await?;
            eprintln!(
                "created sandbox from {} at {}",
                cell(sb.template_name.as_deref()),
                sb.public_host
            );
            println!("{}", sb.id);
        }
        SandboxCommand::List { opts, status } => {
            let client = Client::new(&opts)?;
            let q = status.map(|st| format!("?status={st}")).unwrap_or_default();
            let page: ListPage<Sandbox> = client
                .call(Method::GET, &format!("/v1/sandboxes{q}"), NO_BODY)
                .await?;
            println!(
                "{:<20} {:<10} {:<18} {:<22} {:<22}",
                "ID", "STATUS", "TEMPLATE", "CREATED", "EXPIRES"
            );
            for sb in &page.data {
                println!(
                    "{:<20} {:<10} {:<18} {:<22} {:<22}",
                    sb.id,
                    sb.status,
                    cell(sb.template_name.as_deref()),
                    sb.created_at,
                    cell(sb.expires_at.as_deref())
                );
            }
        }
        SandboxCommand::Get { opts, id } => {
            // Printed as the server sent it, every field included.
            let sb: serde_json::Value = Client::new(&opts)?
                .call(Method::GET, &format!("/v1/sandboxes/{id}"), NO_BODY)
                .await?;
            println!("{}", serde_json::to_string_pretty(&sb)?);
        }
        SandboxCommand::Usage { opts, id, json } => {
            let u: SandboxUsage = Client::new(&opts)?
                .call(Method::GET, &format!("/v1/sandboxes/{id}/usage"), NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&u)?);
            } else {
                print!("{}", usage_text(&u));
            }
        }
        SandboxCommand::Kill { opts, id } => {
            let _: serde_json::Value = Client::new(&opts)?
                .call(Method::DELETE, &format!("/v1/sandboxes/{id}"), NO_BODY)
                .await?;
            println!("killed {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `warren sandbox usage` for people: one line per resource.
fn usage_text(u: &SandboxUsage) -> String {
    let mib = |b: Option<u64>| match b {
        Some(b) => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        None => "unknown".into(),
    };
    format!(
        "cpu        {} % of {} vCPU (CPU time {:.1} s)\nmemory     {} of {}\ndisk       {} of {}\nprocesses  {}\n",
        u.cpu_used_pct,
        u.cpu_count,
        u.cpu_time_ms as f64 / 1000.0,
        mib(Some(u.memory_used_bytes)),
        mib(Some(u.memory_limit_bytes)),
        mib(u.disk_used_bytes),
        mib(Some(u.disk_limit_bytes)),
        u.processes,
    )
}

fn exit_with(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

pub async fn run_code(a: RunArgs) -> anyhow::Result<ExitCode> {
    let code = if a.code == "-" {
        let mut buf = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        a.code
    };
    let agent = Client::new(&a.opts)?.agent(&a.id).await?;
    let req = ExecuteRequest {
        code,
        language: a.language,
        timeout: Some(a.timeout),
        workdir: None,
        env: None,
        name: None,
    };
    let r: ExecuteResponse = agent.json(Method::POST, "/execute", Some(&req)).await?;
    print!("{}", r.stdout);
    eprint!("{}", r.stderr);
    Ok(exit_with(r.exit_code))
}

pub async fn exec(a: ExecArgs) -> anyhow::Result<ExitCode> {
    let agent = Client::new(&a.opts)?.agent(&a.id).await?;
    if a.stream {
        let code = crate::stream::execute(&agent, &a.command, a.timeout, &a.workdir).await?;
        return Ok(exit_with(code));
    }
    let req = CommandRequest {
        command: "bash".into(),
        args: vec!["-c".into(), a.command],
        timeout: Some(a.timeout),
        workdir: Some(a.workdir),
        env: None,
    };
    let r: CommandResponse = agent
        .json(Method::POST, "/commands/run", Some(&req))
        .await?;
    print!("{}", r.stdout);
    eprint!("{}", r.stderr);
    Ok(exit_with(r.exit_code))
}

pub async fn files(cmd: FilesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FilesCommand::Get {
            opts,
            id,
            remote,
            local,
        } => {
            let agent = Client::new(&opts)?.agent(&id).await?;
            let q: String = url_encode(&remote);
            let bytes = agent
                .raw(Method::GET, &format!("/files/download?path={q}"), NO_BODY)
                .await?
                .bytes()
                .await?;
            match local {
                Some(p) => {
                    std::fs::write(&p, &bytes).with_context(|| format!("write {}", p.display()))?
                }
                None => std::io::stdout().write_all(&bytes)?,
            }
        }
        FilesCommand::Put {
            opts,
            id,
            local,
            remote,
        } => {
            let bytes =
                std::fs::read(&local).with_context(|| format!("read {}", local.display()))?;
            let agent = Client::new(&opts)?.agent(&id).await?;
            let r = agent.upload(&remote, bytes).await?;
            println!("uploaded {} bytes to {}", r.size, r.path);
        }
        FilesCommand::Ls { opts, id, path } => {
            let agent = Client::new(&opts)?.agent(&id).await?;
            let r: FileList = agent
                .json(
                    Method::GET,
                    &format!("/files/list?path={}", url_encode(&path)),
                    NO_BODY,
                )
                .await?;
            for f in &r.files {
                println!("{} {:>10} {} {}", f.permissions, f.size, f.modified, f.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn shell(a: ShellArgs) -> anyhow::Result<ExitCode> {
    let agent = Client::new(&a.opts)?.agent(&a.id).await?;
    let code = crate::stream::shell(&agent).await?;
    Ok(exit_with(code))
}
