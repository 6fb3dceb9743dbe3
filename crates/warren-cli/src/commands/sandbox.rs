use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::client::ClientOpts;

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

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
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
            let mut env_vars = serde_json::Map::new();
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                env_vars.insert(k.to_owned(), v.into());
            }
            let mut body = json!({ "template_name": template, "internet_access": !no_internet, "env_vars": env_vars });
            if let Some(t) = timeout {
                body["timeout_seconds"] = t.into();
            }
            let sb = client
                .call(Method::POST, "/v1/sandboxes", Some(body))
                .await?;
            eprintln!(
                "created sandbox from {} at {}",
                s(&sb["template_name"]),
                s(&sb["public_host"])
            );
            println!("{}", s(&sb["id"]));
        }
        SandboxCommand::List { opts, status } => {
            let client = Client::new(&opts)?;
            let q = status.map(|st| format!("?status={st}")).unwrap_or_default();
            let page = client
                .call(Method::GET, &format!("/v1/sandboxes{q}"), None)
                .await?;
            println!(
                "{:<20} {:<10} {:<18} {:<22} {:<22}",
                "ID", "STATUS", "TEMPLATE", "CREATED", "EXPIRES"
            );
            for sb in page["data"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<10} {:<18} {:<22} {:<22}",
                    s(&sb["id"]),
                    s(&sb["status"]),
                    s(&sb["template_name"]),
                    s(&sb["created_at"]),
                    s(&sb["expires_at"])
                );
            }
        }
        SandboxCommand::Get { opts, id } => {
            let sb = Client::new(&opts)?
                .call(Method::GET, &format!("/v1/sandboxes/{id}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&sb)?);
        }
        SandboxCommand::Usage { opts, id, json } => {
            let u = Client::new(&opts)?
                .call(Method::GET, &format!("/v1/sandboxes/{id}/usage"), None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&u)?);
            } else {
                print!("{}", usage_text(&u));
            }
        }
        SandboxCommand::Kill { opts, id } => {
            Client::new(&opts)?
                .call(Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
                .await?;
            println!("killed {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `warren sandbox usage` for people: one line per resource.
fn usage_text(u: &Value) -> String {
    let mib = |v: &Value| match v.as_u64() {
        Some(b) => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        None => "unknown".into(),
    };
    format!(
        "cpu        {} % of {} vCPU (CPU time {:.1} s)\nmemory     {} of {}\ndisk       {} of {}\nprocesses  {}\n",
        s(&u["cpu_used_pct"]),
        s(&u["cpu_count"]),
        u["cpu_time_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        mib(&u["memory_used_bytes"]),
        mib(&u["memory_limit_bytes"]),
        mib(&u["disk_used_bytes"]),
        mib(&u["disk_limit_bytes"]),
        s(&u["processes"]),
    )
}

fn exit_with(code: i64) -> ExitCode {
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
    let r = agent
        .json(
            Method::POST,
            "/execute",
            Some(json!({ "code": code, "language": a.language, "timeout": a.timeout })),
        )
        .await?;
    print!("{}", r["stdout"].as_str().unwrap_or(""));
    eprint!("{}", r["stderr"].as_str().unwrap_or(""));
    Ok(exit_with(r["exit_code"].as_i64().unwrap_or(1)))
}

pub async fn exec(a: ExecArgs) -> anyhow::Result<ExitCode> {
    let agent = Client::new(&a.opts)?.agent(&a.id).await?;
    if a.stream {
        let code = crate::stream::execute(&agent, &a.command, a.timeout, &a.workdir).await?;
        return Ok(exit_with(code));
    }
    let body = json!({ "command": "bash", "args": ["-c", a.command], "timeout": a.timeout, "workdir": a.workdir });
    let r = agent
        .json(Method::POST, "/commands/run", Some(body))
        .await?;
    print!("{}", r["stdout"].as_str().unwrap_or(""));
    eprint!("{}", r["stderr"].as_str().unwrap_or(""));
    Ok(exit_with(r["exit_code"].as_i64().unwrap_or(1)))
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
                .raw(Method::GET, &format!("/files/download?path={q}"), None)
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
            println!("uploaded {} bytes to {}", s(&r["size"]), s(&r["path"]));
        }
        FilesCommand::Ls { opts, id, path } => {
            let agent = Client::new(&opts)?.agent(&id).await?;
            let r = agent
                .json(
                    Method::GET,
                    &format!("/files/list?path={}", url_encode(&path)),
                    None,
                )
                .await?;
            for f in r["files"].as_array().into_iter().flatten() {
                println!(
                    "{} {:>10} {} {}",
                    s(&f["permissions"]),
                    s(&f["size"]),
                    s(&f["modified"]),
                    s(&f["name"])
                );
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
