//! E2B's `/secrets`: the same tenant secret store as `/v1/secrets`, as E2B's SDKs call it
//! (`Secret.create/list/get/update/delete`). A secret made here has no hosts of its own: a
//! sandbox's `network.rules` name it (`${e2b.secrets.NAME}`) in the headers set for a host.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use warren_store::SecretRecord;
use warren_wire::e2b::{NewSecret, Secret, SecretUpdate};

use super::sandboxes::json_body;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::query::ApiQuery;
use crate::state::AppState;

fn shown(rec: &SecretRecord) -> Secret {
    Secret {
        secret_id: rec.id.clone(),
        name: rec.name.clone(),
        current_version: rec.version,
        metadata: serde_json::from_str(&rec.metadata).unwrap_or_default(),
        created_at: crate::clock::rfc3339(rec.created_at),
        updated_at: crate::clock::rfc3339(rec.updated_at),
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Secret>)> {
    let body: NewSecret = json_body(&body)?;
    let rec = state
        .lifecycle
        .vault()
        .create(
            &caller.tenant,
            &body.name,
            &body.value,
            &body.metadata.unwrap_or_default(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(shown(&rec))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// A page of the tenant's secrets by name; `x-next-token` names the next page.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let all = state.lifecycle.vault().records(&caller.tenant).await?;
    Ok(super::sandboxes::page_of(
        &all,
        q.next_token.as_deref(),
        q.limit,
        shown,
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> ApiResult<Json<Secret>> {
    let rec = state
        .lifecycle
        .vault()
        .find(&caller.tenant, &reference)
        .await?;
    Ok(Json(shown(&rec)))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Secret>> {
    let body: SecretUpdate = json_body(&body)?;
    let rec = state
        .lifecycle
        .vault()
        .update(
            &caller.tenant,
            &reference,
            &body.value,
            body.metadata.as_ref(),
        )
        .await?;
    Ok(Json(shown(&rec)))
}

/// Deletes a secret. Sandboxes already given it keep it until their network is next set.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> ApiResult<Response> {
    let vault = state.lifecycle.vault();
    let rec = vault.find(&caller.tenant, &reference).await?;
    vault.delete(&caller.tenant, &rec.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
