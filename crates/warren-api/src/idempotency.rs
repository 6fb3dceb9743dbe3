//! `Idempotency-Key` on sandbox creates, on both protocols (E2B's SDKs send it; any client may):
//! a create retried with the same key within a day gets the sandbox the first one made, never a
//! second sandbox. The key is claimed in the store before anything starts, so retries that reach
//! another control plane (PostgreSQL) agree too; a retry that arrives while the first request is
//! still making its sandbox waits for it.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use warren_store::{KeyClaim, SandboxRecord};

use crate::auth::Caller;
use crate::clock::now;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

const HEADER: &str = "idempotency-key";
/// How long a key names its sandbox.
pub const KEPT_SECONDS: i64 = 86_400;
/// How long a retry waits for the first request's sandbox.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(120);

/// The key a request carries: 1 to 255 visible ASCII characters.
pub fn key_of(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(raw) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key: 1 to 255 visible ASCII characters")
        })?;
    Ok(Some(key.to_owned()))
}

/// Runs `create` (the create this request asks for) once per key: the record, and whether it
/// was made by an earlier request with the same key.
pub async fn create_once(
    state: &AppState,
    caller: &Caller,
    key: Option<&str>,
    path: &str,
    body: &[u8],
    create: impl Future<Output = ApiResult<SandboxRecord>>,
) -> ApiResult<(SandboxRecord, bool)> {
    let Some(key) = key else {
        return Ok((create.await?, false));
    };
    let digest = hex::encode(
        Sha256::new()
            .chain_update(path)
            .chain_update(body)
            .finalize(),
    );
    let store = &state.store;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        let at = now();
        match store
            .claim_idempotency_key(&caller.tenant, key, &digest, at, at - KEPT_SECONDS)
            .await?
        {
            KeyClaim::Claimed => {
                return match create.await {
                    Ok(record) => {
                        store
                            .finish_idempotency_key(&caller.tenant, key, record.id.as_str())
                            .await?;
                        Ok((record, false))
                    }
                    Err(e) => {
                        store.release_idempotency_key(&caller.tenant, key).await?;
                        Err(e)
                    }
                };
            }
            KeyClaim::Taken { request_sha256, .. } if request_sha256 != digest => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "IDEMPOTENCY_KEY_REUSED",
                    "Idempotency-Key was used with a different request; a retry must send the \
                     same request, and a new request a new key",
                ));
            }
            KeyClaim::Taken {
                sandbox_id: Some(id),
                ..
            } => {
                let id = warren_core::SandboxId::parse(&id)
                    .map_err(|e| ApiError::internal("stored sandbox id", e))?;
                let record = state.lifecycle.get_owned(&id, &caller.tenant).await?;
                if !record.status.is_live() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "IDEMPOTENCY_KEY_REUSED",
                        format!(
                            "the sandbox this Idempotency-Key created ({id}) has ended; use a new key"
                        ),
                    ));
                }
                return Ok((record, true));
            }
            KeyClaim::Taken {
                sandbox_id: None, ..
            } => {
                if tokio::time::Instant::now() > deadline {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "IDEMPOTENCY_KEY_IN_USE",
                        "a create with this Idempotency-Key is still running; retry later",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Marks the answer to a retried create (`Idempotent-Replayed: true`), as idempotent APIs do.
pub fn replayed_if(replayed: bool, mut res: axum::response::Response) -> axum::response::Response {
    if replayed {
        res.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    res
}
