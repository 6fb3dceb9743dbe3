//! E2B's sandbox calls, each the Hopx API's operation under E2B's names and shapes.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use warren_core::{SandboxId, SandboxStatus};
use warren_store::{OnTimeout, SandboxRecord};
use warren_wire::control::{CreateSandboxRequest, EgressPolicy, SandboxVolume};
use warren_wire::e2b::{
    ConnectBody, Lifecycle, ListedSandbox, NetworkConfig, NewSandbox, PauseBody, RefreshBody,
    Sandbox, SandboxDetail, TimeoutBody,
};

use super::ENVD_VERSION;
use crate::auth::Caller;
use crate::clock::{now, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::query::ApiQuery;
use crate::state::{AppState, PublicMode};

/// E2B's default sandbox timeout, in seconds.
pub(super) const DEFAULT_TIMEOUT: i64 = 300;
/// Who the sandboxes are for, in E2B's `clientID` (one client: this server).
const CLIENT_ID: &str = "warren";
/// Largest list page.
const MAX_PAGE: usize = 1000;

/// E2B's template names for Warren's built-in templates: the SDKs' defaults among them.
pub(super) fn template_name(requested: Option<&str>) -> String {
    match requested.map(str::trim).filter(|t| !t.is_empty()) {
        None | Some("base") => "base".into(),
        Some("code-interpreter-v1") | Some("code-interpreter") => "code-interpreter".into(),
        Some(other) => other.to_owned(),
    }
}

/// Whether a template id E2B's SDKs send names a snapshot (`Sandbox.create(snapshot_id)`).
pub(super) fn is_snapshot_id(template: &str) -> bool {
    template.starts_with("snap_")
}

pub(super) fn parse_id(raw: &str) -> ApiResult<SandboxId> {
    SandboxId::parse(raw).map_err(|_| ApiError::sandbox_not_found())
}

/// The domain sandboxes are reached under, in wildcard mode.
fn domain(state: &AppState) -> Option<String> {
    match &state.public {
        PublicMode::Wildcard { domain, .. } => Some(domain.clone()),
        PublicMode::Local { .. } => None,
    }
}

fn metadata_of(r: &SandboxRecord) -> BTreeMap<String, String> {
    r.metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default()
}

fn listed(r: &SandboxRecord) -> ListedSandbox {
    ListedSandbox {
        template_id: r.template_id.clone(),
        sandbox_id: r.id.to_string(),
        client_id: CLIENT_ID.into(),
        alias: r.template_name.clone(),
        started_at: rfc3339(r.created_at),
        // A sandbox without a timeout: E2B has none such; a far date says "no end".
        end_at: rfc3339(r.expires_at.unwrap_or(r.created_at + 100 * 365 * 86400)),
        cpu_count: r.resources.vcpu,
        memory_mb: r.resources.memory_mb,
        disk_size_mb: r.resources.disk_mb,
        state: if r.status == SandboxStatus::Paused {
            "paused".into()
        } else {
            "running".into()
        },
        envd_version: ENVD_VERSION.into(),
        metadata: metadata_of(r),
    }
}

/// The sandbox with a fresh access token (E2B hands one out at create and connect).
pub(super) fn issued(state: &AppState, caller: &Caller, r: &SandboxRecord) -> ApiResult<Sandbox> {
    let (token, _) = state
        .tokens
        .issue(r.id.as_str(), Some(&caller.key_id), now())
        .map_err(|e| ApiError::internal("cannot sign token", e))?;
    Ok(Sandbox {
        template_id: r.template_id.clone(),
        sandbox_id: r.id.to_string(),
        client_id: CLIENT_ID.into(),
        alias: r.template_name.clone(),
        envd_version: ENVD_VERSION.into(),
        envd_access_token: token.clone(),
        traffic_access_token: token,
        domain: domain(state),
    })
}

pub(super) fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let key = crate::idempotency::key_of(&headers)?;
    let req: NewSandbox = json_body(&body)?;
    if let Some(why) = req.unserved() {
        return Err(ApiError::bad_request(format!("{why} (see docs/e2b.md)")));
    }
    let network = req.network.as_ref().map(NetworkConfig::egress);
    // `Sandbox.create(snapshot_id)`: E2B starts a snapshot like a template.
    let snapshot_id = req
        .template_id
        .as_deref()
        .map(str::trim)
        .filter(|t| is_snapshot_id(t))
        .map(str::to_owned);
    let create = CreateSandboxRequest {
        template_name: snapshot_id
            .is_none()
            .then(|| template_name(req.template_id.as_deref())),
        snapshot_id,
        timeout_seconds: Some(req.timeout.unwrap_or(DEFAULT_TIMEOUT)),
        internet_access: req.allow_internet_access,
        env_vars: req.env_vars,
        metadata: req.metadata,
        network,
        auto_pause: req.auto_pause,
        auto_resume: req.auto_resume.map(|r| r.enabled),
        volumes: req.volume_mounts.map(|mounts| {
            mounts
                .into_iter()
                .map(|m| SandboxVolume {
                    name: m.name,
                    path: m.path,
                    read_only: false,
                })
                .collect()
        }),
        ..Default::default()
    };
    let (record, replayed) = crate::idempotency::create_once(
        &state,
        &caller,
        key.as_deref(),
        uri.path(),
        &body,
        crate::routes::sandboxes::create_detached(&state, &caller, create),
    )
    .await?;
    let res = (StatusCode::CREATED, Json(issued(&state, &caller, &record)?)).into_response();
    Ok(crate::idempotency::replayed_if(replayed, res))
}

