//! Running one user process to completion: own session, bounded output capture, and a timeout
//! that kills the whole tree (see `tree`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::tree;

/// Output beyond this per stream is dropped and a marker appended, so a runaway print loop cannot
/// exhaust the agent's memory (which counts against the sandbox's own limit).
pub const MAX_CAPTURE: usize = 8 * 1024 * 1024;
/// After the main process exits, how long to keep reading output still held open by children it
/// left in the background (e.g. `server &`), before returning.
const DRAIN_GRACE: Duration = Duration::from_millis(50);

pub struct Invocation<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub workdir: &'a Path,
    pub timeout: Duration,
}

pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub pid: u32,
}

/// Why a process could not be started at all (as opposed to failing once started).
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("working directory {0} does not exist")]
    Workdir(String),
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
}

/// A started user process: the leader of its own session, tagged with `execution_id`.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    pub execution_id: String,
}

impl Spawned {
    pub fn kill_tree(&self) {
        tree::kill_tree(self.pid, &self.execution_id);
    }

    /// Kills the tree if dropped before `disarm`: a request whose client went away must not
    /// leave its process running. Processes a finished run left in the background on purpose
    /// (`server &`) are kept.
    pub fn guard(&self) -> TreeGuard {
        TreeGuard(Some((self.pid, self.execution_id.clone())))
    }
}

pub struct TreeGuard(Option<(u32, String)>);

impl TreeGuard {
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if let Some((pid, id)) = self.0.take() {
            tree::kill_tree(pid, &id);
        }
    }
}

/// Starts `inv` with piped stdout/stderr and no stdin.
pub fn spawn(inv: &Invocation<'_>) -> Result<Spawned, SpawnError> {
    if !inv.workdir.is_dir() {
        return Err(SpawnError::Workdir(inv.workdir.display().to_string()));
    }
    let execution_id = tree::new_execution_id();
    let mut cmd = Command::new(inv.program);
    cmd.args(inv.args)
        .env_clear()
        .envs(inv.env)
        .env(tree::MARKER, &execution_id)
        .current_dir(inv.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    // SAFETY: only async-signal-safe calls between fork and exec (setsid, open, write, close).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            prefer_for_oom_kill();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| SpawnError::Spawn(inv.program.to_owned(), e))?;
    Ok(Spawned {
        pid: child.id().unwrap_or(0),
        child,
        execution_id,
    })
}

/// Makes a user process the OOM killer's first choice within the sandbox. The writable layer is a
/// tmpfs whose pages count against the sandbox's memory limit, so a full disk is also a full
/// memory cgroup; the agent (pid 1) must not be the process that dies then, or the sandbox is
/// lost. Raising one's own score needs no privilege (lowering the agent's would need
/// CAP_SYS_RESOURCE on the host, which not every host grants). Called between fork and exec, so
/// it uses raw open/write on a static path (no allocation).
pub fn prefer_for_oom_kill() {
    const PATH: &[u8] = b"/proc/self/oom_score_adj\0";
    // SAFETY: PATH is NUL-terminated; open/write/close are async-signal-safe and the buffers
    // outlive the calls.
    unsafe {
        let fd = libc::open(PATH.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"1000".as_ptr().cast(), 4);
            libc::close(fd);
        }
    }
}

/// The exit code a shell would report: the code, or 128 + the signal that ended it.
pub fn exit_code(status: Option<std::process::ExitStatus>) -> i32 {
    match status {
        Some(s) => s.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
        }),
        None => -1,
    }
}

pub async fn run(inv: Invocation<'_>) -> Result<Outcome, SpawnError> {
    let started = Instant::now();
    let mut spawned = spawn(&inv)?;
    let guard = spawned.guard();
    let pid = spawned.pid;
    let (out, out_buf) = capture(spawned.child.stdout.take());
    let (err, err_buf) = capture(spawned.child.stderr.take());

    let waited = tokio::time::timeout(inv.timeout, spawned.child.wait()).await;
    let (status, timed_out) = match waited {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            spawned.kill_tree();
            (spawned.child.wait().await.ok(), true)
        }
    };
    let stdout = drain(out, out_buf).await;
    let mut stderr = drain(err, err_buf).await;
    if timed_out {
        spawned.kill_tree();
        stderr.push_str(&format!(
            "\nExecution timed out after {} seconds\n",
            inv.timeout.as_secs()
        ));
    }
    guard.disarm();
    let exit_code = if timed_out { 124 } else { exit_code(status) };
    Ok(Outcome {
        stdout,
        stderr,
        exit_code,
        timed_out,
        elapsed: started.elapsed(),
        pid,
    })
}

/// Output captured so far, shared with the task reading the pipe.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>);

impl Captured {
    fn text(&self) -> String {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::from_utf8_lossy(&g.0).into_owned();
        if g.1 {
            s.push_str(&format!("\n[output truncated at {MAX_CAPTURE} bytes]\n"));
        }
        s
    }
}

/// Waits briefly for the pipe to close, then returns what was read. A child left running in the
/// background (`server &`) keeps the pipe open; its later output is not part of this run.
async fn drain(task: tokio::task::JoinHandle<()>, captured: Captured) -> String {
    let abort = task.abort_handle();
    if tokio::time::timeout(DRAIN_GRACE, task).await.is_err() {
        abort.abort();
    }
    captured.text()
}

fn capture<R: AsyncRead + Unpin + Send + 'static>(
    stream: Option<R>,
) -> (tokio::task::JoinHandle<()>, Captured) {
    let captured = Captured::default();
    let sink = captured.clone();
    let task = tokio::spawn(async move {
        let Some(mut stream) = stream else { return };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut g = sink.0.lock().unwrap_or_else(|p| p.into_inner());
                    let room = MAX_CAPTURE.saturating_sub(g.0.len());
                    g.0.extend_from_slice(&chunk[..n.min(room)]);
                    g.1 |= n > room;
                }
            }
        }
    });
    (task, captured)
}
