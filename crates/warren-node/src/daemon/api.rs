//! The node's API (`/node/v1/*`): the typed commands of `Node`, for control planes over the
//! network. Every call carries a short-lived token a control plane signed for this node
//! (`Authorization: Bearer`); tenants' API keys and sandbox tokens are never accepted here.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use warren_core::{Resources, SandboxId, Tier};
use warren_runtime::{SandboxHandle, SandboxSpec};
use warren_wire::agent::CommandRequest;
use warren_wire::cluster::{NodeApiError, StartReply, StartRequest};

use super::saved::SavedSandbox;
use super::state::Daemon;
use crate::error::NodeError;
use crate::layer_archive::valid_layer_key;
use crate::node::SandboxStart;
use crate::readiness::Readiness;

pub fn router(daemon: Arc<Daemon>) -> Router {
    let authed = Router::new()
        .route("/node/v1/sandboxes", post(start))
        .route("/node/v1/sandboxes/{id}", delete(destroy))
        .route("/node/v1/sandboxes/{id}/pause", post(pause))
        .route("/node/v1/sandboxes/{id}/network", put(set_network))
        .route("/node/v1/sandboxes/{id}/resume", post(resume))
        .route("/node/v1/sandboxes/{id}/commands", post(run_command))
        .route("/node/v1/sandboxes/{id}/usage", get(usage))
        .route("/node/v1/idle", get(idle))
        .route("/node/v1/layers/{key}", get(layer))
        .route("/node/v1/builds/steps", post(super::build::run_step))
        .route_layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            authenticate,
        ));
    Router::new()
        .route("/node/v1/health", get(health))
        .route("/metrics", get(super::metrics::scrape))
        .merge(authed)
        .layer(axum::middleware::from_fn(super::metrics::count_requests))
        .layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            wildcard_router,
        ))
        .with_state(daemon)
}

/// A request naming a sandbox in E2B's routing headers (relayed by a control plane), or in
/// wildcard mode one for `{port}-{id}.<domain>`, is a sandbox's (its agent, token checked by the
/// proxy, or a preview port), not the node API's.
async fn wildcard_router(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    if let Some((port, id)) = crate::proxy::e2b_target(req.headers()) {
        return match id {
            Some(id) => d.node.proxy().to_e2b_port(id, port, req).await,
            None => crate::agent_error(
                StatusCode::NOT_FOUND,
                "SANDBOX_NOT_FOUND",
                "no such sandbox",
            ),
        };
    }
    let Some(domain) = d.wildcard_domain.as_deref() else {
        return next.run(req).await;
    };
    match d.node.proxy().route_by_host(domain, req).await {
        Ok(answered) => answered,
        Err(req) => next.run(req).await,
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(NodeApiError {
            code: code.to_owned(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn node_error(e: NodeError) -> Response {
    match e {
        NodeError::NotRunning(_) => error(StatusCode::NOT_FOUND, "NOT_RUNNING", e.to_string()),
        NodeError::NoSuchTier { .. } => {
            error(StatusCode::BAD_REQUEST, "NO_SUCH_TIER", e.to_string())
        }
        // The reason alone: the control plane says "it did not become ready" itself.
        NodeError::NotReady(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            why.to_string(),
        ),
        other => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NODE_FAILED",
            other.to_string(),
        ),
    }
}

async fn authenticate(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if d.verifier.node_call(t, &d.node_id) => next.run(req).await,
        _ => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "this is a node's API: only its control planes may call it",
        ),
    }
}

async fn health(State(d): State<Arc<Daemon>>) -> Response {
    Json(serde_json::json!({ "status": "ok", "node_id": d.node_id })).into_response()
}

fn bad_id() -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ID", "not a sandbox id")
}

/// Runs a node command to its end in a task of its own: a control plane that gives up waiting
/// (a timeout, a restart) drops the request, and a start or teardown cut off half-way would leave
/// a sandbox's kernel objects behind.
async fn detached<F>(work: F) -> Response
where
    F: std::future::Future<Output = Response> + Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "NODE_FAILED",
            format!("the command failed: {e}"),
        )
    })
}

async fn start(State(d): State<Arc<Daemon>>, Json(req): Json<StartRequest>) -> Response {
    detached(start_detached(d, req)).await
}

