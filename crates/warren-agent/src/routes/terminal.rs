//! `GET /terminal` (ws::Socket, spec §6.2): an interactive login shell on a PTY in `/workspace`
//! with the global env vars. `input` and `resize` in; `output` and finally `exit` out. Any number
//! of terminals per sandbox; closing the socket ends the shell and everything it started.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;
use tokio::sync::mpsc;
use warren_wire::agent::TerminalMessage;

use super::ws::{self, Incoming};
use crate::output::Utf8Chunker;
use crate::pty::{self, Shell};
use crate::state::AgentState;

/// Output messages buffered for a slow client; beyond this the PTY fills and the shell waits.
const CHANNEL_DEPTH: usize = 16;
/// After the shell exits, how long output still in flight may take to arrive.
const EXIT_DRAIN: Duration = Duration::from_millis(200);

pub async fn terminal(upgrade: yawc::IncomingUpgrade, State(state): State<AgentState>) -> Response {
    ws::upgrade(upgrade, move |socket| run(socket, state))
}

async fn run(mut socket: ws::Socket, state: AgentState) {
    let env = state.process_env(None);
    let (shell, mut child) = match pty::spawn_shell(&env, &super::default_workdir(), 80, 24) {
        Ok((shell, child)) => (Arc::new(shell), child),
        Err(e) => {
            let msg = TerminalMessage::Error {
                error: format!("cannot start a shell: {e}"),
                code: "EXECUTION_FAILED".into(),
            };
            let _ = ws::send(&mut socket, &msg).await;
            let _ = ws::send(&mut socket, &TerminalMessage::Exit { code: 127 }).await;
            return ws::close(socket).await;
        }
    };
    let (tx, mut rx) = mpsc::channel::<String>(CHANNEL_DEPTH);
    let reader = tokio::spawn(read_output(shell.clone(), tx));

    let mut exit_code = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let client_gone = loop {
        let drain_at = drain_until;
        let drained = async move {
            match drain_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = rx.recv() => match out {
                Some(data) => {
                    if !ws::send(&mut socket, &TerminalMessage::Output { data }).await {
                        break true;
                    }
                }
                None => {
                    if exit_code.is_none() {
                        exit_code = Some(crate::exec::exit_code(child.wait().await.ok()));
                    }
                    break false;
                }
            },
            status = child.wait(), if exit_code.is_none() => {
                exit_code = Some(crate::exec::exit_code(status.ok()));
                drain_until = Some(tokio::time::Instant::now() + EXIT_DRAIN);
            }
            () = drained => break false,
            incoming = ws::next_json(&mut socket) => match incoming {
                Incoming::Gone => break true,
                Incoming::Json(msg) => {
                    if exit_code.is_none() {
                        handle_input(&shell, &msg).await;
                    }
                }
            },
        }
    };
    reader.abort();
    // Ends the shell's session, including anything left running in it.
    shell.kill_tree();
    if client_gone {
        let _ = child.wait().await;
        return;
    }
    let code = exit_code.unwrap_or(-1);
    let _ = ws::send(&mut socket, &TerminalMessage::Exit { code }).await;
    ws::close(socket).await;
}

async fn handle_input(shell: &Shell, msg: &Value) {
    match msg.get("type").and_then(Value::as_str) {
        Some("input") => {
            if let Some(data) = msg.get("data").and_then(Value::as_str) {
                if let Err(e) = shell.write_all(data.as_bytes()).await {
                    tracing::debug!(error = %e, "terminal input not written");
                }
            }
        }
        Some("resize") => {
            let dim = |k: &str| {
                msg.get(k)
                    .and_then(Value::as_u64)
                    .map(|v| v.clamp(1, 1000) as u16)
            };
            if let (Some(cols), Some(rows)) = (dim("cols"), dim("rows")) {
                shell.resize(cols, rows);
            }
        }
        _ => {}
    }
}

async fn read_output(shell: Arc<Shell>, tx: mpsc::Sender<String>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut chunker = Utf8Chunker::default();
    while let Ok(n) = shell.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let text = chunker.feed(&buf[..n]);
        if !text.is_empty() && tx.send(text).await.is_err() {
            return;
        }
    }
    let rest = chunker.finish();
    if !rest.is_empty() {
        let _ = tx.send(rest).await;
    }
}
