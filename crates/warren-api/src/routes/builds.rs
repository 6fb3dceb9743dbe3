//! The template build API exactly as both SDKs drive it (spec §3.9): upload links and uploads,
//! build, status, logs. Only the keys the Python SDK's dataclasses allow are returned.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use warren_core::Resources;
use warren_store::{TemplateRecord, TemplateStatus};
use warren_wire::control::{BuildLogs, BuildStarted, BuildStatus, UploadLink};

use crate::auth::Caller;
use crate::builds::spec::BuildRequest;
use crate::builds::{self, BuildContext};
use crate::clock::{now, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::request_id::RequestId;
use crate::state::AppState;

/// Largest COPY context accepted.
pub(crate) const MAX_UPLOAD: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Deserialize)]
pub struct UploadLinkRequest {
    files_hash: String,
    #[serde(default)]
    content_length: Option<u64>,
}

pub(crate) fn origin(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = if state.https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

pub async fn upload_link(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Extension(rid): Extension<RequestId>,
    Json(req): Json<UploadLinkRequest>,
) -> ApiResult<Json<UploadLink>> {
    let size = req.content_length.unwrap_or(MAX_UPLOAD);
    if size > MAX_UPLOAD {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("build context of {size} bytes exceeds {MAX_UPLOAD}"),
        ));
    }
    let (token, expires) = state
        .uploads
        .link(&caller.tenant, &req.files_hash, size, now())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Always upload: the SDKs' hash of a directory does not cover its files (spec §3.9), so a
    // "present" answer could silently build from stale files. Caching keys on the bytes instead.
    Ok(Json(UploadLink {
        present: false,
        upload_url: format!(
            "{}/v1/templates/files/upload/{token}",
            origin(&state, &headers)
        ),
        expires_at: rfc3339(expires),
        files_hash: req.files_hash,
        request_id: rid.0,
    }))
}

/// `PUT` of a COPY context to its one-time URL (no credentials: the URL is the credential).
pub async fn upload(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let Some((path, max)) = state.uploads.redeem(&token, now()) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "UPLOAD_LINK_INVALID",
            "upload link unknown, used or expired; ask for a new one",
        ));
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| ApiError::internal("create upload dir", e))?;
    }
    let tmp = path.with_extension("part");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| ApiError::internal("create upload", e))?;
    let mut written = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        written += chunk.len() as u64;
        // The announced size, with 1 MiB of slack, and never more than MAX_UPLOAD.
        if written > max.saturating_add(1024 * 1024).min(MAX_UPLOAD) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "upload larger than announced",
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal("write upload", e))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal("write upload", e))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| ApiError::internal("store upload", e))?;
    Ok(Json(json!({ "uploaded": true, "bytes": written })))
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

pub async fn build(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Extension(rid): Extension<RequestId>,
    Json(req): Json<BuildRequest>,
) -> ApiResult<impl IntoResponse> {
    let id = start(&state, &caller, req, None).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BuildStarted {
            logs_url: format!("{}/v1/templates/build/{id}/logs", origin(&state, &headers)),
            build_id: id.clone(),
            template_id: id,
            status: "building".into(),
            request_id: rid.0,
        }),
    ))
}

