use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use warren_core::{SandboxId, SandboxStatus};
use warren_store::SandboxRecord;
use warren_wire::cluster::MeasuredUsage;
use warren_wire::control::{
    CreateSandboxRequest, EgressPolicy, ListPage, Sandbox, SandboxResources, SandboxUsage,
    SetTimeoutRequest, TokenResponse,
};

use crate::auth::Caller;
use crate::clock::{now, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::Requester;
use crate::request_id::RequestId;
use crate::state::{AppState, PublicMode};

pub(crate) fn parse_id(raw: &str) -> ApiResult<SandboxId> {
    // A malformed id cannot name a sandbox: same answer as an unknown one.
    SandboxId::parse(raw).map_err(|_| ApiError::sandbox_not_found())
}

/// Converts a record to the wire object. Internal addresses never appear: only the public host.
fn to_wire(state: &AppState, r: &SandboxRecord, rid: Option<&RequestId>) -> Sandbox {
    let node = r.node_id.as_deref().and_then(|n| state.cluster.node(n));
    let public_host = match (&state.public, &node) {
        (PublicMode::Wildcard { domain, scheme }, _) => {
            format!("{scheme}://{}-{}.{domain}", warren_node::AGENT_PORT, r.id)
        }
        // On a joined node: its own address, the sandbox's port there.
        (_, Some(node)) => match r.listen_port {
            Some(port) if r.status.is_live() => format!("{}:{port}", node.record.public_host),
            _ => String::new(),
        },
        (PublicMode::Local { host, .. }, None) => {
            match state.node.as_ref().and_then(|n| n.port(&r.id)) {
                Some(port) => {
                    let scheme = if state.https { "https" } else { "http" };
                    format!("{scheme}://{host}:{port}")
                }
                None => String::new(),
            }
        }
    };
    let preview_url = match &state.public {
        PublicMode::Wildcard { domain, scheme } => {
            Some(format!("{scheme}://{{port}}-{}.{domain}", r.id))
        }
        PublicMode::Local { .. } => None,
    };
    Sandbox {
        id: r.id.to_string(),
        object: "sandbox".into(),
        status: r.status.to_string(),
        direct_url: public_host.clone(),
        public_host,
        preview_url,
        template_id: Some(r.template_id.clone()),
        template_name: Some(r.template_name.clone()),
        organization_id: 1,
        node_id: r.node_id.clone().unwrap_or_else(|| state.node_id.clone()),
        region: r.region.clone().unwrap_or_else(|| state.region.clone()),
        resources: SandboxResources {
            vcpu: r.resources.vcpu,
            memory_mb: r.resources.memory_mb,
            disk_mb: r.resources.disk_mb,
        },
        internet_access: r.internet_access,
        live_mode: true,
        timeout_seconds: r.timeout_seconds,
        expires_at: r.expires_at.map(rfc3339),
        created_at: rfc3339(r.created_at),
        isolation: r.isolation.to_string(),
        status_reason: match &node {
            // Its node stopped reporting: the sandbox may well run on, but nobody can tell.
            Some(n) if r.status.is_live() && !n.healthy() => Some(format!(
                "its node {} has not reported for {:.0} s; it answers again when the node is back",
                n.record.id,
                n.silent_for()
            )),
            _ => r.status_reason.clone(),
        },
        auth_token: None,
        token_expires_at: None,
        request_id: rid.map(|r| r.0.clone()),
        volumes: None,
    }
}

/// Creates a sandbox for `caller` (both APIs' create). Once admitted, a create runs to the end
/// even if the client goes away (an SDK timing out on a slow start, say): dropped half-way, it
/// would leave a starting sandbox nobody tracks. The sandbox then lives until its timeout or a
/// delete, as if the response had been lost.
pub(crate) async fn create_detached(
    state: &AppState,
    caller: &Caller,
    req: CreateSandboxRequest,
) -> ApiResult<SandboxRecord> {
    let (state, caller) = (state.clone(), caller.clone());
    tokio::spawn(async move {
        let who = Requester {
            tenant: &caller.tenant,
            key_id: &caller.key_id,
        };
        let started = std::time::Instant::now();
        let record = state.lifecycle.create(req, who).await?;
        crate::metrics::observe_create(started.elapsed().as_secs_f64());
        Ok(record)
    })
    .await
    .map_err(|e| ApiError::internal("sandbox creation failed", e))?
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<axum::response::Response> {
    let key = crate::idempotency::key_of(&headers)?;
    // An empty body (some clients send none) means "all defaults", which then asks for a template.
    let req: CreateSandboxRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSandboxRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let count = req.count.unwrap_or(1);
    if count == 0 || count > MAX_COUNT {
        return Err(ApiError::bad_request(format!(
            "count must be between 1 and {MAX_COUNT}; got {count}"
        )));
    }
    if count == 1 {
        let (record, replayed) = crate::idempotency::create_once(
            &state,
            &caller,
            key.as_deref(),
            "/v1/sandboxes",
            &body,
            create_detached(&state, &caller, req),
        )
        .await?;
        let mut wire = with_token(&state, &caller, &record, Some(&rid))?;
        wire.volumes = super::volumes::mounts_shown(&state, &record.id).await?;
        let res = (StatusCode::CREATED, Json(wire)).into_response();
        return Ok(crate::idempotency::replayed_if(replayed, res));
    }
    if key.is_some() {
        return Err(ApiError::bad_request(
            "Idempotency-Key is served on creates of one sandbox; count is above 1",
        ));
    }
    // Many alike (a fork into N copies): all of them, or none.
    let one = CreateSandboxRequest { count: None, ..req };
    let results = futures_util::future::join_all(
        (0..count).map(|_| create_detached(&state, &caller, one.clone())),
    )
    .await;
    let mut made = Vec::new();
    let mut failed = None;
    for r in results {
        match r {
            Ok(record) => made.push(record),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        for record in &made {
            let _ = state.lifecycle.kill(&record.id).await;
        }
        return Err(e);
    }
    let mut sandboxes = Vec::with_capacity(made.len());
    for record in &made {
        sandboxes.push(with_token(&state, &caller, record, Some(&rid))?);
    }
    Ok((StatusCode::CREATED, Json(json!({ "sandboxes": sandboxes }))).into_response())
}

/// Most sandboxes one create may ask for (`count`).
const MAX_COUNT: u32 = 100;

/// The wire object of a new sandbox, with its token.
fn with_token(
    state: &AppState,
    caller: &Caller,
    record: &SandboxRecord,
    rid: Option<&RequestId>,
) -> ApiResult<Sandbox> {
    let (token, exp) = state
        .tokens
        .issue(record.id.as_str(), Some(&caller.key_id), now())
        .map_err(|e| ApiError::internal("cannot sign token", e))?;
    let mut wire = to_wire(state, record, rid);
    wire.auth_token = Some(token);
    wire.token_expires_at = Some(rfc3339(exp));
    Ok(wire)
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    status: Option<String>,
    cursor: Option<String>,
    region: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListPage<Sandbox>>> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(SandboxStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status {s:?}: use running, paused, creating, stopped, error or deleted"
            ))
        })?),
    };
    let page = state
        .store
        .list_sandboxes(
            &caller.tenant,
            status,
            q.region.as_deref().filter(|r| !r.is_empty()),
            q.cursor.as_deref(),
            q.limit.unwrap_or(100),
        )
        .await?;
    Ok(Json(ListPage {
        object: "list".into(),
        data: page
            .items
            .iter()
            .map(|r| to_wire(&state, r, None))
            .collect(),
        has_more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
        url: "/v1/sandboxes".into(),
        request_id: Some(rid.0),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let rec = state
        .lifecycle
        .get_owned(&parse_id(&id)?, &caller.tenant)
        .await?;
    let mut wire = to_wire(&state, &rec, Some(&rid));
    wire.volumes = super::volumes::mounts_shown(&state, &rec.id).await?;
    Ok(Json(wire))
}

/// What the sandbox uses, measured from outside it (`GET /v1/sandboxes/{id}/usage`).
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxUsage>> {
    let rec = state
        .lifecycle
        .get_owned(&parse_id(&id)?, &caller.tenant)
        .await?;
    let measured = state.lifecycle.usage(&rec).await?;
    Ok(Json(usage_report(&rec, &measured, now())))
}

/// The wire form of a node's measurement of `rec`, taken at `at` (Unix seconds).
pub fn usage_report(rec: &SandboxRecord, m: &MeasuredUsage, at: i64) -> SandboxUsage {
    const MIB: u64 = 1 << 20;
    let vcpu = rec.resources.vcpu.max(1);
    SandboxUsage {
        sandbox_id: rec.id.as_str().to_owned(),
        status: rec.status.as_str().to_owned(),
        measured_at: rfc3339(at),
        cpu_count: vcpu,
        // Frozen: nothing runs now, whatever ran in the moments before the pause.
        cpu_used_pct: if rec.status == SandboxStatus::Paused {
            0.0
        } else {
            ((m.cpu_pct_of_one / f64::from(vcpu)).min(100.0) * 10.0).round() / 10.0
        },
        cpu_time_ms: m.cpu_time_ms,
        memory_used_bytes: m.memory_bytes,
        memory_limit_bytes: u64::from(rec.resources.memory_mb) * MIB,
        disk_used_bytes: m.disk_bytes,
        disk_limit_bytes: u64::from(rec.resources.disk_mb) * MIB,
        processes: m.processes,
    }
}

pub async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    state.lifecycle.get_owned(&id, &caller.tenant).await?;
    let rec = state.lifecycle.kill(&id).await?;
    Ok(Json(
        json!({ "id": rec.id.as_str(), "status": rec.status.as_str(), "message": "Sandbox deleted", "request_id": rid.0 }),
    ))
}

pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let id = parse_id(&id)?;
    state.lifecycle.get_owned(&id, &caller.tenant).await?;
    let rec = state.lifecycle.pause(&id).await?;
    Ok(Json(to_wire(&state, &rec, Some(&rid))))
}

pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let id = parse_id(&id)?;
    state.lifecycle.get_owned(&id, &caller.tenant).await?;
    let rec = state.lifecycle.resume(&id).await?;
    Ok(Json(to_wire(&state, &rec, Some(&rid))))
}

pub async fn set_timeout(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    Json(body): Json<SetTimeoutRequest>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    state.lifecycle.get_owned(&id, &caller.tenant).await?;
    let rec = state
        .lifecycle
        .set_timeout(&id, body.timeout_seconds)
        .await?;
    Ok(Json(json!({
        "id": rec.id.as_str(),
        "timeout_seconds": rec.timeout_seconds,
        "expires_at": rec.expires_at.map(rfc3339),
        "request_id": rid.0,
    })))
}

/// A sandbox's egress policy (Warren extension); empty when internet access alone decides.
pub async fn network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EgressPolicy>> {
    let id = parse_id(&id)?;
    let rec = state.lifecycle.get_owned(&id, &caller.tenant).await?;
    Ok(Json(crate::egress::stored(&rec).unwrap_or_default()))
}

/// Replaces a sandbox's egress policy (Warren extension): the body is the create request's
/// `network`, the answer the policy now enforced. New connections follow it at once; open ones
/// it refuses are cut.
pub async fn set_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<EgressPolicy>,
) -> ApiResult<Json<EgressPolicy>> {
    let id = parse_id(&id)?;
    state.lifecycle.get_owned(&id, &caller.tenant).await?;
    let rec = state.lifecycle.set_network(&id, &body).await?;
    Ok(Json(crate::egress::stored(&rec).unwrap_or_default()))
}

pub async fn refresh_token(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenResponse>> {
    let rec = state
        .lifecycle
        .get_owned(&parse_id(&id)?, &caller.tenant)
        .await?;
    if !rec.status.is_live() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "INVALID_STATE",
            format!("sandbox is {}", rec.status),
        ));
    }
    let (token, exp) = state
        .tokens
        .issue(rec.id.as_str(), Some(&caller.key_id), now())
        .map_err(|e| ApiError::internal("cannot sign token", e))?;
    Ok(Json(TokenResponse {
        id: rec.id.to_string(),
        auth_token: token,
        token_expires_at: rfc3339(exp),
        request_id: Some(rid.0),
    }))
}
