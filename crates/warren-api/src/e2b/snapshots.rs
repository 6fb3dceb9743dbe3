//! E2B's snapshot calls over Warren's snapshots (docs/instant.md): `create_snapshot`, a create
//! whose template is a snapshot id, `list_snapshots`, `delete_snapshot` (E2B deletes a snapshot as
//! a template) and `fork`, whose snapshot is the fork's own and is removed once no copy of it
//! runs. What a snapshot holds is the tier's: the file system on namespaces, the whole machine
//! with its memory on microVMs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use warren_store::SnapshotRecord;
use warren_wire::control::CreateSandboxRequest;
use warren_wire::e2b::{ForkError, ForkRequest, ForkResult, SnapshotInfo, SnapshotRequest};

use super::sandboxes::{is_snapshot_id, issued, json_body, page_of, parse_id, DEFAULT_TIMEOUT};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::query::ApiQuery;
use crate::state::AppState;

/// Most copies one fork may ask for (E2B's bound).
const MAX_FORKS: u32 = 20;

fn info(s: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        snapshot_id: s.id.clone(),
        names: s.name.iter().cloned().collect(),
    }
}

/// `POST /sandboxes/{id}/snapshots`: the sandbox runs on.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: SnapshotRequest = json_body(&body)?;
    let name = req.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if let Some(n) = name {
        check_name(n)?;
    }
    let id = parse_id(&id)?;
    let rec = state.lifecycle.get_owned(&id, &caller.tenant).await?;
    if req.memory == Some(false) && rec.isolation == warren_core::Tier::Microvm {
        // A microVM's snapshot is its whole machine; a file-system-only one is not built.
        return Err(ApiError::bad_request(
            "file-system-only snapshots of microVM sandboxes are not available: take a full one \
             (without mode=\"filesystem\")",
        ));
    }
    let snap = state
        .lifecycle
        .snapshot_as(&id, &caller.tenant, name, false)
        .await?;
    Ok((StatusCode::CREATED, Json(info(&snap))).into_response())
}

fn check_name(name: &str) -> ApiResult<()> {
    let ok = name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "a snapshot name is up to 128 letters, digits and - _ . : /",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// `GET /snapshots`: the tenant's snapshots, oldest first, in pages (`page_of`).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let wanted_name = q.name.as_deref().filter(|n| !n.is_empty());
    let found: Vec<SnapshotRecord> = state
        .lifecycle
        .list_snapshots(&caller.tenant)
        .await?
        .into_iter()
        .filter(|s| {
            q.sandbox_id
                .as_deref()
                .is_none_or(|id| s.source_sandbox_id == id)
        })
        .filter(|s| wanted_name.is_none_or(|n| s.id == n || s.name.as_deref() == Some(n)))
        .collect();
    Ok(page_of(&found, q.next_token.as_deref(), q.limit, info))
}

/// `DELETE /templates/{id}`: E2B's SDKs delete a snapshot this way. Templates themselves are
/// deleted through Warren's own API: another id is no snapshot, so not found (the SDK's `False`).
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !is_snapshot_id(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "SNAPSHOT_NOT_FOUND",
            format!(
                "no snapshot {id:?} (templates are deleted through DELETE /v1/templates/{{id}}, \
                 see docs/e2b.md)"
            ),
        ));
    }
    state.lifecycle.delete_snapshot(&id, &caller.tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/fork`: one snapshot of the sandbox (which runs on), then `count` copies
/// of it, each started or failed on its own.
pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: ForkRequest = json_body(&body)?;
    let count = req.count.unwrap_or(1);
    if count == 0 || count > MAX_FORKS {
        return Err(ApiError::bad_request(format!(
            "count must be between 1 and {MAX_FORKS}; got {count}"
        )));
    }
    let snap = state
        .lifecycle
        .snapshot_as(&parse_id(&id)?, &caller.tenant, None, true)
        .await?;
    let one = CreateSandboxRequest {
        snapshot_id: Some(snap.id.clone()),
        timeout_seconds: Some(req.timeout.unwrap_or(DEFAULT_TIMEOUT)),
        ..Default::default()
    };
    let started = futures_util::future::join_all(
        (0..count).map(|_| crate::routes::sandboxes::create_detached(&state, &caller, one.clone())),
    )
    .await;
    let results: Vec<ForkResult> = started
        .into_iter()
        .map(
            |r| match r.and_then(|record| issued(&state, &caller, &record)) {
                Ok(sandbox) => ForkResult {
                    sandbox: Some(sandbox),
                    error: None,
                },
                Err(e) => ForkResult {
                    sandbox: None,
                    error: Some(ForkError {
                        code: e.status.as_u16(),
                        message: e.message,
                    }),
                },
            },
        )
        .collect();
    Ok((StatusCode::CREATED, Json(results)).into_response())
}