/// `GET /v2/sandboxes` (and `GET /sandboxes`, which takes `metadata` only): E2B's parameters,
/// every one served; any other is a 400 naming it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    /// `asc` (oldest first) or `desc` (newest first, the default).
    order: Option<String>,
    /// RFC 3339: sandboxes started at or after it.
    started_after: Option<String>,
    /// A template's id or name (E2B's names of the built-in ones too).
    template: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

/// What a list keeps, checked before anything is read.
struct ListFilter {
    metadata: BTreeMap<String, String>,
    started_after: Option<i64>,
    template: Option<String>,
    oldest_first: bool,
}

impl ListFilter {
    fn of(q: &ListQuery) -> ApiResult<Self> {
        let started_after = match q.started_after.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => Some(
                time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        ApiError::bad_request(format!(
                            "startedAfter: {raw:?} is not an RFC 3339 time ({e})"
                        ))
                    })?
                    .unix_timestamp(),
            ),
        };
        let oldest_first = match q.order.as_deref().unwrap_or("desc") {
            "asc" => true,
            "desc" => false,
            other => {
                return Err(ApiError::bad_request(format!(
                    "order: {other:?} is not asc or desc"
                )))
            }
        };
        Ok(Self {
            metadata: metadata_filter(q.metadata.as_deref()),
            started_after,
            template: q
                .template
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            oldest_first,
        })
    }

    fn keeps(&self, r: &SandboxRecord) -> bool {
        has_metadata(r, &self.metadata)
            && self.started_after.is_none_or(|t| r.created_at >= t)
            && self
                .template
                .as_deref()
                .is_none_or(|t| r.template_id == t || r.template_name == template_name(Some(t)))
    }
}

