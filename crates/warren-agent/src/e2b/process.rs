//! envd's `process.Process` service: commands started with pipes or on a PTY, each tracked by
//! pid (and an optional tag) until it ends, so later calls can attach to its output (`Connect`),
//! feed it input, resize its terminal or signal it. Output goes to every attached stream through
//! a broadcast channel; a stream that falls too far behind loses the oldest output rather than
//! holding the agent's memory.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::sync::broadcast;

use super::connect::{self, Code, RpcError, StreamSender};
use super::users::{self, User};
use super::E2b;
use crate::pty::Shell;
use crate::tree;

/// Output events kept for attached streams that are slow to read.
const BACKLOG: usize = 1024;
/// After the process exits, how long output still held open by its background children is read.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Processes {
    table: Mutex<HashMap<u32, Arc<Proc>>>,
}

struct Proc {
    pid: u32,
    execution_id: String,
    tag: Option<String>,
    config: Value,
    events: broadcast::Sender<Value>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pty: Option<Arc<Shell>>,
}

impl Proc {
    fn info(&self) -> Value {
        let mut v = json!({ "config": self.config, "pid": self.pid });
        if let Some(t) = &self.tag {
            v["tag"] = json!(t);
        }
        v
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if sig == nix::sys::signal::Signal::SIGKILL {
            tree::kill_tree(self.pid, &self.execution_id);
        } else {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid as i32), sig);
        }
    }
}

impl Processes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Proc>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, selector: &Selector) -> Result<Arc<Proc>, RpcError> {
        let table = self.lock();
        let found = match selector {
            Selector { pid: Some(pid), .. } => table.get(pid).cloned(),
            Selector { tag: Some(tag), .. } => table
                .values()
                .find(|p| p.tag.as_deref() == Some(tag.as_str()))
                .cloned(),
            _ => return Err(RpcError::invalid("process selector needs a pid or a tag")),
        };
        found.ok_or_else(|| {
            RpcError::new(
                Code::NotFound,
                format!("process {} not found", selector.describe()),
            )
        })
    }
}

#[derive(Deserialize, Default)]
pub struct Selector {
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    tag: Option<String>,
}

impl Selector {
    fn describe(&self) -> String {
        match (&self.pid, &self.tag) {
            (Some(p), _) => format!("with pid {p}"),
            (_, Some(t)) => format!("with tag {t:?}"),
            _ => "(none named)".into(),
        }
    }
}

#[derive(Deserialize, Default)]
struct ProcessConfig {
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Deserialize, Default)]
struct Size {
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

#[derive(Deserialize, Default)]
struct Pty {
    #[serde(default)]
    size: Option<Size>,
}

#[derive(Deserialize, Default)]
struct StartRequest {
    #[serde(default)]
    process: Option<ProcessConfig>,
    #[serde(default)]
    pty: Option<Pty>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    stdin: Option<bool>,
}

fn event(inner: Value) -> Value {
    json!({ "event": inner })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_b64(s: &str) -> Result<Vec<u8>, RpcError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| RpcError::invalid(format!("input is not base64: {e}")))
}

/// `process.Process/Start`: a stream of the new process's events, from `start` to `end`.
pub async fn start(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    let req: StartRequest = match connect::read_message(&headers, body).await {
        Ok(r) => r,
        Err(e) => return connect::stream_error(e),
    };
    let user = match users::from_request(&headers, None) {
        Ok(u) => u,
        Err(e) => return connect::stream_error(e),
    };
    let (sender, response) = connect::server_stream();
    let deadline = connect::deadline(&headers);
    let keepalive = connect::keepalive_interval(&headers);
    match spawn(&state, req, &user) {
        Ok((proc, rx)) => {
            if let Some(limit) = deadline {
                // The call's deadline ends the command, as envd does.
                let p = proc.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    let running = state.tables.processes.lock().contains_key(&p.pid);
                    if running {
                        p.signal(nix::sys::signal::Signal::SIGKILL);
                    }
                });
            }
            tokio::spawn(follow(sender, proc.pid, rx, keepalive));
        }
        Err(e) => {
            tokio::spawn(sender.end(Some(e)));
        }
    }
    response
}

