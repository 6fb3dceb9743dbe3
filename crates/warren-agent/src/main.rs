//! The in-sandbox agent. It runs as the sandbox's init and serves the agent API (spec §5) on a unix
//! socket that the control plane reaches from the host side.
//!
//! The agent authenticates nobody: everything it can do, the user's code inside the same sandbox
//! can do too. Authentication (the sandbox JWT) and limits are enforced outside, by the host-side
//! proxy and the driver.

mod changes;
mod desktop;
mod e2b;
mod error;
mod exec;
mod init;
mod kernel;
mod languages;
mod output;
mod proc_stats;
mod processes;
mod pty;
mod routes;
mod state;
mod time_fmt;
mod tree;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "warren-agent", about = "Warren in-sandbox agent")]
struct Args {
    /// Unix socket to listen on (namespace and gVisor tiers: the host reaches it through a
    /// shared directory).
    #[arg(long, required_unless_present = "tcp")]
    socket: Option<PathBuf>,
    /// TCP address to listen on instead (microVM tier: the host reaches the guest over its
    /// virtual network link, from inside the sandbox's network namespace).
    #[arg(long, conflicts_with = "socket")]
    tcp: Option<std::net::SocketAddr>,
    #[arg(long, default_value = "")]
    sandbox_id: String,
    #[arg(long, default_value = "")]
    template: String,
    #[arg(long, default_value_t = 1)]
    vcpu: u32,
    #[arg(long, default_value_t = 512)]
    memory_mb: u32,
    #[arg(long, default_value_t = 1024)]
    disk_mb: u32,
    /// The template's WORKDIR: where runs and terminals start by default.
    #[arg(long, default_value = "/workspace")]
    workdir: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // `env_vars` from create arrive as JSON in the environment (not argv, which the host's `ps`
    // shows); they become the global env of every execution. Removed while still single-threaded.
    let env: BTreeMap<String, String> = std::env::var("WARREN_BOOT_ENV")
        .ok()
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    std::env::remove_var("WARREN_BOOT_ENV");
    // As pid 1 the agent must reap orphans; a tiny init loop does that in a forked parent so the
    // async runtime (which waits on its own children) never has its exit statuses stolen.
    if nix::unistd::getpid().as_raw() == 1 {
        init::become_init_and_fork_server()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start runtime")?;
    runtime.block_on(serve(args, env))
}

async fn serve(args: Args, env: BTreeMap<String, String>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let state = state::AgentState::new(
        state::BootInfo {
            sandbox_id: args.sandbox_id.clone(),
            template: args.template.clone(),
            vcpu: args.vcpu,
            memory_mb: args.memory_mb,
            disk_mb: args.disk_mb,
        },
        env,
    );
    routes::set_default_workdir(&args.workdir);
    let listener = match (&args.socket, args.tcp) {
        (_, Some(addr)) => Listener::Tcp(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?,
        ),
        (Some(path), None) => {
            let _ = std::fs::remove_file(path);
            Listener::Unix(
                tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("bind {}", path.display()))?,
            )
        }
        (None, None) => anyhow::bail!("--socket or --tcp is required"),
    };
    // Tell the jail (and through it the control plane) that the agent is ready, then stop using
    // stdout: nobody reads it after this line.
    {
        let mut out = std::io::stdout().lock();
        out.write_all(b"ready\n").context("report ready")?;
        out.flush().context("flush ready")?;
    }
    nix::unistd::dup2(2, 1).context("redirect stdout")?;
    tracing::info!(socket = ?args.socket, tcp = ?args.tcp, "agent listening");
    {
        // The stateful interpreter starts now, while the client is still busy creating, unless
        // the machine is busy (a burst of creates): then once it is not.
        let state = state.clone();
        tokio::spawn(async move {
            let env = state.process_env(None);
            state.kernel.warm_when_idle(&env).await;
        });
    }
    let app = routes::router(state.clone())
        .merge(e2b::router(state))
        .merge(desktop::router());
    match listener {
        Listener::Unix(l) => axum::serve(l, app).await,
        Listener::Tcp(l) => axum::serve(l, app).await,
    }
    .context("serve")
}

enum Listener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}
