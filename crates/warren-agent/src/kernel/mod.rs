//! The stateful Python interpreter behind `run_code(language="python")` and `/execute/ipython`:
//! one per sandbox (`driver.py`: plain Python with notebook semantics, switching to IPython's
//! shell when a cell uses IPython syntax), started when the agent boots, fed one cell at a time.
//! Variables, imports and figures survive between calls. A cell that times out kills the
//! interpreter's whole tree; a crash is reported; either way the next call starts a fresh one.
//! Templates without python3 fall back to one process per run (see `routes::execute`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

mod idle;

use crate::exec::MAX_CAPTURE;
use crate::tree;

const DRIVER: &str = include_str!("driver.py");
const DRIVER_PATH: &str = "/tmp/.warren/kernel_driver.py";
const MAIN_CAPTURE_DIR: &str = "/tmp/.warren";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What one cell needs.
pub struct Cell<'a> {
    pub code: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub workdir: &'a Path,
    pub timeout: Duration,
    /// Run through IPython's shell even without IPython syntax (`/execute/ipython`).
    pub ipython: bool,
}

pub enum CellOutcome {
    /// The driver's reply: stdout, stderr, exit_code, rich outputs.
    Done(Value),
    /// This template has no python3 to keep state in; run the code as a plain process instead.
    Unavailable,
    TimedOut,
    /// The interpreter died (or could not start); the next call starts a new one.
    Crashed(String),
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    replies: Lines<BufReader<ChildStdout>>,
    pid: u32,
    execution_id: String,
    kernel_id: String,
    started_at: SystemTime,
}

impl Running {
    fn kill(&mut self) {
        tree::kill_tree(self.pid, &self.execution_id);
    }
}

/// An interpreter nobody holds any more (a removed E2B context) ends with its whole tree.
impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    unavailable: Option<String>,
    executions: u64,
    last_activity: Option<SystemTime>,
}

#[derive(Default)]
pub struct Kernel {
    /// Where this interpreter's cells write their output (`cell.out`, `cell.err`): its own, so
    /// that interpreters running side by side (E2B contexts) never share capture files. None:
    /// the sandbox's main interpreter, in /tmp/.warren.
    capture_dir: Option<PathBuf>,
    state: Mutex<State>,
    /// Set while a cell runs; read by `/jupyter/sessions` without waiting for the cell.
    busy: std::sync::atomic::AtomicBool,
    /// The interpreter's pid from the moment it is spawned (0: none yet), so that a kill request
    /// can never reach it, not even while it starts.
    pid: std::sync::atomic::AtomicU32,
    summary: std::sync::Mutex<Option<Value>>,
}

/// Why the interpreter did not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("interpreter pipes missing")]
    NoPipes,
    #[error("the interpreter did not start")]
    NoHello,
}

fn cannot(what: &'static str) -> impl FnOnce(std::io::Error) -> StartError {
    move |source| StartError::Io { what, source }
}

async fn start(
    env: &BTreeMap<String, String>,
    capture_dir: &Path,
    announce: &std::sync::atomic::AtomicU32,
) -> Result<Option<Running>, StartError> {
    tokio::fs::create_dir_all("/tmp/.warren")
        .await
        .map_err(cannot("create /tmp/.warren"))?;
    tokio::fs::write(DRIVER_PATH, DRIVER)
        .await
        .map_err(cannot("write the interpreter driver"))?;
    let execution_id = tree::new_execution_id();
    let mut cmd = Command::new("python3");
    cmd.arg("-u")
        .arg(DRIVER_PATH)
        .env_clear()
        .envs(env)
        .env(tree::MARKER, &execution_id)
        .env("WARREN_KERNEL_DIR", capture_dir)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(false);
    // SAFETY: only async-signal-safe calls between fork and exec (setsid, open, write, close).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            crate::exec::prefer_for_oom_kill();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // No python3 in this template: same as no IPython.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot("start python3")(e)),
    };
    let pid = child.id().unwrap_or(0);
    announce.store(pid, std::sync::atomic::Ordering::Relaxed);
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(StartError::NoPipes);
    };
    let mut replies = BufReader::new(stdout).lines();
    let hello = tokio::time::timeout(START_TIMEOUT, replies.next_line()).await;
    let hello: Value = match hello {
        Ok(Ok(Some(line))) => serde_json::from_str(&line).unwrap_or(Value::Null),
        _ => {
            tree::kill_tree(pid, &execution_id);
            return Err(StartError::NoHello);
        }
    };
    if hello["ready"] != true {
        let _ = child.wait().await;
        tracing::info!(reason = %hello["error"], "no stateful interpreter in this template; runs are one-shot");
        return Ok(None);
    }
    Ok(Some(Running {
        child,
        stdin,
        replies,
        pid,
        execution_id,
        kernel_id: format!("kernel-{}", tree::new_execution_id()),
        started_at: SystemTime::now(),
    }))
}

