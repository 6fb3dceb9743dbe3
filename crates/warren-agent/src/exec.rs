//! Running one user process to completion: own process group, bounded output capture, and a
//! timeout that kills the whole group.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

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

pub fn command(inv: &Invocation<'_>) -> Result<Command, SpawnError> {
    if !inv.workdir.is_dir() {
        return Err(SpawnError::Workdir(inv.workdir.display().to_string()));
    }
    let mut cmd = Command::new(inv.program);
    cmd.args(inv.args)
        .env_clear()
        .envs(inv.env)
        .current_dir(inv.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

pub async fn run(inv: Invocation<'_>) -> Result<Outcome, SpawnError> {
    let started = Instant::now();
    let mut child = command(&inv)?
        .spawn()
        .map_err(|e| SpawnError::Spawn(inv.program.to_owned(), e))?;
    let pid = child.id().unwrap_or(0);
    let out = tokio::spawn(capture(child.stdout.take()));
    let err = tokio::spawn(capture(child.stderr.take()));

    let (status, timed_out) = match tokio::time::timeout(inv.timeout, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            kill_group(pid);
            (child.wait().await.ok(), true)
        }
    };
    let stdout = drain(out).await;
    let mut stderr = drain(err).await;
    if timed_out {
        kill_group(pid);
        stderr.push_str(&format!(
            "\nExecution timed out after {} seconds\n",
            inv.timeout.as_secs()
        ));
    }
    let exit_code = match status {
        _ if timed_out => 124,
        Some(s) => s.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
        }),
        None => -1,
    };
    Ok(Outcome {
        stdout,
        stderr,
        exit_code,
        timed_out,
        elapsed: started.elapsed(),
        pid,
    })
}

pub fn kill_group(pid: u32) {
    if pid > 1 {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

async fn drain(task: tokio::task::JoinHandle<String>) -> String {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_GRACE, task).await {
        Ok(Ok(s)) => s,
        _ => {
            abort.abort();
            String::new()
        }
    }
}

async fn capture<R: AsyncRead + Unpin>(stream: Option<R>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut truncated = false;
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_CAPTURE.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if truncated {
        s.push_str(&format!("\n[output truncated at {} bytes]\n", MAX_CAPTURE));
    }
    s
}
