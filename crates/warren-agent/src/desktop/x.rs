//! Runs the X tools the desktop API drives (xdotool, wmctrl, xclip, xrandr, ImageMagick,
//! tesseract) on display :1 as the desktop's unprivileged user, with argv only (no shell), each
//! bounded in time.

use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::e2b::users::{self, User};
use crate::error::AgentError;

/// The display the desktop runs on (the SDKs' default).
pub const DISPLAY: &str = ":1";
/// The X server's socket: the desktop is up while it exists.
pub const X_SOCKET: &str = "/tmp/.X11-unix/X1";
/// One X tool call may take this long (OCR of a full screen is the slowest).
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The account the desktop runs as: E2B's `user` where the template has it.
pub fn desktop_user() -> User {
    users::lookup("user").unwrap_or_else(|| User {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: "/root".into(),
    })
}

/// A command for the desktop: the desktop user's, on display :1.
pub fn command(program: &str) -> Command {
    let user = desktop_user();
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("DISPLAY", DISPLAY)
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .current_dir(&user.home)
        .uid(user.uid)
        .gid(user.gid)
        .kill_on_drop(true);
    cmd
}

/// Runs `program args` to completion and returns its stdout; a non-zero exit is an error that
/// carries the program's stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<Vec<u8>, AgentError> {
    run_with_input(program, args, None).await
}

pub async fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<Vec<u8>, AgentError> {
    let mut cmd = command(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        AgentError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("cannot run {program}: {e}"),
        )
    })?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(bytes).await;
    }
    let out = match tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Err(AgentError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                format!("{program} failed: {e}"),
            ))
        }
        Err(_) => {
            return Err(AgentError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "EXECUTION_TIMEOUT",
                format!(
                    "{program} did not finish within {} s",
                    TOOL_TIMEOUT.as_secs()
                ),
            ))
        }
    };
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(AgentError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!(
                "{program} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}
