//! API-key authentication. Keys arrive as `X-API-Key` (SDK calls) or `Authorization: Bearer`
//! (template builds, docs); both are accepted. Only the hash is looked up. The extractor also
//! applies the request-rate limits and tells the audit layer who the caller is.

use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use warren_store::Role;

use crate::clock::now;
use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub tenant: String,
    pub role: Role,
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "this needs an admin key of the organization",
            ))
        }
    }
}

/// Filled by the extractor, read by the audit middleware after the handler ran.
#[derive(Clone, Default)]
pub struct CallerSlot(pub Arc<Mutex<Option<Caller>>>);

fn presented_key(parts: &Parts) -> Option<&str> {
    let from_header = parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let from_bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    from_header.or(from_bearer).filter(|k| !k.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(key) = presented_key(parts) else {
            return Err(ApiError::unauthorized(
                "API key required: send X-API-Key or Authorization: Bearer",
            ));
        };
        let Some(record) = state.store.find_key(key, now()).await? else {
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "INVALID_TOKEN",
                "Invalid, revoked or expired API key",
            ));
        };
        let caller = Caller {
            key_id: record.id,
            tenant: record.tenant,
            role: record.role,
        };
        if let Some(slot) = parts.extensions.get::<CallerSlot>() {
            *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(caller.clone());
        }
        state.rate.check(Some(&caller.key_id), &caller.tenant)?;
        Ok(caller)
    }
}
