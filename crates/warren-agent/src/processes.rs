//! Background processes: started, listed, read and killed by id. Output is retained (bounded, see
//! `output`) so it can be read again, from any offset, after the client went away.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::exec::{self, Invocation, SpawnError};
use crate::output::OutputLog;

/// Finished processes kept for listing and reading; the oldest finished ones go first.
const KEEP_FINISHED: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProcStatus {
    Running,
    Completed,
    Failed,
    Killed,
    TimedOut,
}

impl ProcStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::TimedOut => "timeout",
        }
    }
}

pub struct Proc {
    pub id: String,
    pub execution_id: String,
    /// The caller's name for it, else the program it runs (never empty: clients read it as text).
    pub name: String,
    pub language: String,
    pub command: String,
    pub pid: u32,
    pub status: ProcStatus,
    pub exit_code: Option<i32>,
    pub started_at: SystemTime,
    pub started: Instant,
    pub ended: Option<(SystemTime, Instant)>,
    pub stdout: OutputLog,
    pub stderr: OutputLog,
}

#[derive(Default, Clone)]
pub struct ProcessTable {
    procs: Arc<Mutex<BTreeMap<String, Proc>>>,
    counter: Arc<std::sync::atomic::AtomicU64>,
}

pub struct StartRequest<'a> {
    pub invocation: Invocation<'a>,
    /// The caller's name for it; by default the program it runs (`program_name`).
    pub name: Option<String>,
    pub language: String,
    pub command: String,
    /// Removed when the process ends (the code file of an execution).
    pub cleanup: Option<crate::languages::Prepared>,
}

/// Where to resume reading each stream of a process.
#[derive(Default, serde::Deserialize)]
pub struct Offsets {
    #[serde(default)]
    pub stdout_offset: u64,
    #[serde(default)]
    pub stderr_offset: u64,
}

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start(&self, req: StartRequest<'_>) -> Result<Value, SpawnError> {
        let inv = &req.invocation;
        let mut spawned = exec::spawn(inv)?;
        let pid = spawned.pid;
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("proc_{n}_{pid}");
        let timeout = inv.timeout;
        let now = SystemTime::now();
        let name = req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| program_name(inv.program, inv.args));
        {
            let mut procs = self.lock();
            evict_finished(&mut procs);
            procs.insert(
                id.clone(),
                Proc {
                    id: id.clone(),
                    execution_id: spawned.execution_id.clone(),
                    name: name.clone(),
                    language: req.language,
                    command: req.command,
                    pid,
                    status: ProcStatus::Running,
                    exit_code: None,
                    started_at: now,
                    started: Instant::now(),
                    ended: None,
                    stdout: OutputLog::default(),
                    stderr: OutputLog::default(),
                },
            );
        }
        let out = tokio::spawn(
            self.clone()
                .pump(id.clone(), spawned.child.stdout.take(), true),
        );
        let err = tokio::spawn(
            self.clone()
                .pump(id.clone(), spawned.child.stderr.take(), false),
        );
        let table = self.clone();
        let cleanup = req.cleanup;
        let id_done = id.clone();
        tokio::spawn(async move {
            let waited = tokio::time::timeout(timeout, spawned.child.wait()).await;
            let (status, timed_out) = match waited {
                Ok(s) => (s.ok(), false),
                Err(_) => {
                    spawned.kill_tree();
                    (spawned.child.wait().await.ok(), true)
                }
            };
            // Output written just before exit is still in the pipes: read it before "done".
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
                let _ = out.await;
                let _ = err.await;
            })
            .await;
            if let Some(c) = cleanup {
                crate::languages::cleanup(&c);
            }
            let mut procs = table.lock();
            if let Some(p) = procs.get_mut(&id_done) {
                let code = exec::exit_code(status);
                p.exit_code = Some(if timed_out { 124 } else { code });
                p.ended = Some((SystemTime::now(), Instant::now()));
                if p.status == ProcStatus::Running {
                    p.status = match (timed_out, code) {
                        (true, _) => ProcStatus::TimedOut,
                        (false, 0) => ProcStatus::Completed,
                        _ => ProcStatus::Failed,
                    };
                }
            }
        });
        Ok(json!({
            "process_id": id,
            "execution_id": id,
            "pid": pid,
            "status": "running",
            "name": name,
            "start_time": crate::time_fmt::rfc3339(now),
            "message": "Process started in background",
        }))
    }

    async fn pump(
        self,
        id: String,
        stream: Option<impl tokio::io::AsyncRead + Unpin>,
        is_stdout: bool,
    ) {
        let Some(mut stream) = stream else { return };
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let mut procs = self.lock();
            let Some(p) = procs.get_mut(&id) else { break };
            if is_stdout {
                p.stdout.push(&chunk[..n]);
            } else {
                p.stderr.push(&chunk[..n]);
            }
        }
    }

    pub fn list(&self) -> Vec<Value> {
        self.lock().values().map(describe).collect()
    }

    /// `list`, with each running process's `cpu_percent` and `memory_percent` (of the sandbox's
    /// `memory_mb`).
    pub fn list_with_usage(&self, memory_mb: u32) -> Vec<Value> {
        self.lock()
            .values()
            .map(|p| {
                let (cpu, memory) = usage(p, memory_mb);
                let mut v = describe(p);
                v["cpu_percent"] = cpu.into();
                v["memory_percent"] = memory.into();
                v
            })
            .collect()
    }

    /// The process with its output from the given offsets (0: everything still retained).
    pub fn get(&self, id: &str, at: &Offsets) -> Option<Value> {
        let procs = self.lock();
        let p = find(&procs, id)?;
        let out = p.stdout.read_from(at.stdout_offset);
        let err = p.stderr.read_from(at.stderr_offset);
        let mut v = describe(p);
        v["stdout"] = out.text.into();
        v["stderr"] = err.text.into();
        v["stdout_next_offset"] = out.next_offset.into();
        v["stderr_next_offset"] = err.next_offset.into();
        v["stdout_dropped_bytes"] = out.dropped.into();
        v["stderr_dropped_bytes"] = err.dropped.into();
        Some(v)
    }

    /// Kills the whole tree of `id` (a background run's process id or pid), or else the process
    /// with pid `id`, unless it belongs to the agent's own plumbing: a process whose thread group
    /// is in `protected` (the agent, its init, the interpreter driver) is refused, whichever of
    /// its threads `id` names.
    pub fn kill(&self, id: &str, protected: &[i32]) -> KillOutcome {
        let mut procs = self.lock();
        let Some(p) = procs
            .values_mut()
            .find(|p| p.id == id || p.pid.to_string() == id)
        else {
            // A pid from the system process list that no background run owns.
            return kill_pid(id, protected);
        };
        if p.status == ProcStatus::Running {
            crate::tree::kill_tree(p.pid, &p.execution_id);
            p.status = ProcStatus::Killed;
        }
        KillOutcome::Killed
    }
}

