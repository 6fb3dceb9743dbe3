//! Snapshots (Warren extension, docs/snapshots.md): take one of a running sandbox, list, get and
//! delete a tenant's. Creating copies is `POST /v1/sandboxes` with `snapshot_id` (and `count`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::json;
use warren_store::SnapshotRecord;
use warren_wire::control::Snapshot;

use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::ApiResult;
use crate::request_id::RequestId;
use crate::routes::sandboxes::parse_id;
use crate::state::AppState;

fn to_wire(s: &SnapshotRecord) -> Snapshot {
    Snapshot {
        id: s.id.clone(),
        object: "snapshot".into(),
        sandbox_id: s.source_sandbox_id.clone(),
        template_id: s.template_id.clone(),
        template_name: s.template_name.clone(),
        isolation: s.isolation.to_string(),
        size_bytes: s.size_bytes,
        with_memory: serde_json::from_str::<crate::template_spec::TemplateSpec>(&s.spec)
            .is_ok_and(|spec| spec.saved_state.is_some()),
        created_at: rfc3339(s.created_at),
    }
}

/// `POST /v1/sandboxes/{id}/snapshot`: the sandbox keeps running.
pub async fn take(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let snap = state
        .lifecycle
        .snapshot(&parse_id(&id)?, &caller.tenant)
        .await?;
    Ok((StatusCode::CREATED, Json(to_wire(&snap))))
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
) -> ApiResult<impl IntoResponse> {
    let snaps = state.lifecycle.list_snapshots(&caller.tenant).await?;
    let data: Vec<Snapshot> = snaps.iter().map(to_wire).collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "url": "/v1/snapshots",
        "request_id": rid.0,
    })))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let snap = state.lifecycle.owned_snapshot(&id, &caller.tenant).await?;
    Ok(Json(to_wire(&snap)))
}

/// Deletes the snapshot and its layer (409 while sandboxes run from it).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    state.lifecycle.delete_snapshot(&id, &caller.tenant).await?;
    Ok(Json(
        json!({ "id": id, "object": "snapshot", "deleted": true }),
    ))
}
