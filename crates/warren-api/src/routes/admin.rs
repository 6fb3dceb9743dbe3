//! Admin API of a tenant: its API keys (masked listing, create, revoke, rotate) and its audit
//! trail. Needs an admin key; everything is scoped to the caller's tenant.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use warren_store::{ApiKeyRecord, AuditQuery, KeyEnvironment, KeyShape, KeySpec, NewApiKey, Role};
use warren_wire::control::{AuditEntry, AuditPage};

use crate::auth::Caller;
use crate::clock::{now, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::request_id::RequestId;
use crate::state::AppState;

/// Grace period of a rotation when the caller names none: both keys work for a day.
const DEFAULT_GRACE_SECONDS: i64 = 24 * 3600;

fn key_json(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "key": k.masked(),
        "tenant": k.tenant,
        "role": k.role.as_str(),
        "environment": k.environment.as_str(),
        "created_at": rfc3339(k.created_at),
        "revoked_at": k.revoked_at.map(rfc3339),
        "expires_at": k.expires_at.map(rfc3339),
        "active": k.is_valid_at(now()),
    })
}

fn new_key_json(k: &NewApiKey) -> Value {
    let mut v = key_json(&k.record);
    // The only time the key is ever shown.
    v["key"] = k.secret.clone().into();
    v
}

pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let keys = state.store.list_keys(Some(&caller.tenant)).await?;
    Ok(Json(json!({
        "object": "list",
        "data": keys.iter().map(key_json).collect::<Vec<_>>(),
        "has_more": false,
        "request_id": rid.0,
    })))
}

#[derive(Deserialize)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    role: Option<String>,
    /// `warren` (default: `wrn_live_…`) or `e2b` (`e2b_…`, for E2B SDKs that check a key's form).
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("name must have 1 to 100 characters"));
    }
    let role = match body.role.as_deref() {
        None => Role::Member,
        Some(r) => {
            Role::parse(r).ok_or_else(|| ApiError::bad_request("role must be admin or member"))?
        }
    };
    let environment = match body.environment.as_deref() {
        None => KeyEnvironment::Live,
        Some(e) => KeyEnvironment::parse(e)
            .ok_or_else(|| ApiError::bad_request("environment must be live or test"))?,
    };
    let expires_at = match body.expires_in_days {
        None => None,
        Some(d) if d > 0 => Some(now() + d * 86_400),
        Some(_) => return Err(ApiError::bad_request("expires_in_days must be positive")),
    };
    let spec = KeySpec {
        name,
        tenant: &caller.tenant,
        role,
        environment,
        expires_at,
    };
    let shape = match body.format.as_deref() {
        None => KeyShape::Warren,
        Some(f) => KeyShape::parse(f)
            .ok_or_else(|| ApiError::bad_request("format must be warren or e2b"))?,
    };
    let key = state
        .store
        .create_api_key_shaped(&spec, shape, now())
        .await?;
    Ok((StatusCode::CREATED, Json(new_key_json(&key))))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    if !state
        .store
        .revoke_key(&id, Some(&caller.tenant), now())
        .await?
    {
        return Err(key_not_found(&id));
    }
    Ok(Json(json!({ "id": id, "revoked": true })))
}

#[derive(Deserialize, Default)]
pub struct RotateKey {
    #[serde(default)]
    grace_seconds: Option<i64>,
}

pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<RotateKey>>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let grace = body
        .and_then(|b| b.0.grace_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let rotated = state
        .store
        .rotate_key(&id, Some(&caller.tenant), grace, now())
        .await?
        .ok_or_else(|| key_not_found(&id))?;
    let mut v = new_key_json(&rotated);
    v["replaces"] = id.into();
    v["old_key_valid_until"] = rfc3339(now() + grace.max(0)).into();
    Ok(Json(v))
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        format!("no active key {id} in this organization"),
    )
}

#[derive(Deserialize)]
pub struct AuditParams {
    sandbox_id: Option<String>,
    action: Option<String>,
    key_id: Option<String>,
    /// RFC 3339 or unix seconds.
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

fn parse_time(s: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs * 1000);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            ApiError::bad_request(format!("invalid time {s:?}: use RFC 3339 or unix seconds"))
        })
}

pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Query(p): Query<AuditParams>,
) -> ApiResult<Json<AuditPage>> {
    caller.require_admin()?;
    let q = AuditQuery {
        tenant: Some(caller.tenant.clone()),
        sandbox_id: p.sandbox_id,
        action: p.action,
        key_id: p.key_id,
        since_ms: p.since.as_deref().map(parse_time).transpose()?,
        until_ms: p.until.as_deref().map(parse_time).transpose()?,
        after: p.cursor.as_deref().and_then(|c| c.parse().ok()),
        limit: p.limit.unwrap_or(100),
    };
    let (events, more) = state.store.query_audit(&q).await?;
    let next_cursor = more
        .then(|| events.last().map(|e| e.seq.to_string()))
        .flatten();
    let data = events
        .into_iter()
        .map(|e| AuditEntry {
            seq: e.seq,
            at: crate::clock::rfc3339_ms(e.at),
            tenant: e.tenant,
            key_id: e.key_id,
            sandbox_id: e.sandbox_id,
            action: e.action,
            input_bytes: e.input_bytes,
            input_sha256: e.input_sha256,
            outcome: e.outcome,
            status_code: e.status_code,
            duration_ms: e.duration_ms,
            request_id: e.request_id,
        })
        .collect();
    Ok(Json(AuditPage {
        object: "list".into(),
        data,
        has_more: next_cursor.is_some(),
        next_cursor,
        request_id: rid.0,
    }))
}