/// `process.Process/Connect`: attach to a running process's events.
pub async fn connect(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        process: Selector,
    }
    let req: Req = match connect::read_message(&headers, body).await {
        Ok(r) => r,
        Err(e) => return connect::stream_error(e),
    };
    let proc = match state.tables.processes.find(&req.process) {
        Ok(p) => p,
        Err(e) => return connect::stream_error(e),
    };
    let rx = proc.events.subscribe();
    let (sender, response) = connect::server_stream();
    tokio::spawn(follow(
        sender,
        proc.pid,
        rx,
        connect::keepalive_interval(&headers),
    ));
    response
}

/// Sends `start`, then every event until `end` (or the client leaves), with keepalives.
async fn follow(
    sender: StreamSender,
    pid: u32,
    mut rx: broadcast::Receiver<Value>,
    keepalive: Option<Duration>,
) {
    if !sender
        .send(&event(json!({ "start": { "pid": pid } })))
        .await
    {
        return;
    }
    let mut ticker = tokio::time::interval(keepalive.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    let last = ev.get("end").is_some();
                    if !sender.send(&event(ev)).await || last {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ticker.tick(), if keepalive.is_some() => {
                if !sender.send(&event(json!({ "keepalive": {} }))).await {
                    break;
                }
            }
        }
    }
    sender.end(None).await;
}

fn spawn(
    state: &E2b,
    req: StartRequest,
    user: &User,
) -> Result<(Arc<Proc>, broadcast::Receiver<Value>), RpcError> {
    let config = req
        .process
        .ok_or_else(|| RpcError::invalid("process.cmd is required"))?;
    if config.cmd.is_empty() {
        return Err(RpcError::invalid("process.cmd is required"));
    }
    let workdir = match config.cwd.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => user.resolve(c),
        None => match crate::routes::template_workdir().filter(|d| d.is_dir()) {
            Some(dir) => dir,
            None if user.home.is_dir() => user.home.clone(),
            None => "/".into(),
        },
    };
    if !workdir.is_dir() {
        return Err(RpcError::invalid(format!(
            "working directory {} does not exist",
            workdir.display()
        )));
    }
    let mut env = state.process_env(Some(&config.envs));
    env.insert("HOME".into(), user.home.display().to_string());
    env.insert("USER".into(), user.name.clone());
    env.insert("LOGNAME".into(), user.name.clone());
    for (k, v) in &config.envs {
        env.insert(k.clone(), v.clone());
    }
    let mut cmd = Command::new(&config.cmd);
    cmd.args(&config.args)
        .env_clear()
        .envs(&env)
        .current_dir(&workdir)
        .kill_on_drop(false);
    if user.uid != 0 {
        cmd.uid(user.uid).gid(user.gid);
    }
    let config_json = json!({
        "cmd": config.cmd, "args": config.args, "envs": config.envs,
        "cwd": workdir.display().to_string(),
    });
    let spawn_err = |e: std::io::Error| {
        RpcError::new(Code::Internal, format!("cannot start {}: {e}", config.cmd))
    };
    let (events, rx) = broadcast::channel(BACKLOG);
    let (proc, child, readers) = if let Some(pty) = req.pty {
        let size = pty.size.unwrap_or_default();
        let (shell, child) =
            crate::pty::spawn_on_pty(cmd, size.cols.max(1), size.rows.max(1)).map_err(spawn_err)?;
        let shell = Arc::new(shell);
        let proc = Arc::new(Proc {
            pid: shell.pid,
            execution_id: shell.execution_id.clone(),
            tag: req.tag,
            config: config_json,
            events: events.clone(),
            stdin: tokio::sync::Mutex::new(None),
            pty: Some(shell.clone()),
        });
        let reader = tokio::spawn(pump_pty(shell, events.clone()));
        (proc, child, vec![reader])
    } else {
        let execution_id = tree::new_execution_id();
        cmd.env(tree::MARKER, &execution_id)
            .stdin(if req.stdin.unwrap_or(false) {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec (setsid, open, write).
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                crate::exec::prefer_for_oom_kill();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let mut outputs: Vec<(&'static str, Box<dyn AsyncRead + Send + Unpin>)> = Vec::new();
        if let Some(o) = child.stdout.take() {
            outputs.push(("stdout", Box::new(o)));
        }
        if let Some(e) = child.stderr.take() {
            outputs.push(("stderr", Box::new(e)));
        }
        let proc = Arc::new(Proc {
            pid: child.id().unwrap_or(0),
            execution_id,
            tag: req.tag,
            config: config_json,
            events: events.clone(),
            stdin: tokio::sync::Mutex::new(child.stdin.take()),
            pty: None,
        });
        let readers = outputs
            .into_iter()
            .map(|(name, out)| tokio::spawn(pump(out, name, events.clone())))
            .collect();
        (proc, child, readers)
    };
    state.tables.processes.lock().insert(proc.pid, proc.clone());
    let state = state.clone();
    let waited = proc.clone();
    tokio::spawn(async move {
        let mut child = child;
        let status = child.wait().await.ok();
        for r in readers {
            let _ = tokio::time::timeout(DRAIN_GRACE, r).await;
        }
        state.tables.processes.lock().remove(&waited.pid);
        let _ = waited.events.send(end_event(status));
    });
    Ok((proc, rx))
}

fn end_event(status: Option<std::process::ExitStatus>) -> Value {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.code().is_some() => {
            let code = s.code().unwrap_or(-1);
            json!({ "end": { "exitCode": code, "exited": true, "status": format!("exit status {code}") } })
        }
        Some(s) => {
            let sig = s.signal().unwrap_or(0);
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| match s {
                    nix::sys::signal::Signal::SIGKILL => "killed".to_owned(),
                    nix::sys::signal::Signal::SIGTERM => "terminated".to_owned(),
                    other => other.as_str().to_lowercase(),
                })
                .unwrap_or_else(|_| sig.to_string());
            json!({ "end": { "exitCode": -1, "exited": false, "status": format!("signal: {name}") } })
        }
        None => {
            json!({ "end": { "exitCode": -1, "exited": false, "status": "unknown", "error": "the process could not be waited for" } })
        }
    }
}