/// Checks a build request, records its template as `building` (a new one, with `new_id` when
/// given, or the caller's own when `update` is set) and runs the build in the background.
/// Returns the template's id. Both APIs' builds start here.
pub(crate) async fn start(
    state: &AppState,
    caller: &Caller,
    req: BuildRequest,
    new_id: Option<String>,
) -> ApiResult<String> {
    if !valid_name(&req.name) {
        return Err(ApiError::bad_request(
            "name: 1 to 64 characters of a-z, 0-9, '-', '_' or '.'",
        ));
    }
    let Some(from) = req.from_image.clone().filter(|f| !f.trim().is_empty()) else {
        return Err(ApiError::bad_request("from_image is required"));
    };
    req.parsed_steps()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(r) = &req.ready_cmd {
        r.probe()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(n) = &req.network {
        crate::egress::parse(n).map_err(|e| ApiError::bad_request(format!("network: {e}")))?;
    }
    if let Some(tier) = req.isolation.as_deref() {
        if !tier.parse().is_ok_and(|t| state.cluster.has_tier(t)) {
            return Err(ApiError::bad_request(format!(
                "isolation tier {tier:?} is not available on this server (see `warren doctor`)"
            )));
        }
    }
    let store = &state.store;
    let existing = store.find_template(&req.name, &caller.tenant).await?;
    let id = match existing {
        Some(t) if t.tenant.is_none() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "TEMPLATE_EXISTS",
                format!("{} is a built-in template name", req.name),
            ))
        }
        Some(t) if !req.update => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "TEMPLATE_EXISTS",
                format!(
                    "template {} already exists; build with update=true to replace it",
                    t.name
                ),
            ))
        }
        Some(t) if t.status == TemplateStatus::Building => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "BUILD_IN_PROGRESS",
                format!("template {} is being built", t.name),
            ))
        }
        Some(t) => t.id,
        None => new_id.unwrap_or_else(new_template_id),
    };
    let t = now();
    let record = TemplateRecord {
        id: id.clone(),
        name: req.name.clone(),
        display_name: req.name.clone(),
        description: Some(format!("Built from {from}")),
        category: Some("custom".into()),
        language: None,
        resources: Resources {
            vcpu: req.cpu.unwrap_or(2).clamp(1, 64),
            memory_mb: req.memory.unwrap_or(2048).clamp(128, 262_144),
            disk_mb: req.disk_gb.unwrap_or(10).clamp(1, 1024) * 1024,
        },
        status: TemplateStatus::Building,
        is_public: false,
        error_message: None,
        created_at: t,
        updated_at: t,
        tenant: Some(caller.tenant.clone()),
        spec: None,
        build_started_at: Some(t),
        build_finished_at: None,
    };
    // Name uniqueness is global in the store: another tenant's name is taken too.
    store.begin_template_build(&record, t).await.map_err(|_| {
        ApiError::new(
            StatusCode::CONFLICT,
            "TEMPLATE_EXISTS",
            format!("template name {} is taken", req.name),
        )
    })?;
    let build = state.builds.begin(&id);
    build.log(format!("Building template {} ({id}) from {from}", req.name));
    let ctx = BuildContext {
        lifecycle: state.lifecycle.clone(),
        layers: state.layers.clone(),
        uploads: state.uploads.clone(),
        tenant: caller.tenant.clone(),
    };
    let registry = state.registry.clone();
    tokio::spawn(async move {
        let base = match builds::local_base(&ctx.lifecycle, &from, &ctx.tenant).await {
            Ok(Some(base)) => Ok(base),
            Ok(None) => registry
                .pull(
                    &from,
                    req.registry_credentials.as_ref(),
                    &ctx.layers,
                    &build,
                )
                .await
                // E2B's builder starts every image as `user` in `/home/user`, whatever the
                // image's own USER and WORKDIR (`builds::execute` sets them).
                .map(|mut image| {
                    if req.e2b {
                        (image.user, image.workdir) = (None, None);
                    }
                    image
                })
                .map_err(builds::BuildError::from),
            Err(e) => Err(e),
        };
        match base {
            Ok(base) => builds::run(ctx, build, req, base).await,
            Err(e) => {
                build.log(format!("❌ ERROR: base image {from}: {e}"));
                builds::fail(&ctx, &build, format!("base image {from}: {e}")).await;
            }
        }
    });
    Ok(id)
}

pub(crate) fn new_template_id() -> String {
    format!("tpl_{}", hex::encode(rand::random::<[u8; 6]>()))
}

async fn owned_build(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(TemplateRecord, Option<std::sync::Arc<builds::Build>>)> {
    let t = state
        .store
        .find_template(id, &caller.tenant)
        .await?
        .filter(|t| t.tenant.as_deref() == Some(caller.tenant.as_str()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                format!("Build not found: {id}"),
            )
        })?;
    Ok((t.clone(), state.builds.get(&t.id)))
}

pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<BuildStatus>> {
    let (t, live) = owned_build(&state, &caller, &id).await?;
    let started = t.build_started_at.unwrap_or(t.created_at);
    let mut status = BuildStatus {
        build_id: t.id.clone(),
        template_id: t.id.clone(),
        status: t.status.as_str().to_owned(),
        progress: if t.status == TemplateStatus::Active {
            100
        } else {
            0
        },
        started_at: rfc3339(started),
        request_id: rid.0,
        current_step: None,
        build_duration_ms: None,
        completed_at: t.build_finished_at.map(rfc3339),
        error_message: t.error_message.clone(),
    };
    if let Some(b) = live {
        let view = b.view();
        status.status = view.status.to_owned();
        status.progress = view.progress;
        status.current_step = view.current_step;
        status.build_duration_ms = view.duration_ms;
    }
    Ok(Json(status))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    offset: usize,
}

pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<BuildLogs>> {
    let (t, live) = owned_build(&state, &caller, &id).await?;
    let (logs, offset, status) = match live {
        Some(b) => {
            let (text, next) = b.logs_from(q.offset);
            (text, next, b.view().status.to_owned())
        }
        None => (String::new(), q.offset, t.status.as_str().to_owned()),
    };
    let complete = matches!(status.as_str(), "active" | "failed");
    Ok(Json(BuildLogs {
        logs,
        offset,
        status,
        complete,
        request_id: rid.0,
    }))
}