impl Kernel {
    /// An interpreter of its own, capturing output in `capture_dir`.
    pub fn in_dir(capture_dir: PathBuf) -> Self {
        Self {
            capture_dir: Some(capture_dir),
            ..Self::default()
        }
    }

    /// Where a running cell's output grows: `(stdout, stderr)` files.
    pub fn capture_files(&self) -> (PathBuf, PathBuf) {
        let dir = self.dir();
        (dir.join("cell.out"), dir.join("cell.err"))
    }

    fn dir(&self) -> PathBuf {
        self.capture_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(MAIN_CAPTURE_DIR))
    }

    /// Starts the interpreter ahead of the first cell once the machine has a CPU to spare (see
    /// `idle`); a cell that comes first starts it itself.
    pub async fn warm_when_idle(&self, env: &BTreeMap<String, String>) {
        idle::until_a_cpu_is_free().await;
        self.warm(env).await;
    }

    /// Starts the interpreter ahead of the first cell, so that cell does not pay for it.
    pub async fn warm(&self, env: &BTreeMap<String, String>) {
        let mut state = self.state.lock().await;
        if state.running.is_some() || state.unavailable.is_some() {
            return;
        }
        match start(env, &self.dir(), &self.pid).await {
            Ok(Some(r)) => {
                *self.summary.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(describe(&r, &state));
                state.running = Some(r);
            }
            Ok(None) => state.unavailable = Some("no python3".into()),
            Err(e) => tracing::warn!(error = %e, "interpreter did not start ahead of time"),
        }
    }

    pub async fn run(&self, cell: Cell<'_>) -> CellOutcome {
        self.run_live(cell, None).await
    }

    /// Runs a cell; with `live`, its output is also handed over while it grows, as
    /// (`"stdout"` or `"stderr"`, text), every output byte exactly once, before the outcome.
    pub async fn run_live(
        &self,
        cell: Cell<'_>,
        mut live: Option<&mut LiveOutput<'_>>,
    ) -> CellOutcome {
        let mut state = self.state.lock().await;
        if state.unavailable.is_some() {
            return CellOutcome::Unavailable;
        }
        if state.running.is_none() {
            match start(cell.env, &self.dir(), &self.pid).await {
                Ok(Some(r)) => state.running = Some(r),
                Ok(None) => {
                    state.unavailable = Some("no python3".into());
                    return CellOutcome::Unavailable;
                }
                Err(e) => return CellOutcome::Crashed(e.to_string()),
            }
        }
        let Some(running) = state.running.as_mut() else {
            return CellOutcome::Crashed("interpreter missing".into());
        };
        let request = json!({
            "code": cell.code,
            "env": cell.env,
            "workdir": cell.workdir,
            "limit": MAX_CAPTURE,
            "ipython": cell.ipython,
        });
        self.busy.store(true, std::sync::atomic::Ordering::Relaxed);
        // The previous cell's output must not be mistaken for this one's.
        let mut tails = if live.is_some() {
            let (out, err) = self.capture_files();
            let _ = std::fs::write(&out, b"");
            let _ = std::fs::write(&err, b"");
            Some([Tail::new(out, "stdout"), Tail::new(err, "stderr")])
        } else {
            None
        };
        let outcome = async {
            running
                .stdin
                .write_all(format!("{request}\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let reply = running.replies.next_line();
            tokio::pin!(reply);
            let mut tick = tokio::time::interval(LIVE_POLL);
            loop {
                tokio::select! {
                    line = &mut reply => return line.map_err(|e| e.to_string()),
                    _ = tick.tick(), if live.is_some() => {
                        if let (Some(tails), Some(sink)) = (tails.as_mut(), live.as_mut()) {
                            for t in tails.iter_mut() {
                                t.pass_on(sink, false).await;
                            }
                        }
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(cell.timeout, outcome).await;
        if let (Some(tails), Some(sink)) = (tails.as_mut(), live.as_mut()) {
            for t in tails.iter_mut() {
                t.pass_on(sink, true).await;
            }
        }
        self.busy.store(false, std::sync::atomic::Ordering::Relaxed);
        state.last_activity = Some(SystemTime::now());
        let result = match outcome {
            Ok(Ok(Some(line))) => match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    state.executions += 1;
                    CellOutcome::Done(v)
                }
                Err(e) => CellOutcome::Crashed(format!("unreadable reply: {e}")),
            },
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = match state.running.as_mut() {
                    Some(r) => r.child.wait().await.ok(),
                    None => None,
                };
                CellOutcome::Crashed(format!(
                    "the Python interpreter died ({}); its state is lost and the next run starts a fresh one",
                    status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
                ))
            }
            Err(_) => CellOutcome::TimedOut,
        };
        if matches!(result, CellOutcome::TimedOut | CellOutcome::Crashed(_)) {
            if let Some(mut r) = state.running.take() {
                r.kill();
                let _ = r.child.wait().await;
            }
        }
        *self.summary.lock().unwrap_or_else(|p| p.into_inner()) =
            state.running.as_ref().map(|r| describe(r, &state));
        result
    }

    /// The interpreter's pid, if one was started.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(std::sync::atomic::Ordering::Relaxed)).filter(|p| *p > 0)
    }

    /// `/jupyter/sessions`: the interpreter, if one runs.
    pub fn sessions(&self) -> Vec<Value> {
        let busy = self.busy.load(std::sync::atomic::Ordering::Relaxed);
        self.summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|mut v| {
                v["execution_state"] = if busy { "busy" } else { "idle" }.into();
                v
            })
            .into_iter()
            .collect()
    }
}