async fn pump(
    mut out: Box<dyn AsyncRead + Send + Unpin>,
    name: &'static str,
    tx: broadcast::Sender<Value>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match out.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = tx.send(json!({ "data": { name: b64(&buf[..n]) } }));
            }
        }
    }
}

async fn pump_pty(shell: Arc<Shell>, tx: broadcast::Sender<Value>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match shell.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = tx.send(json!({ "data": { "pty": b64(&buf[..n]) } }));
            }
        }
    }
}

/// `process.Process/List`.
pub async fn list(State(state): State<E2b>) -> Response {
    let processes: Vec<Value> = state
        .tables
        .processes
        .lock()
        .values()
        .map(|p| p.info())
        .collect();
    connect::unary(Ok(json!({ "processes": processes })))
}

#[derive(Deserialize, Default)]
struct Input {
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    pty: Option<String>,
}

async fn write_input(proc: &Proc, input: Input) -> Result<(), RpcError> {
    if let Some(data) = input.pty {
        let shell = proc.pty.as_ref().ok_or_else(|| {
            RpcError::new(Code::FailedPrecondition, "the process has no terminal")
        })?;
        return shell.write_all(&decode_b64(&data)?).await.map_err(|e| {
            RpcError::new(Code::Internal, format!("cannot write to the terminal: {e}"))
        });
    }
    let data = decode_b64(input.stdin.as_deref().unwrap_or(""))?;
    if let Some(shell) = &proc.pty {
        return shell.write_all(&data).await.map_err(|e| {
            RpcError::new(Code::Internal, format!("cannot write to the terminal: {e}"))
        });
    }
    let mut stdin = proc.stdin.lock().await;
    let pipe = stdin.as_mut().ok_or_else(|| {
        RpcError::new(
            Code::FailedPrecondition,
            "the process's stdin is closed (start it with stdin enabled)",
        )
    })?;
    pipe.write_all(&data)
        .await
        .map_err(|e| RpcError::new(Code::Internal, format!("cannot write to stdin: {e}")))?;
    pipe.flush()
        .await
        .map_err(|e| RpcError::new(Code::Internal, e.to_string()))
}

