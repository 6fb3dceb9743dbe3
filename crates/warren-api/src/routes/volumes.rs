//! `/v1/volumes` (Warren extension): the tenant's persistent volumes (`crate::volumes`), the
//! same ones E2B's `/volumes` shows. The operations both APIs share are here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_store::VolumeRecord;
use warren_wire::control::{NewVolume, VolumeInfo, VolumeList};

use crate::auth::Caller;
use crate::clock::{now, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::volumes::{new_id, valid_name};

/// Each volume's size limit (not yet enforced on writes: issue 32).
const DEFAULT_QUOTA_BYTES: i64 = 10 * 1024 * 1024 * 1024;

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("volume {id} not found"),
    )
}

/// Records and makes a volume; a taken name is `taken`'s error (E2B answers 400, Warren 409).
pub(crate) async fn create_volume(
    state: &AppState,
    tenant: &str,
    name: &str,
    taken: impl FnOnce(String) -> ApiError,
) -> ApiResult<VolumeRecord> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(
            "name: 1 to 64 characters of letters, digits, '_' and '-'",
        ));
    }
    let v = VolumeRecord {
        id: new_id(),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        quota_bytes: DEFAULT_QUOTA_BYTES,
        created_at: now(),
    };
    if !state.store.insert_volume(&v).await? {
        return Err(taken(format!("a volume named {name} exists already")));
    }
    if let Err(e) = state.volumes.create(&v.tenant, &v.id) {
        let _ = state.store.delete_volume(&v.tenant, &v.id).await;
        return Err(ApiError::internal("make the volume's directory", e));
    }
    Ok(v)
}

/// The caller's volume by id or name.
pub(crate) async fn find_volume(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> ApiResult<VolumeRecord> {
    state
        .store
        .find_volume(tenant, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Deletes the record, then the files.
pub(crate) async fn delete_volume(state: &AppState, tenant: &str, id: &str) -> ApiResult<()> {
    let v = find_volume(state, tenant, id).await?;
    state.store.delete_volume(&v.tenant, &v.id).await?;
    state
        .volumes
        .remove(&v.tenant, &v.id)
        .await
        .map_err(|e| ApiError::internal("remove the volume's files", e))
}

fn info(v: VolumeRecord) -> VolumeInfo {
    VolumeInfo {
        id: v.id,
        name: v.name,
        created_at: rfc3339(v.created_at),
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewVolume>,
) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    let v = create_volume(&state, &caller.tenant, &body.name, |why| {
        ApiError::new(StatusCode::CONFLICT, "CONFLICT", why)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info(v))))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<VolumeList>> {
    let all = state.store.list_volumes(&caller.tenant).await?;
    Ok(Json(VolumeList {
        volumes: all.into_iter().map(info).collect(),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<VolumeInfo>> {
    Ok(Json(info(find_volume(&state, &caller.tenant, &id).await?)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_volume(&state, &caller.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
