//! Shared WebSocket plumbing (spec §6): one JSON object per text frame; empty frames, pings and
//! invalid JSON are skipped, like the clients do.
//!
//! Why yawc and not axum's own WebSocket: the official JS SDK registers a one-shot listener per
//! message, so when two frames arrive in one TCP read, `ws` emits both in the same tick and the
//! second is lost — a lost `complete` hangs the SDK for ever. With permessage-deflate negotiated,
//! `ws` inflates each message asynchronously and emits it in its own tick, which the SDK handles.
//! tungstenite (behind axum) has no permessage-deflate; yawc does, and compresses every message.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use yawc::frame::{Frame, OpCode};
use yawc::{HttpWebSocket, IncomingUpgrade, Options};

/// How long a client has to send its opening message.
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message accepted from a client (terminal input, opening messages with code).
const MAX_CLIENT_MESSAGE: usize = 16 * 1024 * 1024;

pub type Socket = HttpWebSocket;

/// Completes the upgrade and runs `session` on the socket.
pub fn upgrade<F, Fut>(ws: IncomingUpgrade, session: F) -> Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let options = Options::default()
        .with_low_latency_compression()
        .with_compression_threshold(0)
        .with_limits(MAX_CLIENT_MESSAGE, MAX_CLIENT_MESSAGE)
        .with_no_delay();
    match ws.upgrade(options) {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(socket) => session(socket).await,
                    Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                }
            });
            response.into_response()
        }
        Err(e) => (
            axum::http::StatusCode::BAD_REQUEST,
            format!("websocket upgrade failed: {e}"),
        )
            .into_response(),
    }
}

/// What the client sent next.
pub enum Incoming {
    Json(Value),
    /// The client closed the socket or the connection broke.
    Gone,
}

/// The next JSON message from the client, skipping frames that carry none.
pub async fn next_json(socket: &mut Socket) -> Incoming {
    loop {
        let Some(frame) = socket.next().await else {
            return Incoming::Gone;
        };
        match frame.opcode() {
            OpCode::Text | OpCode::Binary => {
                let text = String::from_utf8_lossy(frame.payload());
                if text.trim().is_empty() {
                    continue;
                }
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    return Incoming::Json(v);
                }
            }
            OpCode::Close => return Incoming::Gone,
            _ => continue,
        }
    }
}

/// The opening message, or None when the client left or said nothing in time.
pub async fn opening(socket: &mut Socket) -> Option<Value> {
    match tokio::time::timeout(OPENING_TIMEOUT, next_json(socket)).await {
        Ok(Incoming::Json(v)) => Some(v),
        _ => None,
    }
}

/// Sends one message; false when the client is gone.
pub async fn send(socket: &mut Socket, msg: &impl serde::Serialize) -> bool {
    let Ok(text) = serde_json::to_string(msg) else {
        return false;
    };
    socket.send(Frame::text(text)).await.is_ok()
}

/// Closes politely; the client may already be gone.
pub async fn close(mut socket: Socket) {
    let _ = socket
        .send(Frame::close(yawc::close::CloseCode::Normal, b""))
        .await;
    // Give the client a moment to answer the close so it sees a clean end, not a reset.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(frame) = socket.next().await {
            if frame.opcode() == OpCode::Close {
                break;
            }
        }
    })
    .await;
}
