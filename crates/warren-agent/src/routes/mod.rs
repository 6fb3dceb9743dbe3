//! The agent API, one module per domain (spec §5).

mod commands;
mod env;
mod execute;
mod files;
mod stream;
mod system;
mod terminal;
mod watch;
mod ws;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::state::AgentState;

/// Uploads and base64 writes can be large; the control plane's proxy applies the real limit.
const MAX_BODY: usize = 2 * 1024 * 1024 * 1024;

pub fn router(state: AgentState) -> Router {
    Router::new()
        .route("/", get(system::root))
        .route("/ping", get(system::ping))
        .route("/system", get(system::system))
        .route("/metrics/prometheus", get(system::prometheus))
        .route("/update/upload", post(system::update_refused))
        .route("/update/apply", post(system::update_refused))
        .route("/update/restart", post(system::update_refused))
        .route("/update/backups", get(system::update_refused))
        .route("/stream", get(stream::execute_stream))
        .route("/stream/ipython", get(stream::execute_stream))
        .route("/commands/stream", get(stream::commands_stream))
        .route("/health", get(system::health))
        .route("/info", get(system::info))
        .route("/warren/clock", post(system::set_clock))
        .route("/warren/identity", post(system::set_identity))
        .route("/metrics/snapshot", get(system::metrics))
        .route("/metrics", get(system::metrics))
        .route("/processes", get(system::system_processes))
        .route("/processes/{id}/kill", post(execute::kill_by_path))
        .route("/jupyter/sessions", get(system::jupyter_sessions))
        .route("/cache/stats", get(system::cache_stats))
        .route("/cache/clear", post(system::cache_clear))
        .route("/execute", post(execute::execute))
        .route("/execute/background", post(execute::background))
        .route("/execute/ipython", post(execute::execute_ipython))
        .route("/execute/stream", get(stream::execute_stream))
        .route("/terminal", get(terminal::terminal))
        .route("/files/watch", get(watch::watch))
        .route("/execute/processes", get(execute::list_processes))
        .route("/execute/processes/{id}", get(execute::get_process))
        .route("/execute/kill/{id}", post(execute::kill_by_path))
        .route("/execute/kill", delete(execute::kill_by_query))
        .route("/commands/run", post(commands::run))
        .route("/commands/background", post(commands::background))
        .route("/files/read", get(files::read))
        .route("/files/download", get(files::download))
        .route("/files/write", post(files::write))
        .route("/files/list", get(files::list))
        .route("/files/exists", get(files::exists))
        .route("/files/remove", delete(files::remove))
        .route("/files/mkdir", post(files::mkdir))
        .route("/files/upload", post(files::upload))
        .route(
            "/env",
            get(env::get_all)
                .put(env::replace)
                .patch(env::merge)
                .delete(env::clear),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(state): State<AgentState>, mut req: Request, next: Next) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    state.total_requests.fetch_add(1, Relaxed);
    // Bodies are JSON unless multipart: some clients omit the header, and curl's `-d` labels JSON
    // as a form (no agent endpoint takes forms).
    let ct = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.is_empty() || ct.starts_with("application/x-www-form-urlencoded") {
        req.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
    }
    let res = next.run(req).await;
    if res.status().is_client_error() || res.status().is_server_error() {
        state.total_errors.fetch_add(1, Relaxed);
    }
    res
}

/// Writes a whole file through a temporary sibling renamed into place (see `files`).
pub(crate) async fn write_file_atomically(
    target: &std::path::Path,
    data: &[u8],
    shown: &str,
    prepare: impl FnOnce(&std::path::Path) -> std::io::Result<()>,
) -> Result<(), crate::error::AgentError> {
    files::write_atomically(target, data, None, shown, prepare).await
}

/// The sandbox's usage, as `/metrics` reports it.
pub(crate) fn usage_snapshot(state: &AgentState) -> serde_json::Value {
    system::metrics_value(state)
}

/// A path from a request, resolved inside the sandbox. Relative paths are relative to
/// `/workspace`. The agent's root *is* the sandbox root, so no spelling can leave it.
/// Longest path a request may name (the kernel's PATH_MAX).
const MAX_PATH: usize = 4096;

/// A path named by a request, checked (not empty, no NUL byte, not longer than PATH_MAX) and
/// resolved like `resolve`. A bad path is the caller's mistake: 400, never an internal error.
pub fn user_path(path: &str) -> Result<std::path::PathBuf, crate::error::AgentError> {
    use axum::http::StatusCode;
    if path.is_empty() {
        return Err(crate::error::AgentError::new(
            StatusCode::BAD_REQUEST,
            "MISSING_PARAMETER",
            "'path' is required",
        ));
    }
    let invalid = |why: &str| {
        crate::error::AgentError::new(StatusCode::BAD_REQUEST, "INVALID_PATH", why.to_owned())
    };
    if path.contains('\0') {
        return Err(invalid("the path contains a NUL byte"));
    }
    if path.len() > MAX_PATH {
        return Err(invalid("the path is longer than 4096 bytes"));
    }
    Ok(resolve(path))
}

pub fn resolve(path: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::path::Path::new("/workspace").join(p)
    }
}

static DEFAULT_WORKDIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sets the template's WORKDIR (created if missing) as the default working directory.
pub fn set_default_workdir(dir: &str) {
    let dir = resolve(dir);
    let _ = std::fs::create_dir_all(&dir);
    let _ = DEFAULT_WORKDIR.set(dir);
}

pub fn default_workdir() -> std::path::PathBuf {
    DEFAULT_WORKDIR
        .get()
        .cloned()
        .unwrap_or_else(|| "/workspace".into())
}

/// The template's own WORKDIR, when it set one (not the platform's `/workspace`): E2B's
/// commands start there, as a template's last `set_workdir` is theirs on E2B.
pub fn template_workdir() -> Option<std::path::PathBuf> {
    DEFAULT_WORKDIR
        .get()
        .filter(|d| d.as_path() != std::path::Path::new("/workspace"))
        .cloned()
}

/// The working directory of a run: the requested one (resolved like any path), else the
/// template's WORKDIR. The SDKs send `/workspace` when the caller named none, so that value also
/// means "the default" — a template with a WORKDIR runs there.
pub fn workdir(requested: Option<&str>) -> std::path::PathBuf {
    match requested {
        None | Some("/workspace") | Some("") => default_workdir(),
        Some(dir) => resolve(dir),
    }
}
