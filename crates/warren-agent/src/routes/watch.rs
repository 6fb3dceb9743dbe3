//! `GET /files/watch` (ws::Socket, spec §6.3): recursive change events for a directory, until the
//! client closes. Events pass through a bounded channel; when a client falls behind, the watcher
//! thread waits and the kernel's inotify queue absorbs (and at worst drops) the excess, so the
//! agent's memory stays bounded.

use std::path::Path;

use axum::response::Response;
use notify::{RecursiveMode, Watcher};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::ws::{self, Incoming};
use crate::changes::Change;

const CHANNEL_DEPTH: usize = 256;

pub async fn watch(upgrade: yawc::IncomingUpgrade) -> Response {
    ws::upgrade(upgrade, run)
}

fn event_name(change: Change) -> &'static str {
    match change {
        Change::Created => "created",
        Change::Renamed => "renamed",
        Change::Modified | Change::Chmod => "modified",
        Change::Removed => "deleted",
    }
}

async fn fail(mut socket: ws::Socket, message: String, code: &str) {
    let _ = ws::send(
        &mut socket,
        &json!({ "type": "error", "error": message, "code": code }),
    )
    .await;
    ws::close(socket).await;
}

async fn run(mut socket: ws::Socket) {
    let Some(opening) = ws::opening(&mut socket).await else {
        return fail(
            socket,
            "expected {\"action\": \"watch\", \"path\": ...}".into(),
            "INVALID_REQUEST",
        )
        .await;
    };
    let path = opening
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/workspace");
    let dir = super::resolve(path);
    if !dir.is_dir() {
        let msg = format!("{} is not a directory", dir.display());
        return fail(socket, msg, "PATH_NOT_FOUND").await;
    }
    let (tx, mut rx) = mpsc::channel::<(String, &'static str)>(CHANNEL_DEPTH);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        for (p, change) in crate::changes::interpret(&event) {
            // blocking_send: this runs on notify's own thread, never on the async runtime.
            if tx
                .blocking_send((p.display().to_string(), event_name(change)))
                .is_err()
            {
                return;
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => return fail(socket, format!("cannot watch: {e}"), "INTERNAL_ERROR").await,
    };
    if let Err(e) = watcher.watch(Path::new(&dir), RecursiveMode::Recursive) {
        return fail(
            socket,
            format!("cannot watch {}: {e}", dir.display()),
            "INTERNAL_ERROR",
        )
        .await;
    }
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some((path, event)) = ev else { break };
                let msg = json!({ "type": "change", "path": path, "event": event, "timestamp": crate::time_fmt::now() });
                if !ws::send(&mut socket, &msg).await {
                    break;
                }
            }
            incoming = ws::next_json(&mut socket) => {
                if matches!(incoming, Incoming::Gone) {
                    break;
                }
            }
        }
    }
    // Dropping the watcher stops its thread; a sender blocked in blocking_send is released when
    // `rx` drops with it.
    drop(rx);
    drop(watcher);
}
