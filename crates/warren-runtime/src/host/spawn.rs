//! Starting a tier's processes inside a sandbox's host parts, and waiting for its agent.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;

use super::network::SandboxNet;
use super::{HostError, SandboxHost};

/// A sandbox whose agent answers.
pub struct AgentUp {
    /// Host path of the agent's unix socket.
    pub agent_socket: PathBuf,
    /// Where ports the sandbox listens on are reached from inside its network namespace: its
    /// loopback, or a VM guest's address.
    pub port_host: Ipv4Addr,
    /// Resolves with the helper's exit code when the sandbox dies, for whatever reason.
    pub exited: oneshot::Receiver<i32>,
    /// The pid a helper announced with a `pid <n>` line before `ready` (the jail names the
    /// sandbox's init this way).
    pub announced_pid: Option<i32>,
}

/// What a sandbox's helper printed before its agent was ready.
#[derive(Default)]
pub(crate) struct Startup {
    /// The last five lines (a VM's console arrives here too), for error messages.
    pub tail: std::collections::VecDeque<String>,
    pub announced_pid: Option<i32>,
}

/// Makes `cmd` start inside a sandbox's network namespace and cgroup (for the processes of the
/// other tiers: runsc, QEMU). Keep the returned namespace handle open until `cmd` is spawned.
pub(crate) fn start_inside(
    cmd: &mut Command,
    host: &SandboxHost,
) -> Result<std::fs::File, HostError> {
    use std::os::unix::ffi::OsStrExt;
    let netns = enter_netns(cmd, &host.net)?;
    let procs: Vec<std::ffi::CString> = host
        .cgroup
        .procs_files()
        .iter()
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).ok())
        .collect();
    // SAFETY: only open/write/close on paths prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            Ok(())
        });
    }
    Ok(netns)
}

/// Makes `cmd` start inside a sandbox's network namespace. Keep the returned namespace handle
/// open until `cmd` is spawned.
pub(crate) fn enter_netns(cmd: &mut Command, net: &SandboxNet) -> Result<std::fs::File, HostError> {
    let netns = std::fs::File::open(&net.netns_path).map_err(|source| HostError::Io {
        what: "open network namespace".into(),
        source,
    })?;
    let netns_fd = std::os::fd::AsRawFd::as_raw_fd(&netns);
    // SAFETY: only setns on a descriptor opened before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(netns)
}

/// Waits for the sandbox's agent to print `ready` on `child`'s stdout (the jail, runsc, or a
/// VM's console), then watches `child` for the sandbox's end. On failure the child is killed and
/// the error carries the last lines of `log_path` (the sandbox's start-up log) and of stdout.
pub(crate) async fn wait_for_agent(
    mut child: tokio::process::Child,
    log_path: &Path,
    agent_socket: PathBuf,
    timeout: Duration,
    port_host: Ipv4Addr,
) -> Result<AgentUp, HostError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| HostError::AgentStart("sandbox helper has no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut startup = Startup::default();
    let ready = until_ready(&mut lines, timeout, &mut startup).await;
    if !ready {
        let _ = child.start_kill();
        let _ = child.wait().await;
        let log = tokio::fs::read_to_string(log_path)
            .await
            .unwrap_or_default();
        let mut last: Vec<&str> = log.lines().rev().take(5).collect();
        last.reverse();
        last.extend(
            startup
                .tail
                .iter()
                .map(String::as_str)
                .filter(|l| !l.is_empty()),
        );
        return Err(HostError::AgentStart(if last.is_empty() {
            "agent did not report ready".into()
        } else {
            last.join("; ")
        }));
    }
    Ok(AgentUp {
        agent_socket,
        port_host,
        exited: watch_exit(child, lines),
        announced_pid: startup.announced_pid,
    })
}

/// Reads `stdout` until the agent's `ready` line (true) or its end or `timeout` (false), noting
/// what came before in `startup`.
pub(crate) async fn until_ready(
    stdout: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    timeout: Duration,
    startup: &mut Startup,
) -> bool {
    tokio::time::timeout(timeout, async {
        while let Ok(Some(line)) = stdout.next_line().await {
            let line = line.trim();
            if line == "ready" {
                return true;
            }
            if let Some(pid) = line.strip_prefix("pid ").and_then(|p| p.parse().ok()) {
                startup.announced_pid.get_or_insert(pid);
            }
            if startup.tail.len() == 5 {
                startup.tail.pop_front();
            }
            startup.tail.push_back(line.to_owned());
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Reports `child`'s exit code once it ends, reading its remaining stdout meanwhile so that later
/// output never blocks it on a full pipe.
pub(crate) fn watch_exit(
    mut child: tokio::process::Child,
    mut stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> oneshot::Receiver<i32> {
    let (tx, exited) = oneshot::channel();
    tokio::spawn(async move {
        while let Ok(Some(_)) = stdout.next_line().await {}
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
        let _ = tx.send(code);
    });
    exited
}
