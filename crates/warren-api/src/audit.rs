//! The audit trail (Hopx: "log all code executions for audit trails"). Every mutating control-plane
//! call and every agent action that runs code or changes files or env is recorded with time,
//! tenant, key id (never the key), sandbox, action, the input's size and SHA-256 (never its
//! content), outcome and duration. Events go through a bounded channel to one writer task that
//! batches them into the store; a full channel slows requests down rather than dropping events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use warren_store::{AuditEvent, Store};

use crate::auth::CallerSlot;
use crate::request_id::RequestId;
use crate::state::AppState;

const CHANNEL_DEPTH: usize = 4096;
const BATCH: usize = 256;
/// Control-plane bodies are small JSON; anything larger is refused before it is buffered.
pub const MAX_API_BODY: usize = 1024 * 1024;

pub struct Auditor {
    tx: mpsc::Sender<AuditEvent>,
}

impl Auditor {
    /// Starts the writer and the retention purge (at start, then hourly).
    pub fn start(store: Store, retention: Duration) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(CHANNEL_DEPTH);
        let writer_store = store.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                if let Err(e) = writer_store.append_audit(&batch).await {
                    tracing::error!(error = %e, events = batch.len(), "cannot write audit events");
                }
                batch.clear();
            }
        });
        tokio::spawn(async move {
            loop {
                let cutoff = now_ms() - retention.as_millis() as i64;
                match store.purge_audit(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "audit events past retention removed"),
                    Err(e) => tracing::warn!(error = %e, "audit purge failed"),
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        Arc::new(Self { tx })
    }

    pub async fn record(&self, event: AuditEvent) {
        if self.tx.send(event).await.is_err() {
            tracing::error!("audit writer is gone; event lost");
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn outcome_of(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        401 | 403 => "denied",
        400..=499 => "rejected",
        _ => "error",
    }
}

/// The action name of a mutating control-plane call, from its method and path.
fn control_action(method: &Method, path: &str) -> Option<(&'static str, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let sandbox = |i: usize| segs.get(i).map(|s| (*s).to_owned());
    Some(match (method, segs.as_slice()) {
        (&Method::POST, ["v1", "sandboxes"]) => ("sandbox.create", None),
        (&Method::DELETE, ["v1", "sandboxes", _]) => ("sandbox.delete", sandbox(2)),
        (&Method::POST, ["v1", "sandboxes", _, "pause"]) => ("sandbox.pause", sandbox(2)),
        (&Method::POST, ["v1", "sandboxes", _, "resume"]) => ("sandbox.resume", sandbox(2)),
        (&Method::PUT, ["v1", "sandboxes", _, "timeout"]) => ("sandbox.timeout", sandbox(2)),
        (&Method::POST, ["v1", "sandboxes", _, "token", "refresh"]) => {
            ("sandbox.token_refresh", sandbox(2))
        }
        (&Method::DELETE, ["v1", "templates", _]) => ("template.delete", None),
        (&Method::POST, ["v1", "templates", "build"]) => ("template.build", None),
        // Streamed to disk by its handler (can be large); the build that uses it is audited.
        (&Method::PUT, ["v1", "templates", "files", "upload", _]) => return None,
        (&Method::POST, ["v1", "admin", "keys"]) => ("key.create", None),
        (&Method::DELETE, ["v1", "admin", "keys", _]) => ("key.revoke", None),
        (&Method::POST, ["v1", "admin", "keys", _, "rotate"]) => ("key.rotate", None),
        (m, ["v1", ..]) if m != Method::GET && m != Method::HEAD => ("api.other", None),
        _ => return None,
    })
}

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

/// Middleware on the control-plane routes.
pub async fn control_plane(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some((action, mut sandbox_id)) = control_action(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
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
    let (input_bytes, input_sha256) = digest(&bytes);
    let started = Instant::now();
    let mut res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if action == "sandbox.create" && res.status().is_success() {
        // The new id is only in the response.
        let (p, b) = res.into_parts();
        let body = axum::body::to_bytes(b, MAX_API_BODY)
            .await
            .unwrap_or_default();
        sandbox_id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
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
            action: action.to_owned(),
            input_bytes,
            input_sha256,
            outcome: outcome_of(res.status()).to_owned(),
            status_code: Some(i64::from(res.status().as_u16())),
            duration_ms: started.elapsed().as_millis() as i64,
            request_id,
            ..Default::default()
        })
        .await;
    res
}

/// The action name of an agent call worth auditing (runs code, changes files, env or processes);
/// reads are not recorded.
pub fn agent_action(method: &Method, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        (&Method::POST, "/execute") => "execute",
        (&Method::POST, "/execute/background") => "execute.background",
        (&Method::POST, "/execute/async") => "execute.async",
        (&Method::POST, "/execute/ipython") => "execute.ipython",
        (&Method::GET, "/execute/stream") => "execute.stream",
        (&Method::GET, "/terminal") => "terminal.open",
        (&Method::POST, "/commands/run") => "commands.run",
        (&Method::POST, "/commands/background") => "commands.background",
        (&Method::POST, "/files/write") => "files.write",
        (&Method::POST, "/files/upload") => "files.upload",
        (&Method::POST, "/files/mkdir") => "files.mkdir",
        (&Method::DELETE, "/files/remove") => "files.remove",
        (&Method::PUT, "/env") => "env.replace",
        (&Method::PATCH, "/env") => "env.update",
        (&Method::DELETE, "/env") => "env.clear",
        (&Method::DELETE, "/execute/kill") => "process.kill",
        (&Method::POST, p) if p.starts_with("/execute/kill/") || p.starts_with("/processes/") => {
            "process.kill"
        }
        _ => return None,
    })
}

/// Size and running SHA-256 of a body as it streams through to the agent.
#[derive(Clone, Default)]
pub struct BodyDigest(Arc<Mutex<(u64, Sha256)>>);

impl BodyDigest {
    pub fn wrap(&self, body: Body) -> Body {
        let me = self.clone();
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                let mut g = me.0.lock().unwrap_or_else(|p| p.into_inner());
                g.0 += c.len() as u64;
                g.1.update(c);
            }
            chunk
        }))
    }

    pub fn finish(&self) -> (Option<i64>, Option<String>) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 == 0 {
            (Some(0), None)
        } else {
            (Some(g.0 as i64), Some(hex::encode(g.1.clone().finalize())))
        }
    }
}

/// For runs, the outcome is the user code's: `ok` or `failed exit_code=N`.
pub async fn run_outcome(res: Response) -> (Response, String) {
    let (p, b) = res.into_parts();
    let Ok(body) = axum::body::to_bytes(b, 64 * 1024 * 1024).await else {
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

pub fn status_outcome(status: axum::http::StatusCode) -> String {
    outcome_of(status).to_owned()
}
