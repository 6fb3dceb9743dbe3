//! The E2B code interpreter's API (port 49999 on E2B): `POST /execute` answers with NDJSON lines
//! (`stdout`, `stderr`, `result`, `error`, `number_of_executions`), and `/contexts` creates,
//! lists, restarts and removes independent interpreter states. The default context is the
//! sandbox's own stateful interpreter, the one Hopx's `run_code` uses, so both APIs see the same
//! variables. Other languages run as one process per call, like Hopx's `run_code` does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::E2b;
use crate::kernel::{Cell, CellOutcome, Kernel};

/// A cell may run this long unless the client gives up sooner (the SDKs default to 300 s).
const CELL_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct Contexts {
    table: Mutex<HashMap<String, Arc<Context>>>,
}

struct Context {
    id: String,
    language: String,
    cwd: String,
    kernel: Kernel,
}

impl Context {
    fn describe(&self) -> Value {
        json!({ "id": self.id, "language": self.language, "cwd": self.cwd })
    }
}

impl Contexts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Context>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn default_cwd() -> String {
    if std::path::Path::new("/home/user").is_dir() {
        "/home/user".into()
    } else {
        crate::routes::workdir(None).display().to_string()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

#[derive(Deserialize)]
pub struct ExecuteRequest {
    code: String,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
}

fn timestamp() -> String {
    crate::time_fmt::now()
}

fn output_line(stream: &str, text: &str) -> Value {
    json!({ "type": stream, "text": text, "timestamp": timestamp() })
}

/// The lines of one finished cell (its output too, unless it was sent while the cell ran).
fn cell_lines(reply: &Value, with_output: bool) -> Vec<Value> {
    let mut lines = Vec::new();
    let text = |k: &str| reply.get(k).and_then(Value::as_str).unwrap_or("");
    let stdout = text("stdout");
    if with_output && !stdout.is_empty() {
        lines.push(output_line("stdout", stdout));
    }
    let stderr = reply
        .get("user_stderr")
        .and_then(Value::as_str)
        .unwrap_or_else(|| text("stderr"));
    if with_output && !stderr.is_empty() {
        lines.push(output_line("stderr", stderr));
    }
    for output in reply
        .get("outputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        lines.push(result_line(output));
    }
    if let Some(e) = reply.get("exception").filter(|e| !e.is_null()) {
        lines.push(json!({
            "type": "error",
            "name": e["name"], "value": e["value"], "traceback": e["traceback"],
        }));
    }
    if let Some(n) = reply.get("execution_count").and_then(Value::as_u64) {
        lines.push(json!({ "type": "number_of_executions", "execution_count": n }));
    }
    lines
}

/// A rich output as the SDKs' `Result`: one key per format.
fn result_line(bundle: &Value) -> Value {
    let mut line =
        json!({ "type": "result", "is_main_result": bundle["main"].as_bool().unwrap_or(false) });
    let keys = [
        ("text/plain", "text"),
        ("text/html", "html"),
        ("text/markdown", "markdown"),
        ("image/svg+xml", "svg"),
        ("image/png", "png"),
        ("image/jpeg", "jpeg"),
        ("application/pdf", "pdf"),
        ("text/latex", "latex"),
        ("application/json", "json"),
        ("application/javascript", "javascript"),
    ];
    for (mime, key) in keys {
        if let Some(v) = bundle.get(mime).filter(|v| !v.is_null()) {
            line[key] = v.clone();
        }
    }
    let mut extra = serde_json::Map::new();
    if let Some(obj) = bundle.as_object() {
        for (k, v) in obj {
            if k != "main" && !keys.iter().any(|(m, _)| m == k) {
                extra.insert(k.clone(), v.clone());
            }
        }
    }
    if !extra.is_empty() {
        line["extra"] = Value::Object(extra);
    }
    line
}

/// A streamed NDJSON answer, a line as each value arrives.
/// Lines of a running cell's answer waiting for its reader.
const OUTPUT_DEPTH: usize = 16;

fn ndjson_stream(mut rx: tokio::sync::mpsc::Receiver<Value>) -> Response {
    let lines = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|v| Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(format!("{v}\n"))));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_default()
}

fn ndjson(lines: Vec<Value>) -> Response {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from(body))
        .unwrap_or_default()
}

