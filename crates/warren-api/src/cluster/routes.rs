//! The cluster's HTTP surface on a control plane: nodes joining, reporting and sending audit
//! records (`/v1/internal/*`, node credentials only), layers fetched by nodes, and the
//! operator's view of nodes (`/v1/admin/nodes`, admin keys).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sha2::{Digest, Sha256};
use warren_core::SandboxId;
use warren_store::{AuditEvent, NodeRecord};
use warren_wire::cluster::{
    AuditBatch, HeartbeatResponse, JoinRequest, JoinResponse, NodeAnswer, NodeList, NodeReport,
    NodeSummary,
};

use super::{NodeView, HEARTBEAT};
use crate::audit::now_ms;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::request_id::RequestId;
use crate::state::AppState;

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Equal in constant time (over hashes, so lengths do not leak either).
fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The node a request's credential (`<node id>:<node key>`) belongs to.
async fn node_of(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    let refused = || ApiError::unauthorized("not a node credential of this cluster");
    let (id, key) = bearer(headers)
        .and_then(|b| b.split_once(':'))
        .ok_or_else(refused)?;
    let stored = state.store.node_key_hash(id).await?.ok_or_else(refused)?;
    if same_secret(&sha256_hex(key), &stored) {
        Ok(id.to_owned())
    } else {
        Err(refused())
    }
}

pub async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<JoinRequest>,
) -> ApiResult<Json<JoinResponse>> {
    let Some(secret) = state.cluster.join_secret.as_ref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "NODES_DISABLED",
            "this control plane accepts no nodes: start it with WARREN_NODE_JOIN_SECRET set",
        ));
    };
    if !bearer(&headers).is_some_and(|b| same_secret(b, secret.expose())) {
        return Err(ApiError::unauthorized("wrong join secret"));
    }
    let speaks = warren_wire::cluster::MIN_NODE_PROTOCOL..=warren_wire::cluster::NODE_PROTOCOL;
    if !speaks.contains(&req.protocol) {
        let node_version = if req.version.is_empty() {
            "an unknown version".to_owned()
        } else {
            format!("warren {}", req.version)
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NODE_PROTOCOL_UNSUPPORTED",
            format!(
                "node {:?} ({node_version}) speaks node protocol {}; this control plane (warren {}) speaks {} to {}: run the same Warren release on both (upgrade the control plane first)",
                req.node_id,
                req.protocol,
                crate::long_version(),
                speaks.start(),
                speaks.end()
            ),
        ));
    }
    let valid_id = !req.node_id.is_empty()
        && req.node_id.len() <= 64
        && req
            .node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_id {
        return Err(ApiError::bad_request(
            "node_id: 1-64 letters, digits, - or _",
        ));
    }
    let scheme = if req.public_scheme == "https" {
        "https"
    } else {
        "http"
    };
    let node_key = hex::encode(rand::random::<[u8; 32]>());
    let now = now_ms();
    let record = NodeRecord {
        id: req.node_id.clone(),
        name: req.name.clone(),
        api_url: req.api_url.clone(),
        public_host: format!("{scheme}://{}", req.public_host),
        labels: serde_json::to_string(&req.labels).unwrap_or_else(|_| "{}".into()),
        report: serde_json::to_string(&req.report).unwrap_or_else(|_| "{}".into()),
        state: "active".into(),
        joined_at: now,
        last_seen: now,
        ca_pem: req.ca_pem.clone(),
    };
    state
        .store
        .join_node(&record, &sha256_hex(&node_key))
        .await?;
    state.cluster.refresh().await;
    tracing::info!(node = %req.node_id, api = %req.api_url, labels = ?req.labels, "node joined");
    Ok(Json(JoinResponse {
        node_key,
        token_public_key: state.tokens.public_key_base64(),
        tenant_requests_per_second: state.lifecycle.limits().tenant_requests_per_second,
        heartbeat_seconds: HEARTBEAT.as_secs(),
    }))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(report): Json<NodeReport>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let node = node_of(&state, &headers).await?;
    let json = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    state.store.node_heartbeat(&node, &json, now_ms()).await?;
    for (id, code) in &report.exited {
        if let Ok(id) = SandboxId::parse(id) {
            state.lifecycle.on_remote_exit(&node, &id, *code).await;
        }
    }
    // Sandboxes the node runs that the store no longer has live there (deleted while the node
    // was unreachable, or never recorded): the node stops them.
    let live: std::collections::HashSet<String> = state
        .store
        .live_sandboxes_on(Some(&node))
        .await?
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    let destroy = report
        .sandboxes
        .iter()
        .filter(|s| !live.contains(&s.id))
        .map(|s| s.id.clone())
        .collect();
    for id in report
        .awaiting_secrets
        .iter()
        .filter(|id| live.contains(*id))
        .filter_map(|id| SandboxId::parse(id).ok())
    {
        let lifecycle = state.lifecycle.clone();
        tokio::spawn(async move { lifecycle.rearm_network(&id).await });
    }
    let current = state.store.get_node(&node).await?;
    Ok(Json(HeartbeatResponse {
        state: current.map_or_else(|| "active".into(), |n| n.state),
        destroy,
    }))
}

pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(batch): Json<AuditBatch>,
) -> ApiResult<StatusCode> {
    let node = node_of(&state, &headers).await?;
    let events: Vec<AuditEvent> = batch
        .records
        .into_iter()
        .map(|r| AuditEvent {
            at: r.at,
            tenant: r.tenant,
            key_id: r.key_id,
            sandbox_id: Some(r.sandbox_id),
            action: r.action,
            input_bytes: Some(i64::try_from(r.input_bytes).unwrap_or(i64::MAX)),
            input_sha256: r.input_sha256,
            outcome: r.outcome,
            status_code: Some(i64::from(r.status_code)),
            duration_ms: i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            request_id: Some(r.request_id),
            ..Default::default()
        })
        .collect();
    tracing::debug!(node = %node, records = events.len(), "audit records from a node");
    state.store.append_audit(&events).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A built template's layer as a tar stream (ownership, modes and overlay whiteouts kept), for
/// a node that lacks it.
pub async fn layer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    node_of(&state, &headers).await?;
    let valid = warren_node::layer_archive::valid_layer_key(&key);
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            format!("layer {key} is on no control plane or healthy node"),
        )
    };
    if !valid {
        return Err(missing());
    }
    if !state.layers.is_ready(&key) {
        // Built on a node (a RUN step): relay it from a node that holds it.
        let holder = state.cluster.holder_of(&key).ok_or_else(missing)?;
        let remote = state
            .cluster
            .remote(&holder.record.id)
            .ok_or_else(missing)?;
        let res = remote
            .layer(&key)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        return Ok((
            [(header::CONTENT_TYPE, "application/x-tar")],
            Body::from_stream(res.bytes_stream()),
        )
            .into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(warren_node::layer_archive::tar_stream(
            state.layers.path(&key),
        )),
    )
        .into_response())
}

fn summary(n: &NodeView) -> NodeSummary {
    NodeSummary {
        id: n.record.id.clone(),
        name: n.record.name.clone(),
        state: n.state().to_owned(),
        api_url: n.record.api_url.clone(),
        public_host: n.record.public_host.clone(),
        labels: n.labels.clone(),
        tiers: n.report.tiers.clone(),
        capacity: n.report.capacity.clone(),
        used: n.report.used.clone(),
        sandboxes: n.report.sandboxes.len() as u32,
        templates: n.report.templates.clone(),
        last_seen_seconds_ago: (n.silent_for() * 10.0).round() / 10.0,
    }
}

pub async fn list_nodes(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
) -> ApiResult<Json<NodeList>> {
    caller.require_admin()?;
    state.cluster.refresh().await;
    Ok(Json(NodeList {
        object: "list".into(),
        data: state.cluster.nodes().iter().map(summary).collect(),
        local_node: state.cluster.local.is_some(),
        has_more: false,
        request_id: rid.0,
    }))
}

async fn set_state(state: &AppState, id: &str, to: &str) -> ApiResult<Json<NodeAnswer>> {
    if !state.store.set_node_state(id, to).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            format!("no node {id}"),
        ));
    }
    state.cluster.refresh().await;
    let node = state.cluster.node(id).map(|n| summary(&n));
    Ok(Json(NodeAnswer { node }))
}

pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<NodeAnswer>> {
    caller.require_admin()?;
    set_state(&state, &id, "draining").await
}

pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<NodeAnswer>> {
    caller.require_admin()?;
    set_state(&state, &id, "active").await
}
