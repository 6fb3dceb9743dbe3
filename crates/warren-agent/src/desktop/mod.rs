//! The Hopx desktop API (`/desktop/*`, spec §5.6): VNC, mouse, keyboard, clipboard, screenshots,
//! recordings, windows, display size, OCR. Both SDKs' spellings are served (they differ in paths,
//! methods and bodies for the same features). Everything acts on display :1 through the X tools
//! the `desktop` template ships, run as its unprivileged user; a sandbox without a desktop
//! answers `DESKTOP_NOT_AVAILABLE`.

mod capture;
mod input;
mod ocr;
mod recording;
mod screen;
mod unavailable;
mod vnc;
mod windows;
pub mod x;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::AgentError;

/// What the desktop API remembers between calls.
#[derive(Default)]
pub struct Desktop {
    clipboard: input::ClipboardHistory,
    recordings: recording::Recordings,
    vnc: vnc::VncState,
}

pub type DesktopState = Arc<Desktop>;

pub fn router() -> Router {
    let state: DesktopState = Arc::default();
    let api = Router::new()
        .route("/desktop/vnc/start", get(vnc::start).post(vnc::start))
        .route("/desktop/vnc/stop", get(vnc::stop).post(vnc::stop))
        .route("/desktop/vnc/status", get(vnc::status))
        .route("/desktop/vnc/info", get(vnc::status))
        .route("/desktop/vnc/websockify", get(vnc::websocket))
        .route("/desktop/vnc/view", get(vnc::viewer_root))
        .route("/desktop/vnc/view/{*file}", get(vnc::viewer_file))
        .route("/desktop/mouse/click", post(input::click))
        .route("/desktop/mouse/move", post(input::move_to))
        .route("/desktop/mouse/drag", post(input::drag))
        .route("/desktop/x11/drag_drop", post(input::drag))
        .route("/desktop/x11/drag-drop", post(input::drag))
        .route("/desktop/mouse/scroll", post(input::scroll))
        .route("/desktop/keyboard/type", post(input::type_text))
        .route("/desktop/keyboard/press", post(input::press))
        .route("/desktop/keyboard/combination", post(input::combination))
        .route("/desktop/x11/hotkey", post(input::combination))
        .route("/desktop/clipboard/set", post(input::clipboard_set))
        .route("/desktop/clipboard/get", get(input::clipboard_get))
        .route("/desktop/clipboard/history", get(input::clipboard_history))
        .route(
            "/desktop/screenshot",
            get(screen::screenshot).post(screen::screenshot),
        )
        .route("/desktop/screenshot/region", post(screen::region))
        .route("/desktop/x11/capture_window", get(screen::capture_window))
        .route("/desktop/display", get(screen::display))
        .route("/desktop/display/info", get(screen::display))
        .route("/desktop/display/current", get(screen::display))
        .route("/desktop/display/available", get(screen::resolutions))
        .route("/desktop/display/resolutions", get(screen::resolutions))
        .route("/desktop/display/set", post(screen::set_resolution))
        .route("/desktop/display/resolution", post(screen::set_resolution))
        .route("/desktop/x11/ocr", post(ocr::ocr))
        .route("/desktop/x11/find_element", post(ocr::find_element))
        .route("/desktop/x11/wait_for", post(ocr::wait_for))
        .route("/desktop/x11/get_bounds", post(ocr::bounds))
        .route("/desktop/recording/start", post(recording::start))
        .route("/desktop/recording/stop", post(recording::stop))
        .route("/desktop/recording/status", get(recording::status))
        .route("/desktop/recording/download", get(recording::download))
        .route(
            "/desktop/recording/{id}/download",
            get(recording::download_by_path),
        )
        .route("/desktop/windows", get(windows::list))
        .route("/desktop/windows/list", get(windows::list))
        .route("/desktop/windows/focus", post(windows::focus))
        .route("/desktop/windows/close", post(windows::close))
        .route("/desktop/windows/minimize", post(windows::minimize))
        .route("/desktop/windows/resize", post(windows::resize))
        .route("/desktop/debug/logs", get(debug_logs))
        .route("/desktop/debug/processes", get(debug_processes))
        // A path no SDK uses: the caller's mistake, said as such.
        .route("/desktop/{*rest}", any(unknown))
        .with_state(state);
    api.layer(middleware::from_fn(require_desktop))
}

/// Without a running display every desktop path answers `DESKTOP_NOT_AVAILABLE`.
async fn require_desktop(req: Request, next: Next) -> Response {
    if std::path::Path::new(x::X_SOCKET).exists() {
        next.run(req).await
    } else {
        unavailable::unavailable().await
    }
}

async fn unknown() -> AgentError {
    AgentError::new(
        axum::http::StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such desktop endpoint (see the Hopx desktop API)",
    )
}

/// A JSON body as either SDK sends it: an empty body (JS posts some calls without one) is `{}`.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, AgentError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| {
        AgentError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "INVALID_JSON",
            format!("invalid request body: {e}"),
        )
    })
}

/// A number the SDKs send as a JSON number or a string ("0x1a00003" for X window ids).
pub(crate) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => i64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    }
}

pub(crate) fn ok() -> Response {
    axum::Json(serde_json::json!({ "success": true })).into_response()
}

/// The last lines of the desktop's own logs (X server, window manager, panel, recordings).
async fn debug_logs() -> Response {
    let mut logs = Vec::new();
    if let Ok(dir) = std::fs::read_dir(LOG_DIR) {
        let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(50);
            logs.extend(lines[from..].iter().map(|l| format!("[{name}] {l}")));
        }
    }
    axum::Json(serde_json::json!({ "logs": logs })).into_response()
}

/// Where the desktop's start command and the recordings write their logs.
pub(crate) const LOG_DIR: &str = "/tmp/warren-desktop";

/// The desktop user's processes: the X server, window manager, panel, and what runs on them.
async fn debug_processes() -> Response {
    let uid = x::desktop_user().uid;
    let mut processes = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let path = e.path();
            let owner = std::os::unix::fs::MetadataExt::uid(&match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            });
            if owner != uid {
                continue;
            }
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let command = std::fs::read(path.join("cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            processes
                .push(serde_json::json!({ "pid": pid, "name": name.trim(), "command": command }));
        }
    }
    axum::Json(serde_json::json!({ "processes": processes })).into_response()
}
