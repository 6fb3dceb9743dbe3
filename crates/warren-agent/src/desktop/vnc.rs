//! VNC for people watching or taking over: Xvnc serves RFB on the sandbox's loopback only; the
//! way in from outside is this agent's WebSocket bridge (`/desktop/vnc/websockify`) and noVNC's
//! viewer (`/desktop/vnc/view/`), both behind the host's token check. The URLs answered here are
//! paths; the host's proxy makes them absolute and adds the token (the agent never holds one).

use std::path::{Component, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yawc::frame::{Frame, OpCode};

use super::{body, DesktopState};
use crate::error::AgentError;

/// Xvnc's RFB port for display :1 (loopback only).
pub const RFB_PORT: u16 = 5901;
const VIEWER_DIR: &str = "/usr/share/novnc";
/// The viewer, scaled to the browser window (resizing the display for a watcher would change
/// what the agent driving the desktop sees), connecting to the bridge below.
const VIEWER_URL: &str =
    "/desktop/vnc/view/vnc.html?autoconnect=1&reconnect=1&resize=scale&path=desktop/vnc/websockify";
const WEBSOCKET_PATH: &str = "/desktop/vnc/websockify";

pub struct VncState {
    /// Whether the bridge lets viewers in (on from the start; `vnc/stop` turns it off and ends
    /// the open sessions).
    enabled: AtomicBool,
    stopped: tokio::sync::watch::Sender<u64>,
}

impl Default for VncState {
    fn default() -> Self {
        Self {
            enabled: AtomicBool::new(true),
            stopped: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Whether Xvnc listens, read from the socket table (a probe connection would fill its log).
fn rfb_listening() -> bool {
    let port = format!(":{RFB_PORT:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // local_address ends with the port; state 0A is LISTEN
                f.len() > 3 && format!("{} ", f[1]).ends_with(&port) && f[3] == "0A"
            })
        })
    })
}

async fn info(d: &DesktopState) -> Response {
    let running = d.vnc.enabled.load(Ordering::SeqCst) && rfb_listening();
    Json(json!({
        "running": running,
        "display": 1,
        "port": RFB_PORT,
        "url": if running { Some(VIEWER_URL) } else { None },
        "websocket_url": if running { Some(WEBSOCKET_PATH) } else { None },
        "password": null,
    }))
    .into_response()
}

/// Python posts `{display, password?}`; JS sends a GET.
#[derive(Deserialize, Default)]
pub struct StartVnc {
    display: Option<i64>,
}

pub async fn start(State(d): State<DesktopState>, bytes: Bytes) -> Result<Response, AgentError> {
    let s: StartVnc = body(&bytes)?;
    if let Some(n) = s.display.filter(|n| *n != 1) {
        return Err(AgentError::bad_request(format!(
            "this sandbox's desktop is display :1, not :{n}"
        )));
    }
    d.vnc.enabled.store(true, Ordering::SeqCst);
    Ok(info(&d).await)
}

pub async fn stop(State(d): State<DesktopState>) -> Response {
    d.vnc.enabled.store(false, Ordering::SeqCst);
    d.vnc.stopped.send_modify(|n| *n += 1);
    Json(json!({ "success": true, "running": false })).into_response()
}

pub async fn status(State(d): State<DesktopState>) -> Response {
    info(&d).await
}

pub async fn viewer_root(RawQuery(q): RawQuery) -> Response {
    let location = match q {
        Some(q) => format!("/desktop/vnc/view/vnc.html?{q}"),
        None => VIEWER_URL.to_owned(),
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        // Module scripts are refused by browsers under any other type.
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "ogg" | "oga" => "audio/ogg",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// noVNC's files, from the template's package.
pub async fn viewer_file(Path(file): Path<String>) -> Result<Response, AgentError> {
    let rel = std::path::Path::new(&file);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(AgentError::bad_request("invalid viewer path"));
    }
    let path = PathBuf::from(VIEWER_DIR).join(rel);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| AgentError::file_not_found(&format!("/desktop/vnc/view/{file}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type(&path)),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response())
}

/// Largest frame a viewer may send (RFB client messages are small).
const MAX_VIEWER_FRAME: usize = 1024 * 1024;

/// Bridges a WebSocket (binary frames) to the display's RFB port, as websockify does.
pub async fn websocket(
    State(d): State<DesktopState>,
    headers: HeaderMap,
    upgrade: yawc::IncomingUpgrade,
) -> Result<Response, AgentError> {
    if !d.vnc.enabled.load(Ordering::SeqCst) {
        return Err(AgentError::new(
            StatusCode::CONFLICT,
            "VNC_NOT_RUNNING",
            "VNC is stopped; start it with /desktop/vnc/start",
        ));
    }
    let rfb = tokio::net::TcpStream::connect(("127.0.0.1", RFB_PORT))
        .await
        .map_err(|e| {
            AgentError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "VNC_NOT_RUNNING",
                format!("the display's VNC server is not reachable: {e}"),
            )
        })?;
    // noVNC and websockify clients may ask for the "binary" subprotocol; it must be echoed.
    let binary_asked = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "binary"));
    let options = yawc::Options::default()
        .with_no_delay()
        .with_limits(MAX_VIEWER_FRAME, MAX_VIEWER_FRAME);
    let (mut response, fut) = upgrade
        .upgrade(options)
        .map_err(|e| AgentError::bad_request(format!("websocket upgrade failed: {e}")))?;
    if binary_asked {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("binary"),
        );
    }
    let mut stopped = d.vnc.stopped.subscribe();
    tokio::spawn(async move {
        let Ok(ws) = fut.await else { return };
        let (mut ws_tx, mut ws_rx) = ws.split();
        let (mut tcp_rx, mut tcp_tx) = rfb.into_split();
        let to_display = async {
            while let Some(frame) = ws_rx.next().await {
                let forward = match frame.opcode() {
                    OpCode::Binary | OpCode::Text => true,
                    OpCode::Close => break,
                    _ => false,
                };
                if forward && tcp_tx.write_all(frame.payload()).await.is_err() {
                    break;
                }
            }
        };
        let to_viewer = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tcp_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ws_tx
                            .send(Frame::binary(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            let _ = ws_tx
                .send(Frame::close(yawc::close::CloseCode::Normal, b""))
                .await;
        };
        tokio::select! {
            _ = to_display => {}
            _ = to_viewer => {}
            _ = stopped.changed() => {}
        }
    });
    Ok(response.into_response())
}
