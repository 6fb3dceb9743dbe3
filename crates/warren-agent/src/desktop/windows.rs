//! Windows on the desktop, through wmctrl (EWMH, which the window manager keeps) and xdotool.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body, int_of, ok, x};
use crate::error::AgentError;

struct Window {
    id: i64,
    desktop: i64,
    pid: i64,
    x: i64,
    y: i64,
    width: i64,
    height: i64,
    title: String,
}

/// The windows the window manager manages, except the panel and the desktop itself.
async fn windows() -> Result<Vec<Window>, AgentError> {
    let out = x::run("wmctrl", &["-l", "-p"]).await?;
    let mut list = Vec::new();
    for line in String::from_utf8_lossy(&out).lines() {
        // id desktop pid host title...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let int = |i: usize| {
            fields
                .get(i)
                .and_then(|v| int_of(&Value::String((*v).to_owned())))
        };
        let (Some(id), Some(desktop), Some(pid)) = (int(0), int(1), int(2)) else {
            continue;
        };
        // Panels and the root "desktop" window are sticky (desktop -1) and not users' windows.
        if desktop < 0 {
            continue;
        }
        // wmctrl's own geometry is off by the frame; xwininfo gives the client's absolute one.
        let Ok((x, y, width, height)) = geometry(id).await else {
            continue; // closed in between
        };
        let title = fields.iter().skip(4).copied().collect::<Vec<_>>().join(" ");
        list.push(Window {
            id,
            desktop,
            pid,
            x,
            y,
            width,
            height,
            title,
        });
    }
    Ok(list)
}

/// A window's position on screen and size.
async fn geometry(id: i64) -> Result<(i64, i64, i64, i64), AgentError> {
    let out = x::run("xwininfo", &["-id", &id.to_string()]).await?;
    let text = String::from_utf8_lossy(&out);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok((
        field("Absolute upper-left X:"),
        field("Absolute upper-left Y:"),
        field("Width:"),
        field("Height:"),
    ))
}

pub async fn list() -> Result<Response, AgentError> {
    let list: Vec<Value> = windows()
        .await?
        .into_iter()
        .map(|w| {
            json!({
                "id": w.id, "title": w.title, "x": w.x, "y": w.y,
                "width": w.width, "height": w.height, "desktop": w.desktop,
                "pid": if w.pid > 0 { Some(w.pid) } else { None },
            })
        })
        .collect();
    Ok(Json(json!({ "windows": list })).into_response())
}

/// 404 unless `id` is a window on the desktop.
pub(crate) async fn require(id: i64) -> Result<(), AgentError> {
    if windows().await?.iter().any(|w| w.id == id) {
        Ok(())
    } else {
        Err(AgentError::new(
            StatusCode::NOT_FOUND,
            "WINDOW_NOT_FOUND",
            format!("no window with id {id} (0x{id:x}) on the desktop"),
        ))
    }
}

#[derive(Deserialize)]
pub struct WindowRef {
    window_id: Value,
    width: Option<i64>,
    height: Option<i64>,
}

async fn window_of(bytes: &Bytes) -> Result<(String, WindowRef), AgentError> {
    let w: WindowRef = body(bytes)?;
    let id = int_of(&w.window_id).ok_or_else(|| {
        AgentError::bad_request("window_id must be a window id (integer or 0x hex)")
    })?;
    require(id).await?;
    Ok((format!("0x{id:08x}"), w))
}

pub async fn focus(bytes: Bytes) -> Result<Response, AgentError> {
    let (id, _) = window_of(&bytes).await?;
    x::run("wmctrl", &["-i", "-a", &id]).await?;
    Ok(ok())
}

pub async fn close(bytes: Bytes) -> Result<Response, AgentError> {
    let (id, _) = window_of(&bytes).await?;
    x::run("wmctrl", &["-i", "-c", &id]).await?;
    Ok(ok())
}

pub async fn minimize(bytes: Bytes) -> Result<Response, AgentError> {
    let (id, _) = window_of(&bytes).await?;
    x::run("xdotool", &["windowminimize", &id]).await?;
    Ok(ok())
}

pub async fn resize(bytes: Bytes) -> Result<Response, AgentError> {
    let (id, w) = window_of(&bytes).await?;
    let (Some(width), Some(height)) = (w.width, w.height) else {
        return Err(AgentError::bad_request("width and height are required"));
    };
    if !(1..=32_767).contains(&width) || !(1..=32_767).contains(&height) {
        return Err(AgentError::bad_request("width and height must be 1..32767"));
    }
    // Maximized windows ignore a new size: take that state off first.
    let _ = x::run(
        "wmctrl",
        &[
            "-i",
            "-r",
            &id,
            "-b",
            "remove,maximized_vert,maximized_horz",
        ],
    )
    .await;
    let geometry = format!("0,-1,-1,{width},{height}");
    x::run("wmctrl", &["-i", "-r", &id, "-e", &geometry]).await?;
    Ok(ok())
}