/// `process.Process/SendInput`.
pub async fn send_input(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        process: Selector,
        #[serde(default)]
        input: Input,
    }
    let result = async {
        let req: Req = connect::read_message(&headers, body).await?;
        let proc = state.tables.processes.find(&req.process)?;
        write_input(&proc, req.input).await?;
        Ok(json!({}))
    }
    .await;
    connect::unary(result)
}

/// `process.Process/StreamInput`: a client stream naming the process, then its input in order.
pub async fn stream_input(State(state): State<E2b>, body: Body) -> Response {
    // Each message is written to the process before the next is read (see `ClientStream`).
    let mut messages = connect::ClientStream::new(body);
    let written = async {
        let mut target: Option<Arc<Proc>> = None;
        while let Some(m) = messages.next().await? {
            if let Some(start) = m.get("start") {
                let sel: Selector =
                    serde_json::from_value(start.get("process").cloned().unwrap_or_default())
                        .map_err(|e| RpcError::invalid(e.to_string()))?;
                target = Some(state.tables.processes.find(&sel)?);
            } else if let Some(data) = m.get("data") {
                let proc = target.as_ref().ok_or_else(|| {
                    RpcError::invalid("the stream must start by naming the process")
                })?;
                let input: Input =
                    serde_json::from_value(data.get("input").cloned().unwrap_or_default())
                        .map_err(|e| RpcError::invalid(e.to_string()))?;
                write_input(proc, input).await?;
            }
        }
        Ok::<(), RpcError>(())
    }
    .await;
    let (sender, response) = connect::server_stream();
    tokio::spawn(async move {
        match written {
            Ok(()) => {
                sender.send(&json!({})).await;
                sender.end(None).await;
            }
            Err(e) => sender.end(Some(e)).await,
        }
    });
    response
}

/// `process.Process/CloseStdin`.
pub async fn close_stdin(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        process: Selector,
    }
    let result = async {
        let req: Req = connect::read_message(&headers, body).await?;
        let proc = state.tables.processes.find(&req.process)?;
        if proc.pty.is_some() {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                "a terminal has no stdin to close; send Ctrl+D (0x04) instead",
            ));
        }
        proc.stdin.lock().await.take();
        Ok(json!({}))
    }
    .await;
    connect::unary(result)
}

/// `process.Process/SendSignal`.
pub async fn send_signal(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        process: Selector,
        #[serde(default)]
        signal: Value,
    }
    let result = async {
        let req: Req = connect::read_message(&headers, body).await?;
        let proc = state.tables.processes.find(&req.process)?;
        use nix::sys::signal::Signal;
        let sig = match &req.signal {
            Value::String(s) if s == "SIGNAL_SIGKILL" => Signal::SIGKILL,
            Value::String(s) if s == "SIGNAL_SIGTERM" => Signal::SIGTERM,
            Value::Number(n) if n.as_u64() == Some(9) => Signal::SIGKILL,
            Value::Number(n) if n.as_u64() == Some(15) => Signal::SIGTERM,
            other => return Err(RpcError::invalid(format!("unsupported signal {other}"))),
        };
        proc.signal(sig);
        Ok(json!({}))
    }
    .await;
    connect::unary(result)
}

/// `process.Process/Update`: resize a process's terminal.
pub async fn update(State(state): State<E2b>, headers: HeaderMap, body: Body) -> Response {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        process: Selector,
        #[serde(default)]
        pty: Option<Pty>,
    }
    let result = async {
        let req: Req = connect::read_message(&headers, body).await?;
        let proc = state.tables.processes.find(&req.process)?;
        if let Some(size) = req.pty.and_then(|p| p.size) {
            let shell = proc.pty.as_ref().ok_or_else(|| {
                RpcError::new(Code::FailedPrecondition, "the process has no terminal")
            })?;
            shell.resize(size.cols, size.rows);
        }
        Ok(json!({}))
    }
    .await;
    connect::unary(result)
}