async fn start_detached(d: Arc<Daemon>, req: StartRequest) -> Response {
    let Ok(id) = SandboxId::parse(&req.id) else {
        return bad_id();
    };
    let tier = match req.tier.as_deref().map(str::parse::<Tier>).transpose() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "NO_SUCH_TIER", e.to_string()),
    };
    let layers = match d.layers_of(&req.source).await {
        Ok(l) => l,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPLATE_UNAVAILABLE",
                e.to_string(),
            )
        }
    };
    let volumes = match d.shared_mounts(&req.volumes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e),
    };
    let resources = Resources {
        vcpu: req.vcpu,
        memory_mb: req.memory_mb,
        disk_mb: req.disk_mb,
    };
    let start = SandboxStart {
        spec: SandboxSpec {
            id: id.clone(),
            template_name: req.template_name.clone(),
            layers,
            persistent_upper: None,
            workdir: req.workdir.clone(),
            resources,
            internet_access: req.internet_access,
            egress: match crate::egress::rules(req.egress.as_ref(), &req.secrets) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e.to_string()),
            },
            env_vars: req.env_vars.clone(),
            saved_state: None,
            volumes,
        },
        tier,
        owner: req.owner.clone(),
        listen: true,
    };
    let readiness = Readiness {
        start_cmd: req.start_cmd.clone(),
        probe: req.ready.clone(),
    };
    let started = match d.node.start_ready(start, &readiness).await {
        Ok(s) => s,
        Err(e) => return node_error(e),
    };
    d.saved.put(SavedSandbox {
        id: id.to_string(),
        tier: started.tier,
        handle: started.handle.clone(),
        owner: req.owner,
        paused: false,
        port: started.port,
        vcpu: req.vcpu,
        memory_mb: req.memory_mb,
        egress: req.egress.clone(),
        internet_access: req.internet_access,
        brokers_secrets: !req.secrets.is_empty(),
        awaiting_secrets: false,
    });
    Json(StartReply {
        tier: started.tier.to_string(),
        port: started.port,
        handle: started.handle.to_json(),
    })
    .into_response()
}

async fn destroy(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    detached(async move {
        let done = d.node.destroy(&id).await;
        d.saved.remove(id.as_str());
        match done {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => node_error(e),
        }
    })
    .await
}

#[derive(serde::Deserialize)]
struct PauseQuery {
    /// Pause only if still unused this long (idle pause); 200 without pausing when in use.
    if_idle_for: Option<u64>,
}

async fn pause(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<PauseQuery>,
) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    detached(async move {
        let paused = match q.if_idle_for {
            Some(s) => {
                d.node
                    .pause_if_idle(&id, std::time::Duration::from_secs(s))
                    .await
            }
            None => d.node.pause(&id).await.map(|()| true),
        };
        match paused {
            Ok(true) => {
                d.saved.set_paused(id.as_str(), true);
                StatusCode::NO_CONTENT.into_response()
            }
            Ok(false) => StatusCode::OK.into_response(),
            Err(e) => node_error(e),
        }
    })
    .await
}

async fn set_network(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Json(req): Json<warren_wire::cluster::NetworkUpdate>,
) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    let handle = match SandboxHandle::from_json(&req.handle) {
        Ok(h) => h,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e.to_string()),
    };
    let policy = match crate::egress::rules(req.egress.as_ref(), &req.secrets) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e.to_string()),
    };
    match d
        .node
        .set_egress(&id, &handle, policy.as_ref(), req.internet_access)
        .await
    {
        Ok(()) => {
            d.saved
                .set_egress(id.as_str(), req.egress, !req.secrets.is_empty());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(NodeError::Egress(why)) => error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", why),
        Err(e) => node_error(e),
    }
}

async fn usage(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    match d.node.measured_usage(&id).await {
        Some(u) => Json(u).into_response(),
        None => node_error(NodeError::NotRunning(id)),
    }
}

#[derive(serde::Deserialize)]
struct IdleFor {
    seconds: u64,
}

/// The running sandboxes unused for `seconds` (the control plane pauses them).
async fn idle(State(d): State<Arc<Daemon>>, Query(q): Query<IdleFor>) -> Response {
    let node = d.node.clone();
    let idle_for = std::time::Duration::from_secs(q.seconds);
    match tokio::task::spawn_blocking(move || node.idle_sandboxes(idle_for)).await {
        Ok(ids) => Json(ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("idle check: {e}"),
        ),
    }
}

async fn resume(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    detached(async move {
        match d.node.resume(&id).await {
            Ok(()) => {
                d.saved.set_paused(id.as_str(), false);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => node_error(e),
        }
    })
    .await
}

async fn run_command(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Json(req): Json<CommandRequest>,
) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    match d.node.run_command(&id, &req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => node_error(e),
    }
}

/// A layer this node holds, as a tar stream (for a control plane serving it to another node).
async fn layer(State(d): State<Arc<Daemon>>, Path(key): Path<String>) -> Response {
    if !valid_layer_key(&key) || !d.layers.is_ready(&key) {
        return error(
            StatusCode::NOT_FOUND,
            "NO_SUCH_LAYER",
            format!("layer {key} is not on this node"),
        );
    }
    (
        [(header::CONTENT_TYPE, "application/x-tar")],
        axum::body::Body::from_stream(crate::layer_archive::tar_stream(d.layers.path(&key))),
    )
        .into_response()
}
