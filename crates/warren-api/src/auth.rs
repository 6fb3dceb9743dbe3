//! API-key authentication. Keys arrive as `X-API-Key` (SDK calls) or `Authorization: Bearer`
//! (template builds, docs); both are accepted. Only the hash is looked up.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
pub struct Caller {
    pub key_id: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
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
        let Some(key) = from_header.or(from_bearer).filter(|k| !k.is_empty()) else {
            return Err(ApiError::unauthorized(
                "API key required: send X-API-Key or Authorization: Bearer",
            ));
        };
        match state.sandboxes.store.find_key(key).await? {
            Some(k) => Ok(Caller { key_id: k.id }),
            None => Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "INVALID_TOKEN",
                "Invalid API key",
            )),
        }
    }
}
