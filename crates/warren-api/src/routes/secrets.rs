//! `/v1/secrets` (Warren extension): the tenant's brokered secrets. Values are write-only: no
//! answer, log line or audit record carries one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use warren_wire::control::{NewSecret, SecretInfo, SecretList};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::secrets::SecretError;
use crate::state::AppState;

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Invalid(why) => ApiError::bad_request(why),
            SecretError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string())
            }
            SecretError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", e.to_string())
            }
            e => ApiError::internal("secret store", e),
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewSecret>,
) -> ApiResult<(StatusCode, Json<SecretInfo>)> {
    let info = state.lifecycle.vault().put(&caller.tenant, &body).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<SecretList>> {
    let secrets = state.lifecycle.vault().list(&caller.tenant).await?;
    Ok(Json(SecretList { secrets }))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .lifecycle
        .vault()
        .delete(&caller.tenant, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
