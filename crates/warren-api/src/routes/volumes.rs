//! `/v1/volumes` (Warren extension): the tenant's persistent volumes (`crate::volumes`), the
//! same ones E2B's `/volumes` shows. The operations both APIs share are here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_store::{VolumeDeleted, VolumeRecord};
use warren_wire::control::{CloneVolume, NewVolume, SandboxVolume, VolumeInfo, VolumeList};

use crate::auth::Caller;
use crate::clock::{now, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::limits::{check_volume_quota, DEFAULT_VOLUME_MB};
use crate::state::AppState;
use crate::volumes::{new_id, valid_name, ImageError};

const MIB: u64 = 1024 * 1024;
/// The sizes a volume may have: ext4's smallest useful, and a bound well under its largest.
const SIZE_MB: std::ops::RangeInclusive<u64> = 16..=16 * 1024 * 1024;

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("volume {id} not found"),
    )
}

/// Records and makes a volume of `size_mb` (the default when None) within the tenant's volume
/// quota; a taken name is `taken`'s error (E2B answers 400, Warren 409).
pub(crate) async fn create_volume(
    state: &AppState,
    tenant: &str,
    name: &str,
    size_mb: Option<u64>,
    taken: impl FnOnce(String) -> ApiError,
) -> ApiResult<VolumeRecord> {
    if !valid_name(name) {
        return Err(ApiError::bad_request(
            "name: 1 to 64 characters of letters, digits, '_' and '-'",
        ));
    }
    let size_mb = size_mb.unwrap_or(DEFAULT_VOLUME_MB);
    if !SIZE_MB.contains(&size_mb) {
        return Err(ApiError::bad_request(format!(
            "size_mb: {} to {}; got {size_mb}",
            SIZE_MB.start(),
            SIZE_MB.end()
        )));
    }
    let held: u64 = state
        .store
        .list_volumes(tenant)
        .await?
        .iter()
        .map(size_mb_of)
        .sum();
    check_volume_quota(state.lifecycle.limits(), tenant, held, size_mb)?;
    let v = VolumeRecord {
        id: new_id(),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        quota_bytes: i64::try_from(size_mb * MIB).unwrap_or(i64::MAX),
        created_at: now(),
    };
    if !state.store.insert_volume(&v).await? {
        return Err(taken(format!("a volume named {name} exists already")));
    }
    let volumes = state.volumes.clone();
    let (t, id) = (v.tenant.clone(), v.id.clone());
    let made = tokio::task::spawn_blocking(move || volumes.create(&t, &id, size_mb * MIB))
        .await
        .map_err(|e| ApiError::internal("make the volume", e))?;
    if let Err(e) = made {
        let _ = state.lifecycle.delete_volume(&v.tenant, &v.id).await;
        return Err(ApiError::internal("make the volume", e));
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

/// Deletes the record, then the files; a volume a sandbox mounts is kept (409, naming them).
pub(crate) async fn delete_volume(state: &AppState, tenant: &str, id: &str) -> ApiResult<()> {
    let v = find_volume(state, tenant, id).await?;
    match state.lifecycle.delete_volume(&v.tenant, &v.id).await? {
        VolumeDeleted::Deleted => {}
        VolumeDeleted::NotFound => return Err(not_found(id)),
        VolumeDeleted::InUse(sandboxes) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "VOLUME_IN_USE",
                format!(
                    "volume {} is mounted by sandbox {}: kill {} first",
                    v.name,
                    sandboxes.join(", "),
                    if sandboxes.len() == 1 { "it" } else { "them" }
                ),
            ))
        }
    }
    state
        .volumes
        .remove(&v.tenant, &v.id)
        .await
        .map_err(|e| ApiError::internal("remove the volume's files", e))
}

/// The volumes a sandbox mounts, as the API shows them; None when it mounts none.
pub(crate) async fn mounts_shown(
    state: &AppState,
    id: &warren_core::SandboxId,
) -> ApiResult<Option<Vec<SandboxVolume>>> {
    let mounts = state.store.mounts_of(id.as_str()).await?;
    Ok((!mounts.is_empty()).then(|| {
        mounts
            .into_iter()
            .map(|m| SandboxVolume {
                name: m.name.unwrap_or(m.volume_id),
                path: m.path,
                read_only: m.read_only,
            })
            .collect()
    }))
}

/// A volume's size in MB (the store keeps bytes).
fn size_mb_of(v: &VolumeRecord) -> u64 {
    u64::try_from(v.quota_bytes).unwrap_or(0) / MIB
}

fn info(v: VolumeRecord) -> VolumeInfo {
    VolumeInfo {
        size_mb: size_mb_of(&v),
        used_mb: None,
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
    let v = create_volume(&state, &caller.tenant, &body.name, body.size_mb, |why| {
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
    let v = find_volume(&state, &caller.tenant, &id).await?;
    let volumes = state.volumes.clone();
    let (t, vid) = (v.tenant.clone(), v.id.clone());
    let used = tokio::task::spawn_blocking(move || volumes.usage(&t, &vid))
        .await
        .map_err(|e| ApiError::internal("measure the volume", e))?
        .map_err(|e| ApiError::internal("measure the volume", e))?;
    let mut shown = info(v);
    shown.used_mb = Some(used.div_ceil(MIB));
    Ok(Json(shown))
}

/// `POST /v1/volumes/{id}/clone`: a new volume with a copy of the files.
pub async fn clone(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<CloneVolume>,
) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    let source = find_volume(&state, &caller.tenant, &id).await?;
    let size_mb = body.size_mb.unwrap_or_else(|| size_mb_of(&source));
    let copy = create_volume(&state, &caller.tenant, &body.name, Some(size_mb), |why| {
        ApiError::new(StatusCode::CONFLICT, "CONFLICT", why)
    })
    .await?;
    let volumes = state.volumes.clone();
    let (t, from, to) = (copy.tenant.clone(), source.id.clone(), copy.id.clone());
    let copied = tokio::task::spawn_blocking(move || volumes.copy_files(&t, &from, &to))
        .await
        .map_err(|e| ApiError::internal("copy the volume", e))?;
    if let Err(e) = copied {
        let _ = delete_volume(&state, &caller.tenant, &copy.id).await;
        return Err(match e {
            ImageError::Full(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "VOLUME_FULL",
                format!(
                    "volume {}'s files do not fit in {size_mb} MB: clone it with a larger size_mb",
                    source.name
                ),
            ),
            e => ApiError::internal("copy the volume", e),
        });
    }
    Ok((StatusCode::CREATED, Json(info(copy))))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    delete_volume(&state, &caller.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