/// What a kill request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillOutcome {
    Killed,
    NotFound,
    /// The process is part of the agent: killing it would break the sandbox.
    Refused,
}

fn kill_pid(id: &str, protected: &[i32]) -> KillOutcome {
    let Ok(pid) = id.parse::<i32>() else {
        return KillOutcome::NotFound;
    };
    // A thread id names its whole process to kill(2): judge the thread group.
    let Some(group) = thread_group(pid) else {
        return KillOutcome::NotFound;
    };
    if group <= 1 || group == std::process::id() as i32 || protected.contains(&group) {
        return KillOutcome::Refused;
    }
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        Ok(()) => KillOutcome::Killed,
        Err(_) => KillOutcome::NotFound,
    }
}

/// The thread group (process) that thread or process `tid` belongs to.
fn thread_group(tid: i32) -> Option<i32> {
    if tid <= 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn find<'a>(procs: &'a BTreeMap<String, Proc>, id: &str) -> Option<&'a Proc> {
    procs
        .get(id)
        .or_else(|| procs.values().find(|p| p.pid.to_string() == id))
}

fn evict_finished(procs: &mut BTreeMap<String, Proc>) {
    let mut finished: Vec<(Instant, String)> = procs
        .values()
        .filter_map(|p| p.ended.map(|(_, at)| (at, p.id.clone())))
        .collect();
    if finished.len() < KEEP_FINISHED {
        return;
    }
    finished.sort();
    for (_, id) in finished.iter().take(finished.len() + 1 - KEEP_FINISHED) {
        procs.remove(id);
    }
}

/// What a process runs, for its name: the program, or for `sh -c SCRIPT` (what the SDKs send for
/// commands) the script's first word: `sleep 60` is "sleep", `python app.py` is "python".
fn program_name(program: &str, args: &[String]) -> String {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    let shell = matches!(base(program).as_str(), "bash" | "sh" | "dash" | "zsh");
    let script = match args {
        [flag, script, ..] if shell && flag == "-c" => script.split_whitespace().next(),
        _ => None,
    };
    match script.map(base).filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => base(program),
    }
}

/// CPU (share of one core over its life) and memory (share of the sandbox's memory) of a running
/// process, for resource monitors.
fn usage(p: &Proc, memory_mb: u32) -> (f64, f64) {
    let Some(s) = (p.status == ProcStatus::Running)
        .then(|| crate::proc_stats::sample(p.pid as i32))
        .flatten()
    else {
        return (0.0, 0.0);
    };
    let life = p.started.elapsed().as_secs_f64().max(0.001);
    let memory = (u64::from(memory_mb) * 1024 * 1024).max(1) as f64;
    (
        (s.cpu_seconds / life * 100.0).min(100.0 * 64.0),
        s.rss_bytes as f64 / memory * 100.0,
    )
}

fn describe(p: &Proc) -> Value {
    let end = p.ended.map(|(at, _)| crate::time_fmt::rfc3339(at));
    let start = crate::time_fmt::rfc3339(p.started_at);
    let duration = match p.ended {
        Some((_, at)) => at.duration_since(p.started),
        None => p.started.elapsed(),
    };
    json!({
        "process_id": p.id,
        "execution_id": p.id,
        "name": p.name,
        "status": p.status.as_str(),
        "language": p.language,
        "command": p.command,
        "pid": p.pid,
        "exit_code": p.exit_code,
        "start_time": start,
        "started_at": start,
        "end_time": end,
        "duration": duration.as_secs_f64(),
        "stdout_bytes": p.stdout.end(),
        "stderr_bytes": p.stderr.end(),
    })
}