fn describe(r: &Running, state: &State) -> Value {
    json!({
        "kernel_id": r.kernel_id,
        "id": r.kernel_id,
        "name": "python3",
        "language": "python",
        "execution_state": "idle",
        "connections": 1,
        "pid": r.pid,
        "execution_count": state.executions,
        "started": crate::time_fmt::rfc3339(r.started_at),
        "last_activity": state.last_activity.map(crate::time_fmt::rfc3339),
    })
}

/// Where a running cell's output goes as it grows: (stream name, text). The future it returns is
/// awaited before more is read, so a slow reader holds the tailing back (the interpreter's own
/// capture files, bounded by `MAX_CAPTURE`, keep what is not read yet).
pub type LiveOutput<'a> =
    dyn FnMut(&'static str, String) -> futures_util::future::BoxFuture<'static, ()> + Send + 'a;

/// How often a running cell's capture files are read for live output.
const LIVE_POLL: Duration = Duration::from_millis(40);

/// Reads what a capture file gained since the last read, in whole characters.
struct Tail {
    path: PathBuf,
    stream: &'static str,
    offset: u64,
    chunker: crate::output::Utf8Chunker,
}

impl Tail {
    fn new(path: PathBuf, stream: &'static str) -> Self {
        Self {
            path,
            stream,
            offset: 0,
            chunker: Default::default(),
        }
    }

    /// What the file gained since the last read, in whole characters (None: nothing).
    fn read_new(&mut self) -> Option<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path).ok()?;
        // Never more than the interpreter keeps of one cell's output.
        let room = (MAX_CAPTURE as u64).saturating_sub(self.offset);
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(self.offset)).ok()?;
        f.take(room).read_to_end(&mut buf).ok()?;
        self.offset += buf.len() as u64;
        Some(self.chunker.feed(&buf)).filter(|t| !t.is_empty())
    }

    /// Hands what the file gained to `sink`; with `last`, also a character cut in half.
    async fn pass_on(&mut self, sink: &mut LiveOutput<'_>, last: bool) {
        if let Some(text) = self.read_new() {
            sink(self.stream, text).await;
        }
        if last {
            let text = self.chunker.finish();
            if !text.is_empty() {
                sink(self.stream, text).await;
            }
        }
    }
}

/// Seconds since `started`, for replies.
pub fn elapsed(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}