/// `metadata=k%3Dv%26k2%3Dv2`: the SDKs send the filter as a query string inside the parameter.
fn metadata_filter(raw: Option<&str>) -> BTreeMap<String, String> {
    raw.map(|m| {
        url::form_urlencoded::parse(m.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Whether the sandbox's metadata holds every pair of `filter`.
fn has_metadata(r: &SandboxRecord, filter: &BTreeMap<String, String>) -> bool {
    let m = metadata_of(r);
    filter.iter().all(|(k, v)| m.get(k) == Some(v))
}

async fn live_sandboxes(
    state: &AppState,
    tenant: &str,
    statuses: &[SandboxStatus],
) -> ApiResult<Vec<SandboxRecord>> {
    let mut all = Vec::new();
    for status in statuses {
        let mut cursor: Option<String> = None;
        loop {
            let page = state
                .store
                .list_sandboxes(tenant, Some(*status), None, cursor.as_deref(), 1000)
                .await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(c) if all.len() < 100_000 => cursor = Some(c),
                _ => break,
            }
        }
    }
    all.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(a.id.as_str().cmp(b.id.as_str()))
    });
    Ok(all)
}

fn wanted_states(raw: Option<&str>) -> ApiResult<Vec<SandboxStatus>> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(vec![SandboxStatus::Running, SandboxStatus::Paused]);
    };
    raw.split(',')
        .map(|s| match s.trim() {
            "running" => Ok(SandboxStatus::Running),
            "paused" => Ok(SandboxStatus::Paused),
            other => Err(ApiError::bad_request(format!(
                "unknown state {other:?}: use running or paused"
            ))),
        })
        .collect()
}

/// `GET /v2/sandboxes`: a page of the tenant's sandboxes, newest first, `x-next-token` naming
/// the next page.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let statuses = wanted_states(q.state.as_deref())?;
    let filter = ListFilter::of(&q)?;
    let mut found: Vec<SandboxRecord> = live_sandboxes(&state, &caller.tenant, &statuses)
        .await?
        .into_iter()
        .filter(|r| filter.keeps(r))
        .collect();
    if filter.oldest_first {
        found.reverse();
    }
    Ok(page_of(&found, q.next_token.as_deref(), q.limit, listed))
}

/// One page of `found` as E2B lists it: `next_token` is the offset the previous page's
/// `x-next-token` gave, and the answer's `x-next-token` names the next page, if any.
pub(super) fn page_of<T, W: serde::Serialize>(
    found: &[T],
    next_token: Option<&str>,
    limit: Option<usize>,
    wire: impl Fn(&T) -> W,
) -> Response {
    let start: usize = next_token.and_then(|t| t.parse().ok()).unwrap_or(0);
    let limit = limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let rest = found.get(start.min(found.len())..).unwrap_or_default();
    let page: Vec<W> = rest.iter().take(limit).map(wire).collect();
    let mut res = Json(page).into_response();
    if rest.len() > limit {
        if let Ok(v) = HeaderValue::from_str(&(start + limit).to_string()) {
            res.headers_mut().insert("x-next-token", v);
        }
    }
    res
}

