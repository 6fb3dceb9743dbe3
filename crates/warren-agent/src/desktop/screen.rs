//! Screenshots and the display's size.

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body, capture, int_of, x};
use crate::error::AgentError;

/// A region of the screen.
#[derive(Deserialize, Clone, Copy)]
pub struct Area {
    pub(super) x: i64,
    pub(super) y: i64,
    pub(super) width: i64,
    pub(super) height: i64,
}

impl Area {
    pub(super) fn checked(self) -> Result<Self, AgentError> {
        let fits = |v: i64| (0..=32_767).contains(&v);
        if fits(self.x)
            && fits(self.y)
            && self.width > 0
            && self.height > 0
            && fits(self.width)
            && fits(self.height)
        {
            Ok(self)
        } else {
            Err(AgentError::bad_request(
                "region needs x, y >= 0 and width, height > 0",
            ))
        }
    }
}

/// The screen (or one window's area, or a region of the screen) as PNG.
async fn capture(window: Option<u32>, area: Option<Area>) -> Result<Vec<u8>, AgentError> {
    capture_scaled(window, area, 1).await
}

/// The same, enlarged `scale` times (for OCR).
pub(super) async fn capture_scaled(
    window: Option<u32>,
    area: Option<Area>,
    scale: u32,
) -> Result<Vec<u8>, AgentError> {
    let result = tokio::task::spawn_blocking(move || {
        let rect = match window {
            Some(id) => Some(capture::window_rect(id)?),
            None => area.map(|a| capture::Rect {
                x: a.x,
                y: a.y,
                width: a.width,
                height: a.height,
            }),
        };
        capture::screen_png(rect, scale)
    })
    .await
    .map_err(|e| {
        AgentError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            e.to_string(),
        )
    })?;
    result.map_err(|e| match e {
        capture::CaptureError::Outside(..) => AgentError::bad_request(e.to_string()),
        _ => AgentError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            e.to_string(),
        ),
    })
}

/// Width and height from a PNG's header.
fn png_size(png: &[u8]) -> (u32, u32) {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if png.len() >= 24 {
        (be(&png[16..20]), be(&png[20..24]))
    } else {
        (0, 0)
    }
}

/// The JS SDK (axios) asks for JSON first; Python takes whatever comes.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.trim_start().starts_with("application/json"))
}

fn png_response(png: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], png).into_response()
}

/// Bytes for a client that parses every answer as JSON and then calls `Buffer.from` on it (the
/// JS SDK's region screenshot and recording download): Node's own JSON form of a Buffer, which
/// `Buffer.from` turns back into the same bytes.
pub(crate) fn buffer_json(bytes: &[u8]) -> Response {
    Json(json!({ "type": "Buffer", "data": bytes })).into_response()
}

/// Python reads the PNG bytes; JS reads `{image (base64), format, width, height}`.
pub async fn screenshot(headers: HeaderMap) -> Result<Response, AgentError> {
    let png = capture(None, None).await?;
    if wants_json(&headers) {
        let (width, height) = png_size(&png);
        let image = base64::engine::general_purpose::STANDARD.encode(&png);
        return Ok(Json(
            json!({ "image": image, "format": "png", "width": width, "height": height }),
        )
        .into_response());
    }
    Ok(png_response(png))
}

pub async fn region(headers: HeaderMap, bytes: Bytes) -> Result<Response, AgentError> {
    let area: Area = body(&bytes)?;
    let png = capture(None, Some(area.checked()?)).await?;
    Ok(if wants_json(&headers) {
        buffer_json(&png)
    } else {
        png_response(png)
    })
}

#[derive(Deserialize)]
pub struct WindowQuery {
    window_id: Option<String>,
}

