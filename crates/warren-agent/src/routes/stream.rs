//! `GET /execute/stream` (ws::Socket, spec §6.1): output chunks as they are produced, then
//! `result`, then `complete` — always, also after errors and timeouts — and only then close.
//! Output flows through a bounded channel, so a slow client slows the process (its pipe fills)
//! instead of growing the agent's memory. A client that goes away ends the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use warren_wire::agent::StreamMessage;

use super::ws::{self, Incoming};
use crate::exec::{self, Invocation};
use crate::languages;
use crate::output::Utf8Chunker;
use crate::state::AgentState;

const DEFAULT_TIMEOUT: u64 = 60;
/// Messages buffered between the process and a slow client.
const CHANNEL_DEPTH: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
/// After the process ends, how long output still in its pipes (or written by children it left
/// running) may take to arrive before `result` is sent.
const EXIT_DRAIN: Duration = Duration::from_millis(250);

#[derive(Deserialize)]
struct StreamRequest {
    /// `/commands/stream` sends the shell command as `command`.
    #[serde(alias = "command")]
    code: String,
    #[serde(default)]
    language: Option<String>,
    timeout: Option<u64>,
    workdir: Option<String>,
    env: Option<BTreeMap<String, String>>,
}

pub async fn execute_stream(
    upgrade: yawc::IncomingUpgrade,
    State(state): State<AgentState>,
) -> Response {
    ws::upgrade(upgrade, move |socket| run(socket, state, "python"))
}

/// `GET /commands/stream`: the same stream, for a shell command.
pub async fn commands_stream(
    upgrade: yawc::IncomingUpgrade,
    State(state): State<AgentState>,
) -> Response {
    ws::upgrade(upgrade, move |socket| run(socket, state, "bash"))
}

enum Event {
    Chunk { stdout: bool, data: String },
}

fn error_message(message: &str, code: &str) -> StreamMessage {
    StreamMessage::Error {
        error: message.to_owned(),
        code: code.to_owned(),
        timestamp: crate::time_fmt::now(),
    }
}

async fn fail(mut socket: ws::Socket, message: &str, code: &str) {
    let _ = ws::send(&mut socket, &error_message(message, code)).await;
    let _ = ws::send(&mut socket, &StreamMessage::Complete { success: false }).await;
    ws::close(socket).await;
}

async fn run(mut socket: ws::Socket, state: AgentState, default_language: &'static str) {
    let Some(opening) = ws::opening(&mut socket).await else {
        return fail(socket, "expected an execute message", "INVALID_REQUEST").await;
    };
    let req: StreamRequest = match serde_json::from_value(opening) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                socket,
                &format!("invalid execute message: {e}"),
                "INVALID_REQUEST",
            )
            .await
        }
    };
    let wanted = req.language.as_deref().unwrap_or(default_language);
    let Some(language) = languages::canonical(wanted) else {
        let msg = format!(
            "Unsupported language '{wanted}'; supported: {}",
            languages::SUPPORTED
        );
        return fail(socket, &msg, "INVALID_REQUEST").await;
    };
    let prepared = match languages::prepare(language, &req.code) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                socket,
                &format!("cannot prepare code: {e}"),
                "EXECUTION_FAILED",
            )
            .await
        }
    };
    let _counted = state.count_execution();
    let env = state.process_env(req.env.as_ref());
    let workdir = super::workdir(req.workdir.as_deref());
    let timeout_secs = req.timeout.unwrap_or(DEFAULT_TIMEOUT).max(1);
    let started = Instant::now();
    let spawned = exec::spawn(&Invocation {
        program: &prepared.program,
        args: &prepared.args,
        env: &env,
        workdir: &workdir,
        timeout: Duration::from_secs(timeout_secs),
    });
    let mut spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            languages::cleanup(&prepared);
            return fail(socket, &e.to_string(), "EXECUTION_FAILED").await;
        }
    };
    let guard = spawned.guard();
    let (tx, mut rx) = mpsc::channel(CHANNEL_DEPTH);
    let readers = [
        tokio::spawn(pump(spawned.child.stdout.take(), true, tx.clone())),
        tokio::spawn(pump(spawned.child.stderr.take(), false, tx)),
    ];

    let deadline = tokio::time::sleep(Duration::from_secs(timeout_secs));
    tokio::pin!(deadline);
    let mut status = None;
    let mut timed_out = false;
    let mut client_gone = false;
    // Until both pipes close (or the process ended and its leftovers had a moment to flush).
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let drain_at = drain_until;
        let drain_deadline = async move {
            match drain_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Chunk { stdout, data }) => {
                    let timestamp = crate::time_fmt::now();
                    let msg = if stdout {
                        StreamMessage::Stdout { data, timestamp }
                    } else {
                        StreamMessage::Stderr { data, timestamp }
                    };
                    if !ws::send(&mut socket, &msg).await {
                        client_gone = true;
                        break;
                    }
                }
                None => {
                    if status.is_none() && !timed_out {
                        status = spawned.child.wait().await.ok();
                    }
                    break;
                }
            },
            waited = spawned.child.wait(), if status.is_none() && !timed_out => {
                status = waited.ok();
                drain_until = Some(tokio::time::Instant::now() + EXIT_DRAIN);
            }
            () = &mut deadline, if status.is_none() && !timed_out => {
                timed_out = true;
                spawned.kill_tree();
                drain_until = Some(tokio::time::Instant::now() + EXIT_DRAIN);
            }
            () = drain_deadline => break,
            incoming = ws::next_json(&mut socket) => {
                if matches!(incoming, Incoming::Gone) {
                    client_gone = true;
                    break;
                }
            }
        }
    }
    for r in readers {
        r.abort();
    }
    languages::cleanup(&prepared);
    if client_gone {
        // `guard` kills the tree as it drops.
        return;
    }
    if timed_out {
        spawned.kill_tree();
        let _ = spawned.child.wait().await;
    } else {
        guard.disarm();
    }
    let exit_code = if timed_out {
        124
    } else {
        exec::exit_code(status)
    };
    if timed_out {
        let msg = format!("Execution timed out after {timeout_secs} seconds");
        let _ = ws::send(&mut socket, &error_message(&msg, "EXECUTION_TIMEOUT")).await;
    }
    let result = StreamMessage::Result {
        exit_code,
        execution_time: started.elapsed().as_secs_f64(),
        timestamp: crate::time_fmt::now(),
    };
    let _ = ws::send(&mut socket, &result).await;
    let done = StreamMessage::Complete {
        success: exit_code == 0,
    };
    let _ = ws::send(&mut socket, &done).await;
    ws::close(socket).await;
}

async fn pump(stream: Option<impl AsyncRead + Unpin>, stdout: bool, tx: mpsc::Sender<Event>) {
    let Some(mut stream) = stream else { return };
    let mut buf = vec![0u8; READ_CHUNK];
    let mut chunker = Utf8Chunker::default();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = chunker.feed(&buf[..n]);
        if !data.is_empty() && tx.send(Event::Chunk { stdout, data }).await.is_err() {
            return;
        }
    }
    let rest = chunker.finish();
    if !rest.is_empty() {
        let _ = tx.send(Event::Chunk { stdout, data: rest }).await;
    }
}