/// `GET /sandboxes` (older SDKs): the running ones, all at once.
pub async fn list_v1(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<ListedSandbox>>> {
    let filter = ListFilter::of(&q)?;
    let found = live_sandboxes(&state, &caller.tenant, &[SandboxStatus::Running]).await?;
    Ok(Json(
        found
            .iter()
            .filter(|r| filter.keeps(r))
            .map(listed)
            .collect(),
    ))
}

/// A live sandbox of the caller's tenant; an ended one is gone, as on E2B.
async fn owned_live(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<SandboxRecord> {
    let rec = state
        .lifecycle
        .get_owned(&parse_id(raw)?, &caller.tenant)
        .await?;
    if !rec.status.is_live() {
        return Err(ApiError::sandbox_not_found());
    }
    Ok(rec)
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxDetail>> {
    let rec = owned_live(&state, &caller, &id).await?;
    let (token, _) = state
        .tokens
        .issue(rec.id.as_str(), Some(&caller.key_id), now())
        .map_err(|e| ApiError::internal("cannot sign token", e))?;
    let network = rec
        .egress
        .as_deref()
        .and_then(|e| serde_json::from_str::<EgressPolicy>(e).ok())
        .map(|p| NetworkConfig {
            allow_out: p.allow_out,
            deny_out: p.deny_out,
            dns_servers: (!p.dns_servers.is_empty()).then_some(p.dns_servers),
            allow_public_traffic: Some(true),
            ..Default::default()
        });
    let volume_mounts = crate::routes::volumes::mounts_shown(&state, &rec.id)
        .await?
        .unwrap_or_default()
        .into_iter()
        .map(|m| warren_wire::e2b::VolumeMount {
            name: m.name,
            path: m.path,
        })
        .collect();
    Ok(Json(SandboxDetail {
        volume_mounts,
        listed: listed(&rec),
        envd_access_token: token,
        allow_internet_access: rec.internet_access,
        domain: domain(&state),
        network,
        lifecycle: Lifecycle {
            auto_resume: rec.on_timeout == OnTimeout::PauseUntilRequest,
            on_timeout: if rec.on_timeout.pauses() {
                "pause"
            } else {
                "kill"
            }
            .into(),
        },
    }))
}

pub async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let rec = owned_live(&state, &caller, &id).await?;
    state.lifecycle.kill(&rec.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_timeout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: TimeoutBody = json_body(&body)?;
    let rec = owned_live(&state, &caller, &id).await?;
    let seconds = req
        .timeout
        .ok_or_else(|| ApiError::bad_request("timeout (seconds) is required"))?;
    state.lifecycle.set_timeout(&rec.id, seconds).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /sandboxes/{id}/network`: replaces the sandbox's whole egress config; new connections
/// follow it at once and open ones it refuses are cut.
pub async fn set_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: warren_wire::e2b::NetworkUpdate = json_body(&body)?;
    let network = req.network();
    if let Some(feature) = network.unserved() {
        return Err(ApiError::bad_request(format!(
            "network.{feature} is not supported by Warren (see docs/e2b.md)"
        )));
    }
    let rec = owned_live(&state, &caller, &id).await?;
    let mut policy = network.egress();
    match req.allow_internet_access {
        Some(false)
            if !policy
                .deny_out
                .iter()
                .any(|d| d == warren_egress::ALL_TRAFFIC) =>
        {
            policy.deny_out.push(warren_egress::ALL_TRAFFIC.into());
        }
        Some(true) if !rec.internet_access => {
            return Err(ApiError::bad_request(
                "allow_internet_access: the sandbox was created without internet access, which \
                 cannot be turned on while it runs (allowOut can open destinations)",
            ));
        }
        _ => {}
    }
    state.lifecycle.set_network(&rec.id, &policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/refreshes`: keep it alive `duration` seconds from now (E2B: at most
/// an hour per call).
pub async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: RefreshBody = json_body(&body)?;
    let rec = owned_live(&state, &caller, &id).await?;
    let seconds = req.duration.unwrap_or(DEFAULT_TIMEOUT).clamp(1, 3600);
    state.lifecycle.set_timeout(&rec.id, seconds).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/connect`: a paused sandbox is resumed (201), a running one answered
/// as is (200); either way the timeout becomes at least `timeout` from now.
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: ConnectBody = json_body(&body)?;
    refuse_fs_only(req.memory)?;
    if req.auto_pause.is_some() {
        return Err(ApiError::bad_request(
            "autoPause is set at create (lifecycle.on_timeout), not on connect",
        ));
    }
    let mut rec = owned_live(&state, &caller, &id).await?;
    let mut status = StatusCode::OK;
    if rec.status == SandboxStatus::Paused {
        rec = state.lifecycle.resume(&rec.id).await?;
        status = StatusCode::CREATED;
    }
    // E2B's default when the client names none; a sandbox paused at its timeout has none left.
    let t = req.timeout.filter(|t| *t > 0).unwrap_or(DEFAULT_TIMEOUT);
    let remaining = rec.expires_at.map(|e| e - now());
    if remaining.is_none_or(|r| r < t) {
        rec = state.lifecycle.set_timeout(&rec.id, t).await?;
    }
    Ok((status, Json(issued(&state, &caller, &rec)?)).into_response())
}

pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let req: PauseBody = json_body(&body)?;
    refuse_fs_only(req.memory)?;
    if req.require_healthy_guest == Some(true) {
        return Err(ApiError::bad_request(
            "requireHealthyGuest: true is not served by Warren yet: its pauses freeze the \
             sandbox from outside without asking its agent (see docs/e2b.md)",
        ));
    }
    let rec = owned_live(&state, &caller, &id).await?;
    if rec.status == SandboxStatus::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "INVALID_STATE",
            format!("sandbox {} is already paused", rec.id),
        ));
    }
    state.lifecycle.pause(&rec.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `memory: false` asks for a file-system-only pause or resume, which Warren does not do: its
/// pauses keep memory and processes.
fn refuse_fs_only(memory: Option<bool>) -> ApiResult<()> {
    if memory == Some(false) {
        return Err(ApiError::bad_request(
            "memory: false (a file-system-only pause or resume) is not served by Warren: its \
             pauses keep memory and processes (see docs/e2b.md)",
        ));
    }
    Ok(())
}

pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: ConnectBody = json_body(&body)?;
    refuse_fs_only(req.memory)?;
    let rec = owned_live(&state, &caller, &id).await?;
    if rec.status != SandboxStatus::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "INVALID_STATE",
            format!("sandbox {} is not paused", rec.id),
        ));
    }
    let rec = state.lifecycle.resume(&rec.id).await?;
    // The older SDKs' resume names what happens at the next timeout.
    let rec = match req.auto_pause {
        Some(pause) => {
            let then = match (pause, rec.on_timeout) {
                (false, _) => OnTimeout::Kill,
                (true, OnTimeout::PauseUntilRequest) => OnTimeout::PauseUntilRequest,
                (true, _) => OnTimeout::Pause,
            };
            state.lifecycle.set_on_timeout(&rec.id, then).await?
        }
        None => rec,
    };
    let t = req.timeout.filter(|t| *t > 0).unwrap_or(DEFAULT_TIMEOUT);
    let rec = state.lifecycle.set_timeout(&rec.id, t).await?;
    Ok((StatusCode::CREATED, Json(issued(&state, &caller, &rec)?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsRange {
    /// Unix seconds.
    start: Option<i64>,
    end: Option<i64>,
}

/// `GET /sandboxes/{id}/metrics`: the sandbox's usage now, measured by its machine from outside
/// it (`GET /v1/sandboxes/{id}/usage`), as E2B's one sample, or none when the asked interval
/// ended before now or starts after it. Warren keeps no history of samples.
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(range): ApiQuery<MetricsRange>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let rec = owned_live(&state, &caller, &id).await?;
    let at = now();
    // A little slack: the SDK's clock and this one are not the same clock.
    if range.end.is_some_and(|e| e < at - 5) || range.start.is_some_and(|s| s > at + 5) {
        return Ok(Json(Vec::new()));
    }
    let measured = state.lifecycle.usage(&rec).await?;
    let u = crate::routes::sandboxes::usage_report(&rec, &measured, at);
    Ok(Json(vec![serde_json::json!({
        "timestamp": u.measured_at,
        "timestampUnix": at,
        "cpuCount": u.cpu_count,
        "cpuUsedPct": u.cpu_used_pct,
        "memUsed": u.memory_used_bytes,
        "memTotal": u.memory_limit_bytes,
        "memCache": 0,
        "diskUsed": u.disk_used_bytes.unwrap_or(0),
        "diskTotal": u.disk_limit_bytes,
    })]))
}

/// `GET /sandboxes/{id}/logs`: the sandbox's own log lines are not collected by Warren; the
/// call answers with none rather than failing the SDK.
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    owned_live(&state, &caller, &id).await?;
    Ok(Json(serde_json::json!({ "logs": [], "logEntries": [] })))
}
