//! Shared WebSocket plumbing (spec §6): one JSON object per text frame; empty frames, pings and
//! invalid JSON are skipped, like the clients do.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use serde_json::Value;

/// How long a client has to send its opening message.
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client sent next.
pub enum Incoming {
    Json(Value),
    /// The client closed the socket or the connection broke.
    Gone,
}

/// The next JSON message from the client, skipping frames that carry none.
pub async fn next_json(socket: &mut WebSocket) -> Incoming {
    loop {
        let text = match socket.recv().await {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Incoming::Gone,
        };
        if text.trim().is_empty() {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            return Incoming::Json(v);
        }
    }
}

/// The opening message, or None when the client left or said nothing in time.
pub async fn opening(socket: &mut WebSocket) -> Option<Value> {
    match tokio::time::timeout(OPENING_TIMEOUT, next_json(socket)).await {
        Ok(Incoming::Json(v)) => Some(v),
        _ => None,
    }
}

/// Sends one message; false when the client is gone.
pub async fn send(socket: &mut WebSocket, msg: Value) -> bool {
    socket
        .send(Message::Text(msg.to_string().into()))
        .await
        .is_ok()
}

/// Closes politely; the client may already be gone.
pub async fn close(mut socket: WebSocket) {
    let _ = socket.send(Message::Close(None)).await;
    // Give the client a moment to answer the close so it sees a clean end, not a reset.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
