//! Mouse, keyboard and clipboard, through xdotool and xclip.

use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{body, ok, x, DesktopState};
use crate::error::AgentError;

/// Clipboard texts set through the API, oldest first (what `clipboard/history` returns).
#[derive(Default)]
pub struct ClipboardHistory(Mutex<Vec<String>>);

const HISTORY_LEN: usize = 50;

fn button_number(name: Option<&str>) -> Result<&'static str, AgentError> {
    match name.unwrap_or("left") {
        "left" | "1" => Ok("1"),
        "middle" | "2" => Ok("2"),
        "right" | "3" => Ok("3"),
        other => Err(AgentError::bad_request(format!(
            "button must be left, middle or right, not {other:?}"
        ))),
    }
}

fn coordinate(v: i64, what: &str) -> Result<String, AgentError> {
    if (0..=32_767).contains(&v) {
        Ok(v.to_string())
    } else {
        Err(AgentError::bad_request(format!(
            "{what} must be between 0 and 32767, not {v}"
        )))
    }
}

#[derive(Deserialize)]
pub struct Click {
    x: i64,
    y: i64,
    button: Option<String>,
    clicks: Option<u32>,
}

pub async fn click(bytes: Bytes) -> Result<Response, AgentError> {
    let c: Click = body(&bytes)?;
    let button = button_number(c.button.as_deref())?;
    let repeat = c.clicks.unwrap_or(1).clamp(1, 10).to_string();
    let (px, py) = (coordinate(c.x, "x")?, coordinate(c.y, "y")?);
    x::run(
        "xdotool",
        &[
            "mousemove",
            "--sync",
            &px,
            &py,
            "click",
            "--repeat",
            &repeat,
            button,
        ],
    )
    .await?;
    Ok(ok())
}

#[derive(Deserialize)]
pub struct Point {
    x: i64,
    y: i64,
}

pub async fn move_to(bytes: Bytes) -> Result<Response, AgentError> {
    let p: Point = body(&bytes)?;
    let (px, py) = (coordinate(p.x, "x")?, coordinate(p.y, "y")?);
    x::run("xdotool", &["mousemove", "--sync", &px, &py]).await?;
    Ok(ok())
}

#[derive(Deserialize)]
pub struct Drag {
    from_x: i64,
    from_y: i64,
    to_x: i64,
    to_y: i64,
    button: Option<String>,
}

/// Press at one point, move, release at the other (also `x11/drag_drop`). The pauses let the
/// application see a press, a motion and a release rather than one instant event.
pub async fn drag(bytes: Bytes) -> Result<Response, AgentError> {
    let d: Drag = body(&bytes)?;
    let button = button_number(d.button.as_deref())?;
    let (fx, fy) = (
        coordinate(d.from_x, "from_x")?,
        coordinate(d.from_y, "from_y")?,
    );
    let (tx, ty) = (coordinate(d.to_x, "to_x")?, coordinate(d.to_y, "to_y")?);
    x::run(
        "xdotool",
        &[
            "mousemove",
            "--sync",
            &fx,
            &fy,
            "mousedown",
            button,
            "sleep",
            "0.05",
            "mousemove",
            "--sync",
            &tx,
            &ty,
            "sleep",
            "0.05",
            "mouseup",
            button,
        ],
    )
    .await?;
    Ok(ok())
}

/// Python sends `{amount, direction}`; JS sends `{x, y, delta_y}` (positive scrolls down, one
/// wheel click per unit, as the JS SDK's examples use small counts).
#[derive(Deserialize)]
pub struct Scroll {
    amount: Option<i64>,
    direction: Option<String>,
    x: Option<i64>,
    y: Option<i64>,
    delta_y: Option<i64>,
}

