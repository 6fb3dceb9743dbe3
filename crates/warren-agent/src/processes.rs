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
    pub name: Option<String>,
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
        {
            let mut procs = self.lock();
            evict_finished(&mut procs);
            procs.insert(
                id.clone(),
                Proc {
                    id: id.clone(),
                    execution_id: spawned.execution_id.clone(),
                    name: req.name.clone(),
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
            "name": req.name,
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

    /// Kills the whole tree of `id` (a process id or a pid). False if there is no such process.
    pub fn kill(&self, id: &str) -> bool {
        let mut procs = self.lock();
        let Some(p) = procs
            .values_mut()
            .find(|p| p.id == id || p.pid.to_string() == id)
        else {
            // A pid from the system process list that no background run owns.
            return kill_pid(id);
        };
        if p.status == ProcStatus::Running {
            crate::tree::kill_tree(p.pid, &p.execution_id);
            p.status = ProcStatus::Killed;
        }
        true
    }
}

fn kill_pid(id: &str) -> bool {
    match id.parse::<i32>() {
        Ok(pid) if pid > 1 && pid as u32 != std::process::id() => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok(),
        _ => false,
    }
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