/// One window (the active one unless named) as PNG bytes (JS asks for an array buffer here).
pub async fn capture_window(Query(q): Query<WindowQuery>) -> Result<Response, AgentError> {
    let id = match q.window_id.filter(|w| !w.is_empty()) {
        Some(w) => int_of(&Value::String(w.clone()))
            .ok_or_else(|| AgentError::bad_request(format!("invalid window_id {w:?}")))?,
        None => {
            let out = x::run("xdotool", &["getactivewindow"]).await.map_err(|_| {
                AgentError::new(
                    StatusCode::NOT_FOUND,
                    "WINDOW_NOT_FOUND",
                    "no window is active",
                )
            })?;
            String::from_utf8_lossy(&out).trim().parse().map_err(|_| {
                AgentError::new(
                    StatusCode::NOT_FOUND,
                    "WINDOW_NOT_FOUND",
                    "no window is active",
                )
            })?
        }
    };
    super::windows::require(id).await?;
    let id = u32::try_from(id).map_err(|_| AgentError::bad_request("invalid window_id"))?;
    let png = capture(Some(id), None).await?;
    Ok(png_response(png))
}

/// The screen's current size.
pub(crate) async fn current_size() -> Result<(u32, u32), AgentError> {
    let out = x::run("xrandr", &["--current"]).await?;
    let text = String::from_utf8_lossy(&out);
    // "Screen 0: minimum 32 x 32, current 1280 x 800, maximum 32768 x 32768"
    let size = text.lines().next().and_then(|l| {
        let cur = l.split("current ").nth(1)?;
        let mut it = cur.split(',').next()?.split(" x ");
        Some((
            it.next()?.trim().parse().ok()?,
            it.next()?.trim().parse().ok()?,
        ))
    });
    size.ok_or_else(|| {
        AgentError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "cannot read the display size",
        )
    })
}

fn display_json(width: u32, height: u32) -> Response {
    Json(json!({ "width": width, "height": height, "depth": 24, "display": 1 })).into_response()
}

pub async fn display() -> Result<Response, AgentError> {
    let (w, h) = current_size().await?;
    Ok(display_json(w, h))
}

/// Sizes offered by the display: its RandR modes.
pub async fn resolutions() -> Result<Response, AgentError> {
    let out = x::run("xrandr", &["--current"]).await?;
    let mut seen = Vec::new();
    for line in String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.starts_with("   "))
    {
        let Some(mode) = line.split_whitespace().next() else {
            continue;
        };
        let Some((w, h)) = mode.split_once('x') else {
            continue;
        };
        if let (Ok(w), Ok(h)) = (w.parse::<u32>(), h.trim_end_matches('i').parse::<u32>()) {
            if !seen.contains(&(w, h)) {
                seen.push((w, h));
            }
        }
    }
    let list: Vec<Value> = seen
        .iter()
        .map(|(w, h)| json!({ "width": w, "height": h }))
        .collect();
    Ok(Json(json!({ "resolutions": list })).into_response())
}

#[derive(Deserialize)]
pub struct Size {
    width: u32,
    height: u32,
}

/// Resizes the screen: Xvnc takes any size through RandR (a mode is added when the size is not
/// one of its own), and VNC viewers follow.
pub async fn set_resolution(bytes: Bytes) -> Result<Response, AgentError> {
    let s: Size = body(&bytes)?;
    if !(320..=7680).contains(&s.width) || !(200..=4320).contains(&s.height) {
        return Err(AgentError::bad_request(
            "width must be 320..7680 and height 200..4320",
        ));
    }
    let mode = format!("{}x{}", s.width, s.height);
    if x::run("xrandr", &["-s", &mode]).await.is_err() {
        let (w, h) = (s.width.to_string(), s.height.to_string());
        let output = first_output().await?;
        // A mode line without timings: Xvnc ignores them.
        let _ = x::run(
            "xrandr",
            &[
                "--newmode",
                &mode,
                "0",
                &w,
                "0",
                "0",
                "0",
                &h,
                "0",
                "0",
                "0",
            ],
        )
        .await;
        let _ = x::run("xrandr", &["--addmode", &output, &mode]).await;
        x::run("xrandr", &["--output", &output, "--mode", &mode]).await?;
    }
    let (w, h) = current_size().await?;
    Ok(display_json(w, h))
}

async fn first_output() -> Result<String, AgentError> {
    let out = x::run("xrandr", &["--current"]).await?;
    String::from_utf8_lossy(&out)
        .lines()
        .find(|l| l.contains(" connected"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .ok_or_else(|| {
            AgentError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "the display has no output to resize",
            )
        })
}