pub async fn scroll(bytes: Bytes) -> Result<Response, AgentError> {
    let s: Scroll = body(&bytes)?;
    let (button, clicks) = match (s.delta_y, s.direction.as_deref()) {
        (Some(d), _) => (if d < 0 { "4" } else { "5" }, d.unsigned_abs()),
        (None, dir) => {
            let button = match dir.unwrap_or("down") {
                "up" => "4",
                "down" => "5",
                "left" => "6",
                "right" => "7",
                other => {
                    return Err(AgentError::bad_request(format!(
                        "direction must be up, down, left or right, not {other:?}"
                    )))
                }
            };
            (button, s.amount.unwrap_or(1).unsigned_abs())
        }
    };
    let clicks = clicks.clamp(1, 100).to_string();
    let mut args: Vec<String> = Vec::new();
    if let (Some(px), Some(py)) = (s.x, s.y) {
        args.extend([
            "mousemove".into(),
            "--sync".into(),
            coordinate(px, "x")?,
            coordinate(py, "y")?,
        ]);
    }
    args.extend(["click".into(), "--repeat".into(), clicks, button.into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    x::run("xdotool", &argv).await?;
    Ok(ok())
}

#[derive(Deserialize)]
pub struct TypeText {
    text: String,
    delay_ms: Option<u64>,
}

pub async fn type_text(bytes: Bytes) -> Result<Response, AgentError> {
    let t: TypeText = body(&bytes)?;
    let delay = t.delay_ms.unwrap_or(10).min(1000).to_string();
    x::run("xdotool", &["type", "--delay", &delay, "--", &t.text]).await?;
    Ok(ok())
}

#[derive(Deserialize)]
pub struct Press {
    key: String,
}

pub async fn press(bytes: Bytes) -> Result<Response, AgentError> {
    let p: Press = body(&bytes)?;
    let key = keysym(&p.key)?;
    x::run("xdotool", &["key", "--", &key]).await?;
    Ok(ok())
}

/// Python (and `x11/hotkey`) sends `{modifiers: [...], key}`; JS sends `{keys: [...]}`.
#[derive(Deserialize)]
pub struct Combination {
    #[serde(default)]
    modifiers: Vec<String>,
    key: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
}

pub async fn combination(bytes: Bytes) -> Result<Response, AgentError> {
    let c: Combination = body(&bytes)?;
    let mut parts: Vec<String> = Vec::new();
    for k in c.modifiers.iter().chain(c.keys.iter()).chain(c.key.iter()) {
        parts.push(keysym(k)?);
    }
    if parts.is_empty() {
        return Err(AgentError::bad_request(
            "no keys given (key, modifiers or keys)",
        ));
    }
    x::run("xdotool", &["key", "--", &parts.join("+")]).await?;
    Ok(ok())
}

/// The X keysym for a key name as users write it ("ctrl", "Enter", "cmd", "a").
fn keysym(name: &str) -> Result<String, AgentError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().any(|c| c.is_control()) {
        return Err(AgentError::bad_request(format!(
            "invalid key name {name:?}"
        )));
    }
    let mapped = match trimmed.to_ascii_lowercase().as_str() {
        "ctrl" | "control" => "ctrl",
        "alt" | "option" => "alt",
        "shift" => "shift",
        "super" | "win" | "windows" | "cmd" | "command" | "meta" => "super",
        "enter" | "return" => "Return",
        "esc" | "escape" => "Escape",
        "tab" => "Tab",
        "space" => "space",
        "backspace" => "BackSpace",
        "delete" | "del" => "Delete",
        "up" => "Up",
        "down" => "Down",
        "left" => "Left",
        "right" => "Right",
        "home" => "Home",
        "end" => "End",
        "pageup" | "page_up" => "Prior",
        "pagedown" | "page_down" => "Next",
        _ => trimmed,
    };
    Ok(mapped.to_owned())
}

/// Python sends `{text}`, JS `{content}`.
#[derive(Deserialize)]
pub struct ClipboardText {
    text: Option<String>,
    content: Option<String>,
}

pub async fn clipboard_set(
    State(desktop): State<DesktopState>,
    bytes: Bytes,
) -> Result<Response, AgentError> {
    let c: ClipboardText = body(&bytes)?;
    let text = c
        .text
        .or(c.content)
        .ok_or_else(|| AgentError::bad_request("text (or content) is required"))?;
    // xclip stays in the background to own the selection; its output is not waited for.
    let mut cmd = x::command("xclip");
    cmd.args(["-selection", "clipboard", "-i"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(|e| {
        AgentError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("cannot run xclip: {e}"),
        )
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(text.as_bytes()).await;
    }
    // The foreground xclip exits once its background copy owns the selection.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
    {
        let mut history = desktop
            .clipboard
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        history.push(text);
        let extra = history.len().saturating_sub(HISTORY_LEN);
        history.drain(..extra);
    }
    Ok(ok())
}

pub async fn clipboard_get() -> Response {
    // No owner yet (nothing copied) reads as empty, not as an error.
    let text = x::run("xclip", &["-selection", "clipboard", "-o"])
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Json(json!({ "text": text, "content": text })).into_response()
}

pub async fn clipboard_history(State(desktop): State<DesktopState>) -> Response {
    let history = desktop
        .clipboard
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(json!({ "history": history })).into_response()
}
