//! E2B's volumes on Warren's (`crate::volumes`): create, list, get (with a fresh token), delete;
//! and the content API, authorised by the volume's token alone (`Authorization: Bearer`), as
//! E2B's SDK calls it.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_store::VolumeRecord;
use warren_wire::e2b::volumes::{
    CreateQuery, EntryStat, ListQuery, MetadataUpdate, NewVolume, PathQuery, VolumeAndToken,
    VolumeInfo,
};

use crate::auth::Caller;
use crate::clock::{now, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::query::ApiQuery;
use crate::routes::volumes::{create_volume, find_volume, not_found};
use crate::state::AppState;
use crate::volumes::content::{clean, ContentError, Entry, VolumeFiles};
use crate::volumes::{token_allows, token_for};

fn with_token(state: &AppState, v: VolumeRecord) -> ApiResult<VolumeAndToken> {
    let token = token_for(&state.tokens, &v.id, now())
        .map_err(|e| ApiError::internal("sign a volume token", e))?;
    Ok(VolumeAndToken {
        volume_id: v.id,
        name: v.name,
        token,
    })
}

/// `POST /volumes` (201); a taken name is a 400, as on E2B.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<NewVolume>,
) -> ApiResult<impl IntoResponse> {
    let v = create_volume(
        &state,
        &caller.tenant,
        &req.name,
        None,
        ApiError::bad_request,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(with_token(&state, v)?)))
}

/// `GET /volumes`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<VolumeInfo>>> {
    let all = state.store.list_volumes(&caller.tenant).await?;
    Ok(Json(
        all.into_iter()
            .map(|v| VolumeInfo {
                volume_id: v.id,
                name: v.name,
            })
            .collect(),
    ))
}

/// `GET /volumes/{id}` (by id or name), with a new token.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<VolumeAndToken>> {
    let v = find_volume(&state, &caller.tenant, &id).await?;
    Ok(Json(with_token(&state, v)?))
}

/// The volume a content call names, if its bearer token is that volume's.
async fn authorised(state: &AppState, headers: &HeaderMap, id: &str) -> ApiResult<VolumeFiles> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if !token_allows(&state.tokens, token, id) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a token of this volume is required (Authorization: Bearer <token>)",
        ));
    }
    let v = state
        .store
        .volume_by_id(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let volumes = state.volumes.clone();
    tokio::task::spawn_blocking(move || volumes.files(&v.tenant, &v.id))
        .await
        .map_err(|e| ApiError::internal("open the volume", e))?
        .map_err(content_error)
}

fn content_error(e: ContentError) -> ApiError {
    match e {
        ContentError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string())
        }
        ContentError::Exists(_) => {
            ApiError::new(StatusCode::CONFLICT, "PATH_ALREADY_EXISTS", e.to_string())
        }
        ContentError::Bad(_) => ApiError::bad_request(e.to_string()),
        ContentError::Full(_) => volume_full(e.to_string()),
        ContentError::Io { .. } => ApiError::internal("volume content", e),
    }
}

/// 507: the volume's size is reached (`warren volume create --size-mb` makes a larger one).
fn volume_full(why: String) -> ApiError {
    ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "VOLUME_FULL", why)
}

/// A failed write of an upload's bytes: a full volume is the user's to act on, not a 500.
fn write_error(path: &str, e: std::io::Error) -> ApiError {
    match e.raw_os_error() {
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT => {
            volume_full(format!("the volume is full: no room for {path}"))
        }
        _ => ApiError::internal("write the volume file", e),
    }
}

fn stat_of(e: Entry) -> EntryStat {
    EntryStat {
        name: e.name,
        kind: e.kind,
        path: e.path,
        size: e.size,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        atime: rfc3339(e.atime),
        mtime: rfc3339(e.mtime),
        ctime: rfc3339(e.ctime),
        target: e.target,
    }
}

/// Runs a blocking content call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ContentError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("volume content", e))?
        .map_err(content_error)
}

/// `GET /volumecontent/{id}/path`.
pub async fn stat(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Json<EntryStat>> {
    let files = authorised(&state, &headers, &id).await?;
    let rel = clean(&q.path).map_err(content_error)?;
    Ok(Json(stat_of(blocking(move || files.stat(&rel)).await?)))
}

/// `PATCH /volumecontent/{id}/path`.
pub async fn set_metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
    Json(m): Json<MetadataUpdate>,
) -> ApiResult<Json<EntryStat>> {
    let files = authorised(&state, &headers, &id).await?;
    let rel = clean(&q.path).map_err(content_error)?;
    let e = blocking(move || files.set_metadata(&rel, m.uid, m.gid, m.mode)).await?;
    Ok(Json(stat_of(e)))
}

/// `DELETE /volumecontent/{id}/path` (204).
pub async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<StatusCode> {
    let files = authorised(&state, &headers, &id).await?;
    let rel = clean(&q.path).map_err(content_error)?;
    blocking(move || files.remove(&rel)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /volumecontent/{id}/dir`.
pub async fn list_dir(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<EntryStat>>> {
    let files = authorised(&state, &headers, &id).await?;
    let rel = clean(&q.path).map_err(content_error)?;
    let depth = q.depth.unwrap_or(1);
    let entries = blocking(move || files.list(&rel, depth)).await?;
    Ok(Json(entries.into_iter().map(stat_of).collect()))
}

/// `POST /volumecontent/{id}/dir` (201).
pub async fn make_dir(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
) -> ApiResult<impl IntoResponse> {
    let files = authorised(&state, &headers, &id).await?;
    let rel = clean(&q.path).map_err(content_error)?;
    let parents = q.force.unwrap_or(false);
    let e = blocking(move || files.make_dir(&rel, parents, q.uid, q.gid, q.mode)).await?;
    Ok((StatusCode::CREATED, Json(stat_of(e))))
}

/// `GET /volumecontent/{id}/file`: the bytes, streamed.
pub async fn read_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Response> {
    let files = authorised(&state, &headers, &id).await?;
    let rel = clean(&q.path).map_err(content_error)?;
    let file = tokio::fs::File::from_std(blocking(move || files.open_read(&rel)).await?);
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// `PUT /volumecontent/{id}/file` (201): the body becomes the file.
pub async fn write_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let files = authorised(&state, &headers, &id).await?;
    let rel = clean(&q.path).map_err(content_error)?;
    let replace = q.force.unwrap_or(false);
    let (target, opener) = (rel.clone(), std::sync::Arc::new(files));
    let writer = opener.clone();
    let (file, upload) =
        blocking(move || writer.create_file(&target, replace, q.uid, q.gid, q.mode)).await?;
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let written: ApiResult<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| write_error(&q.path, e))?;
        }
        file.sync_all().await.map_err(|e| write_error(&q.path, e))
    }
    .await;
    drop(file);
    if let Err(e) = written {
        // Half a file is no file: the old one (if any) stays as it was.
        let _ = tokio::task::spawn_blocking(move || upload.abandon()).await;
        return Err(e);
    }
    blocking(move || upload.commit()).await?;
    let e = blocking(move || opener.stat(&rel)).await?;
    Ok((StatusCode::CREATED, Json(stat_of(e))))
}
