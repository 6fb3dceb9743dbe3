//! Background processes: started, listed, read and killed by id. Output is retained up to a bound
//! so it can be read after the client went away.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::exec::{self, Invocation, SpawnError, MAX_CAPTURE};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProcStatus {
    Running,
    Completed,
    Failed,
    Killed,
}

impl ProcStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Killed => "killed",
        }
    }
}

pub struct Proc {
    pub id: String,
    pub name: Option<String>,
    pub language: String,
    pub command: String,
    pub pid: u32,
    pub status: ProcStatus,
    pub exit_code: Option<i32>,
    pub started_at: SystemTime,
    pub started: Instant,
    pub ended_at: Option<SystemTime>,
    pub stdout: String,
    pub stderr: String,
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

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Proc>> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start(&self, req: StartRequest<'_>) -> Result<Value, SpawnError> {
        let inv = &req.invocation;
        let mut child = exec::command(inv)?
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| SpawnError::Spawn(inv.program.to_owned(), e))?;
        let pid = child.id().unwrap_or(0);
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("proc_{n}_{pid}");
        let timeout = inv.timeout;
        let now = SystemTime::now();
        self.lock().insert(
            id.clone(),
            Proc {
                id: id.clone(),
                name: req.name.clone(),
                language: req.language,
                command: req.command,
                pid,
                status: ProcStatus::Running,
                exit_code: None,
                started_at: now,
                started: Instant::now(),
                ended_at: None,
                stdout: String::new(),
                stderr: String::new(),
            },
        );
        let table = self.clone();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let (id2, id3) = (id.clone(), id.clone());
        let t2 = self.clone();
        let t3 = self.clone();
        tokio::spawn(async move { t2.pump(&id2, out, true).await });
        tokio::spawn(async move { t3.pump(&id3, err, false).await });
        let cleanup = req.cleanup;
        let id_done = id.clone();
        tokio::spawn(async move {
            let status = match tokio::time::timeout(timeout, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    exec::kill_group(pid);
                    child.wait().await.ok()
                }
            };
            if let Some(c) = cleanup {
                crate::languages::cleanup(&c);
            }
            let mut procs = table.lock();
            if let Some(p) = procs.get_mut(&id_done) {
                let code = status.and_then(|s| s.code());
                p.exit_code = Some(code.unwrap_or(-1));
                p.ended_at = Some(SystemTime::now());
                if p.status == ProcStatus::Running {
                    p.status = if code == Some(0) {
                        ProcStatus::Completed
                    } else {
                        ProcStatus::Failed
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
        &self,
        id: &str,
        stream: Option<impl tokio::io::AsyncRead + Unpin>,
        is_stdout: bool,
    ) {
        let Some(mut stream) = stream else { return };
        let mut chunk = [0u8; 8192];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
            let mut procs = self.lock();
            let Some(p) = procs.get_mut(id) else { break };
            let buf = if is_stdout {
                &mut p.stdout
            } else {
                &mut p.stderr
            };
            if buf.len() < MAX_CAPTURE {
                buf.push_str(&text);
                if buf.len() >= MAX_CAPTURE {
                    buf.push_str("\n[output truncated]\n");
                }
            }
        }
    }

    pub fn list(&self) -> Vec<Value> {
        self.lock().values().map(describe).collect()
    }

    pub fn get(&self, id: &str) -> Option<Value> {
        self.lock().get(id).map(|p| {
            let mut v = describe(p);
            v["stdout"] = p.stdout.clone().into();
            v["stderr"] = p.stderr.clone().into();
            v
        })
    }

    /// Kills the process group of `id`. Returns false if there is no such process.
    pub fn kill(&self, id: &str) -> bool {
        let mut procs = self.lock();
        let Some(p) = procs
            .values_mut()
            .find(|p| p.id == id || p.pid.to_string() == id)
        else {
            return false;
        };
        if p.status == ProcStatus::Running {
            exec::kill_group(p.pid);
            p.status = ProcStatus::Killed;
        }
        true
    }
}

fn describe(p: &Proc) -> Value {
    let end = p.ended_at.map(crate::time_fmt::rfc3339);
    let start = crate::time_fmt::rfc3339(p.started_at);
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
        "duration": p.started.elapsed().as_secs_f64(),
    })
}
