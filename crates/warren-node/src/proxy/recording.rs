//! What the proxy learns about an audited call as it passes: the size and SHA-256 of the input
//! as it streams through (never the input itself), and for runs the user code's exit status.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

/// Largest run result read back for its exit status; anything larger passes through unread.
const MAX_RESULT_BYTES: usize = 64 * 1024 * 1024;

/// Size and running SHA-256 of a body as it streams through to the agent.
#[derive(Clone, Default)]
pub struct BodyDigest(Arc<Mutex<(u64, Sha256)>>);

impl BodyDigest {
    pub fn wrap(&self, body: Body) -> Body {
        let me = self.clone();
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                me.add(c);
            }
            chunk
        }))
    }

    /// Counts `bytes` into the digest.
    pub fn add(&self, bytes: &[u8]) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += bytes.len() as u64;
        g.1.update(bytes);
    }

    /// (bytes, hex SHA-256 unless empty).
    pub fn finish(&self) -> (u64, Option<String>) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 == 0 {
            (0, None)
        } else {
            (g.0, Some(hex::encode(g.1.clone().finalize())))
        }
    }
}

/// For runs, the outcome is the user code's: `ok exit_code=N` or `failed exit_code=N`.
pub async fn run_outcome(res: Response) -> (Response, String) {
    let (p, b) = res.into_parts();
    let Ok(body) = axum::body::to_bytes(b, MAX_RESULT_BYTES).await else {
        return (Response::from_parts(p, Body::empty()), "error".into());
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = v["exit_code"].as_i64().unwrap_or(0);
    let outcome = if v["success"].as_bool().unwrap_or(code == 0) {
        format!("ok exit_code={code}")
    } else {
        format!("failed exit_code={code}")
    };
    (Response::from_parts(p, Body::from(body)), outcome)
}

/// The outcome of any other call, from its status (101: a WebSocket, such as a terminal, opened).
pub fn status_outcome(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=399 => "ok",
        401 | 403 => "denied",
        400..=499 => "rejected",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::status_outcome;
    use axum::http::StatusCode;

    #[test]
    fn an_opened_websocket_is_a_success_and_refusals_are_told_apart() {
        assert_eq!(status_outcome(StatusCode::SWITCHING_PROTOCOLS), "ok");
        assert_eq!(status_outcome(StatusCode::OK), "ok");
        assert_eq!(status_outcome(StatusCode::UNAUTHORIZED), "denied");
        assert_eq!(status_outcome(StatusCode::NOT_FOUND), "rejected");
        assert_eq!(status_outcome(StatusCode::BAD_GATEWAY), "error");
    }
}
