//! The audit record of a mutating control-plane call: each such route declares its
//! `ControlAction` (see `routes::app`), and this middleware records who called, on which sandbox, the size and
//! SHA-256 of the body, the outcome and the duration.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use warren_store::AuditEvent;

use crate::audit::{now_ms, ControlAction};
use crate::auth::CallerSlot;
use crate::request_id::RequestId;
use crate::state::AppState;

/// Control-plane bodies are small JSON; anything larger is refused before it is buffered.
pub const MAX_API_BODY: usize = 1024 * 1024;

fn digest(bytes: &[u8]) -> (Option<i64>, Option<String>) {
    if bytes.is_empty() {
        (Some(0), None)
    } else {
        (
            Some(bytes.len() as i64),
            Some(hex::encode(Sha256::digest(bytes))),
        )
    }
}

/// Middleware of one audited route (`from_fn_with_state((state, action), record)`).
pub async fn record(
    State((state, action)): State<(AppState, ControlAction)>,
    params: RawPathParams,
    mut req: Request,
    next: Next,
) -> Response {
    let mut sandbox_id = action
        .names_sandbox()
        .then(|| {
            params
                .iter()
                .find(|(k, _)| *k == "id")
                .map(|(_, v)| v.to_owned())
        })
        .flatten();
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_API_BODY).await else {
        return crate::error::ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request body larger than {MAX_API_BODY} bytes"),
        )
        .into_response();
    };
    // A secret's value is in its request: not even its digest is kept (a guessable value could be
    // confirmed against it).
    let (input_bytes, input_sha256) = if action == ControlAction::SecretPut {
        (Some(bytes.len() as i64), None)
    } else {
        digest(&bytes)
    };
    let started = Instant::now();
    let mut res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if action == ControlAction::SandboxCreate && res.status().is_success() {
        // The new id is only in the response.
        let (p, b) = res.into_parts();
        let body = axum::body::to_bytes(b, MAX_API_BODY)
            .await
            .unwrap_or_default();
        sandbox_id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v["id"]
                    .as_str()
                    .or(v["sandboxID"].as_str())
                    .map(str::to_owned)
            });
        res = Response::from_parts(p, Body::from(body));
    }
    let caller = slot.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    state
        .audit
        .record(AuditEvent {
            at: now_ms(),
            tenant: caller
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| c.tenant.clone()),
            key_id: caller.map(|c| c.key_id),
            sandbox_id,
            action: action.as_str().to_owned(),
            input_bytes,
            input_sha256,
            outcome: warren_node::status_outcome(res.status()).to_owned(),
            status_code: Some(i64::from(res.status().as_u16())),
            duration_ms: started.elapsed().as_millis() as i64,
            request_id,
            ..Default::default()
        })
        .await;
    res
}