pub async fn execute(State(state): State<E2b>, Json(req): Json<ExecuteRequest>) -> Response {
    let env = state.process_env(req.env_vars.as_ref());
    let context = match req.context_id.as_deref().filter(|c| !c.is_empty()) {
        Some(id) => match state.tables.contexts.lock().get(id).cloned() {
            Some(c) => Some(c),
            None => return error(StatusCode::NOT_FOUND, format!("context {id} not found")),
        },
        None => None,
    };
    let language = context
        .as_ref()
        .map(|c| c.language.clone())
        .or(req.language.clone())
        .unwrap_or_else(|| "python".into());
    let Some(canonical) = crate::languages::canonical(&language) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported language {language:?}; supported: {}",
                crate::languages::SUPPORTED
            ),
        );
    };
    if canonical != "python" {
        let _guard = state.count_execution();
        return run_once(canonical, &req.code, &env, context.as_deref()).await;
    }
    let cwd = context
        .as_ref()
        .map(|c| c.cwd.clone())
        .unwrap_or_else(default_cwd);
    // Output goes out while the cell runs (the SDKs' on_stdout/on_stderr fire as it comes); the
    // cell runs to its end even if the client leaves, like a notebook's.
    // A bounded channel: a reader that falls behind holds the tailing back (see `LiveOutput`).
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(OUTPUT_DEPTH);
    tokio::spawn(async move {
        let _guard = state.count_execution();
        let kernel = context.as_ref().map(|c| &c.kernel).unwrap_or(&state.kernel);
        let live_tx = tx.clone();
        let mut live = move |stream: &'static str, text: String| {
            let tx = live_tx.clone();
            Box::pin(async move {
                let _ = tx.send(output_line(stream, &text)).await;
            }) as futures_util::future::BoxFuture<'static, ()>
        };
        let outcome = kernel
            .run_live(
                Cell {
                    code: &req.code,
                    env: &env,
                    workdir: std::path::Path::new(&cwd),
                    timeout: CELL_LIMIT,
                    ipython: false,
                },
                Some(&mut live),
            )
            .await;
        let lines = match outcome {
            CellOutcome::Done(reply) => cell_lines(&reply, false),
            CellOutcome::Unavailable => vec![json!({
                "type": "error", "name": "Unavailable",
                "value": "this template has no python3 for a stateful interpreter", "traceback": "",
            })],
            CellOutcome::TimedOut => vec![json!({
                "type": "error", "name": "TimeoutError",
                "value": "the cell ran too long; the interpreter was restarted", "traceback": "",
            })],
            CellOutcome::Crashed(why) => vec![json!({
                "type": "error", "name": "KernelDied", "value": why, "traceback": "",
            })],
        };
        for l in lines {
            let _ = tx.send(l).await;
        }
    });
    ndjson_stream(rx)
}

/// A cell of a language without a stateful interpreter: one process.
async fn run_once(
    language: &'static str,
    code: &str,
    env: &BTreeMap<String, String>,
    context: Option<&Context>,
) -> Response {
    let prepared = match crate::languages::prepare(language, code) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let cwd = context.map(|c| c.cwd.clone()).unwrap_or_else(default_cwd);
    let outcome = crate::exec::run(crate::exec::Invocation {
        program: &prepared.program,
        args: &prepared.args,
        env,
        workdir: std::path::Path::new(&cwd),
        timeout: CELL_LIMIT,
    })
    .await;
    crate::languages::cleanup(&prepared);
    match outcome {
        Ok(o) => {
            let mut reply = json!({ "stdout": o.stdout, "user_stderr": o.stderr });
            if o.exit_code != 0 {
                reply["exception"] = json!({
                    "name": "Error",
                    "value": format!("exited with code {}", o.exit_code),
                    "traceback": "",
                });
            }
            ndjson(cell_lines(&reply, true))
        }
        Err(e) => ndjson(vec![json!({
            "type": "error", "name": "Error", "value": e.to_string(), "traceback": "",
        })]),
    }
}

#[derive(Deserialize, Default)]
pub struct NewContext {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
}

pub async fn create_context(State(state): State<E2b>, body: axum::body::Bytes) -> Response {
    let req: NewContext = if body.iter().all(u8::is_ascii_whitespace) {
        NewContext::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
        }
    };
    let language = req
        .language
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "python".into());
    if crate::languages::canonical(&language).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unsupported language {language:?}"),
        );
    }
    let cwd = req
        .cwd
        .filter(|c| !c.is_empty())
        .unwrap_or_else(default_cwd);
    if !std::path::Path::new(&cwd).is_dir() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("directory {cwd} does not exist"),
        );
    }
    let id = crate::tree::new_execution_id();
    let context = Arc::new(Context {
        id: id.clone(),
        language,
        cwd,
        kernel: Kernel::in_dir(context_dir(&id)),
    });
    state
        .tables
        .contexts
        .lock()
        .insert(context.id.clone(), context.clone());
    Json(context.describe()).into_response()
}

/// Where a context's interpreter captures output: its own directory.
fn context_dir(id: &str) -> std::path::PathBuf {
    std::path::PathBuf::from("/tmp/.warren/contexts").join(id)
}

pub async fn list_contexts(State(state): State<E2b>) -> Json<Value> {
    let mut all = vec![json!({ "id": "default", "language": "python", "cwd": default_cwd() })];
    all.extend(state.tables.contexts.lock().values().map(|c| c.describe()));
    Json(Value::Array(all))
}

pub async fn remove_context(State(state): State<E2b>, UrlPath(id): UrlPath<String>) -> Response {
    match state.tables.contexts.lock().remove(&id) {
        // Dropping the context ends its interpreter.
        Some(_) => {
            let _ = std::fs::remove_dir_all(context_dir(&id));
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("context {id} not found")),
    }
}

pub async fn restart_context(State(state): State<E2b>, UrlPath(id): UrlPath<String>) -> Response {
    let mut table = state.tables.contexts.lock();
    let Some(old) = table.get(&id).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("context {id} not found"));
    };
    table.insert(
        id.clone(),
        Arc::new(Context {
            id,
            language: old.language.clone(),
            cwd: old.cwd.clone(),
            kernel: Kernel::in_dir(context_dir(&old.id)),
        }),
    );
    StatusCode::NO_CONTENT.into_response()
}
