//! E2B's template builds (the SDKs' `Template.build`): a build is asked for by name, the COPY
//! contexts are uploaded by hash, the steps are sent, and the status is polled with log
//! offsets. The build itself is the Hopx API's (`routes::builds::start`, `crate::builds`) with
//! E2B's step dialect: same layers, same step cache.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use warren_store::TemplateStatus;
use warren_wire::e2b::templates::{
    AliasFound, BuildRequest as E2bBuildRequest, BuildRequested, BuildStart, BuildStatus,
    FileUpload, LogEntry, StatusQuery, StatusReason,
};

use super::sandboxes::template_name;
use crate::auth::Caller;
use crate::builds::spec::{BuildRequest, ReadyCheck, RegistryCredentials};
use crate::builds::Requested;
use crate::clock::{now, rfc3339_ms};
use crate::error::{ApiError, ApiResult};
use crate::query::ApiQuery;
use crate::routes::builds::{new_template_id, origin, start, valid_name, MAX_UPLOAD};
use crate::state::AppState;

/// The one tag Warren serves: a template name has one build.
const DEFAULT_TAG: &str = "default";
/// Most log entries one status answer carries (the SDKs poll until none are left).
const MAX_ENTRIES: usize = 100;
/// How long a sandbox's start may wait for the ready command: E2B waits for it once, while
/// building; Warren at each create, so it must fail before the SDK's request timeout (60 s).
const READY_TIMEOUT_MS: u64 = 45_000;

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", what)
}

/// A random version-4 UUID: E2B's SDKs parse build ids as UUIDs.
fn new_build_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `POST /v3/templates`: asks for a build of `name` (a new template or the caller's own).
pub async fn request(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<E2bBuildRequest>,
) -> ApiResult<impl IntoResponse> {
    if req.team_id.is_some() {
        return Err(ApiError::bad_request(
            "teamID: a Warren key belongs to one tenant; leave teamID out",
        ));
    }
    let Some(full) = req.name.or(req.alias).filter(|n| !n.trim().is_empty()) else {
        return Err(ApiError::bad_request("name is required"));
    };
    let (name, tag) = match full.split_once(':') {
        Some((n, t)) => (n.to_owned(), Some(t.to_owned())),
        None => (full.clone(), None),
    };
    let tags: Vec<String> = req
        .tags
        .unwrap_or_default()
        .into_iter()
        .chain(tag)
        .collect();
    if let Some(t) = tags.iter().find(|t| t.as_str() != DEFAULT_TAG) {
        return Err(ApiError::bad_request(format!(
            "tags: Warren keeps one build per template name, tagged {DEFAULT_TAG:?}; tag {t:?} is not served"
        )));
    }
    if !valid_name(&name) {
        return Err(ApiError::bad_request(
            "name: 1 to 64 characters of a-z, 0-9, '-', '_' or '.'",
        ));
    }
    let template_id = match state.store.find_template(&name, &caller.tenant).await? {
        Some(t) if t.tenant.is_none() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "TEMPLATE_EXISTS",
                format!("{name} is a built-in template name"),
            ))
        }
        Some(t) if t.status == TemplateStatus::Building => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "BUILD_IN_PROGRESS",
                format!("template {name} is being built"),
            ))
        }
        Some(t) => t.id,
        None => new_template_id(),
    };
    let build_id = new_build_id();
    state.builds.request(Requested {
        tenant: caller.tenant.clone(),
        template_id: template_id.clone(),
        build_id: build_id.clone(),
        name: name.clone(),
        cpu: req.cpu_count,
        memory_mb: req.memory_mb,
        // The disk is at least the free space asked for, with a GiB for the image itself.
        disk_gb: req.min_free_disk_mb.map(|mb| mb.div_ceil(1024) + 1),
        at: now(),
        started: false,
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(BuildRequested {
            template_id,
            build_id,
            public: false,
            names: vec![name.clone()],
            tags: vec![DEFAULT_TAG.into()],
            aliases: vec![name],
        }),
    ))
}

/// `GET /templates/{id}/files/{hash}` (201): always a fresh upload link, as on the Hopx API
/// (`routes::builds::upload_link` says why).
pub async fn file_upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((template_id, hash)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    if !state.builds.is_requested(&caller.tenant, &template_id) {
        return Err(not_found(format!(
            "no build of template {template_id} was asked for"
        )));
    }
    let (token, _) = state
        .uploads
        .link(&caller.tenant, &hash, MAX_UPLOAD, now())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(FileUpload {
            present: false,
            url: Some(format!(
                "{}/v1/templates/files/upload/{token}",
                origin(&state, &headers)
            )),
        }),
    ))
}

/// Where a build starts: an image (E2B's own base images are Warren's templates) or a template.
fn base_of(start: &BuildStart) -> ApiResult<String> {
    match (start.from_image.as_deref(), start.from_template.as_deref()) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give fromImage or fromTemplate, not both",
        )),
        (Some(image), None) => {
            let repo = image.split([':', '@']).next().unwrap_or(image);
            Ok(match repo {
                "e2bdev/base" => "base".into(),
                "e2bdev/code-interpreter" => "code-interpreter".into(),
                "e2bdev/desktop" => "desktop".into(),
                _ => image.to_owned(),
            })
        }
        (None, Some(t)) => Ok(template_name(Some(t))),
        (None, None) => Err(ApiError::bad_request(
            "fromImage or fromTemplate is required",
        )),
    }
}

fn credentials(start: &BuildStart) -> ApiResult<Option<RegistryCredentials>> {
    let Some(r) = &start.from_image_registry else {
        return Ok(None);
    };
    if r.kind != "registry" {
        return Err(ApiError::bad_request(format!(
            "fromImageRegistry: type {:?} is not served; give {{\"type\": \"registry\", \"username\", \"password\"}}",
            r.kind
        )));
    }
    Ok(Some(RegistryCredentials {
        username: r.username.clone().unwrap_or_default(),
        password: warren_core::Secret::new(r.password.clone().unwrap_or_default()),
    }))
}

/// `POST /v2/templates/{id}/builds/{build}` (202): the steps; the build runs in the background.
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path((template_id, build_id)): Path<(String, String)>,
    Json(body): Json<BuildStart>,
) -> ApiResult<StatusCode> {
    let Some(r) = state
        .builds
        .requested(&caller.tenant, &template_id, &build_id)
    else {
        return Err(not_found(format!("build {build_id} not found")));
    };
    if r.started {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "BUILD_IN_PROGRESS",
            format!("build {build_id} has started already"),
        ));
    }
    let req = BuildRequest {
        name: r.name.clone(),
        from_image: Some(base_of(&body)?),
        registry_credentials: credentials(&body)?,
        steps: body.steps,
        start_cmd: body.start_cmd.filter(|c| !c.trim().is_empty()),
        ready_cmd: body
            .ready_cmd
            .filter(|c| !c.trim().is_empty())
            .map(|command| ReadyCheck {
                kind: "command".into(),
                port: None,
                url: None,
                path: None,
                process_name: None,
                command: Some(command),
                timeout: Some(READY_TIMEOUT_MS),
                interval: None,
            }),
        cpu: r.cpu,
        memory: r.memory_mb,
        disk_gb: r.disk_gb,
        skip_cache: body.force,
        update: true,
        isolation: None,
        network: None,
        e2b: true,
    };
    start(&state, &caller, req, Some(template_id)).await?;
    state.builds.mark_started(&build_id);
    Ok(StatusCode::ACCEPTED)
}

/// A build log line's level, by the marks the build writes.
fn level_of(line: &str) -> &'static str {
    if line.starts_with("❌") {
        "error"
    } else {
        "info"
    }
}

fn rank(level: &str) -> u8 {
    match level {
        "debug" => 0,
        "info" => 1,
        "warn" => 2,
        _ => 3,
    }
}

/// `GET /templates/{id}/builds/{build}/status`: the state and the log entries from
/// `logsOffset` on.
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path((template_id, build_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> ApiResult<Json<BuildStatus>> {
    let lowest = match q.level.as_deref() {
        None => 0,
        Some(l @ ("debug" | "info" | "warn" | "error")) => rank(l),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "level: one of debug, info, warn, error (got {other:?})"
            )))
        }
    };
    let Some(r) = state
        .builds
        .requested(&caller.tenant, &template_id, &build_id)
    else {
        return Err(not_found(format!("build {build_id} not found")));
    };
    let mut answer = BuildStatus {
        template_id: template_id.clone(),
        build_id,
        status: "waiting",
        logs: Vec::new(),
        log_entries: Vec::new(),
        reason: None,
    };
    if !r.started {
        return Ok(Json(answer));
    }
    let limit = q.limit.unwrap_or(MAX_ENTRIES).clamp(1, MAX_ENTRIES);
    match state.builds.get(&template_id) {
        Some(live) => {
            answer.status = match live.view().status {
                "active" => "ready",
                "failed" => "error",
                _ => "building",
            };
            answer.log_entries = live
                .lines_from(q.logs_offset.unwrap_or(0), limit)
                .into_iter()
                .map(|(at, message)| LogEntry {
                    timestamp: rfc3339_ms(at),
                    level: level_of(&message),
                    message,
                })
                .filter(|e| rank(e.level) >= lowest)
                .collect();
            answer.reason = live.error().map(|message| StatusReason {
                message,
                step: None,
            });
        }
        // The server restarted since: the template's record says how the build ended.
        None => {
            let t = state
                .store
                .find_template(&template_id, &caller.tenant)
                .await?
                .ok_or_else(|| not_found(format!("template {template_id} not found")))?;
            answer.status = match t.status {
                TemplateStatus::Active => "ready",
                TemplateStatus::Building => "building",
                _ => "error",
            };
            answer.reason = t.error_message.map(|message| StatusReason {
                message,
                step: None,
            });
        }
    }
    Ok(Json(answer))
}

/// `GET /templates/aliases/{alias}`: whether a name is a template the caller can use.
pub async fn alias(
    State(state): State<AppState>,
    caller: Caller,
    Path(alias): Path<String>,
) -> ApiResult<Json<AliasFound>> {
    let name = template_name(Some(&alias));
    let t = state
        .store
        .find_template(&name, &caller.tenant)
        .await?
        .filter(|t| t.status == TemplateStatus::Active)
        .ok_or_else(|| not_found(format!("template {alias} not found")))?;
    Ok(Json(AliasFound {
        template_id: t.id,
        public: t.tenant.is_none(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_are_version_4_uuids() {
        let id = new_build_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn e2b_base_images_are_the_built_in_templates() {
        let from = |image: &str| {
            base_of(&BuildStart {
                from_image: Some(image.into()),
                ..Default::default()
            })
            .expect("base")
        };
        assert_eq!(from("e2bdev/base:latest"), "base");
        assert_eq!(from("e2bdev/code-interpreter"), "code-interpreter");
        assert_eq!(from("python:3.12"), "python:3.12");
        let both = BuildStart {
            from_image: Some("a".into()),
            from_template: Some("b".into()),
            ..Default::default()
        };
        assert!(base_of(&both).is_err());
        assert!(base_of(&BuildStart::default()).is_err());
    }
}
