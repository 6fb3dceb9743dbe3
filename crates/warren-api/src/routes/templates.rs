use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use warren_store::TemplateRecord;
use warren_wire::control::{ListPage, Template, TemplateResources};

use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::request_id::RequestId;
use crate::state::AppState;

fn to_wire(state: &AppState, t: &TemplateRecord, rid: Option<&RequestId>) -> Template {
    Template {
        id: t.id.clone(),
        object: "template".into(),
        name: t.name.clone(),
        display_name: t.display_name.clone(),
        description: t.description.clone(),
        category: t.category.clone(),
        language: t.language.clone(),
        default_resources: TemplateResources {
            vcpu: t.resources.vcpu,
            memory_mb: t.resources.memory_mb,
            disk_gb: t.resources.disk_mb.div_ceil(1024),
        },
        features: vec![
            "code_execution".into(),
            "file_operations".into(),
            "commands".into(),
        ],
        tags: vec![],
        // Built-in templates are usable before their first build (creation builds them); built
        // ones once their build succeeded.
        is_active: match t.tenant {
            None => t.status != warren_store::TemplateStatus::Failed,
            Some(_) => t.status == warren_store::TemplateStatus::Active,
        },
        is_public: t.is_public,
        status: t.status.as_str().to_owned(),
        organization_id: None,
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        isolation: state.cluster.default_tier().to_string(),
        error_message: t.error_message.clone(),
        build_id: t.tenant.as_ref().map(|_| t.id.clone()),
        request_id: rid.map(|r| r.0.clone()),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    category: Option<String>,
    language: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListPage<Template>>> {
    let matches = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    let data = state
        .store
        .list_templates(&caller.tenant)
        .await?
        .iter()
        .filter(|t| matches(&q.category, &t.category) && matches(&q.language, &t.language))
        .map(|t| to_wire(&state, t, None))
        .collect();
    Ok(Json(ListPage {
        object: "list".into(),
        data,
        has_more: false,
        next_cursor: None,
        url: "/v1/templates".into(),
        request_id: Some(rid.0),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(name): Path<String>,
) -> ApiResult<Json<Template>> {
    let t = state
        .store
        .find_template(&name, &caller.tenant)
        .await?
        .ok_or_else(|| ApiError::template_not_found(&name))?;
    Ok(Json(to_wire(&state, &t, Some(&rid))))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = state
        .store
        .find_template(&id, &caller.tenant)
        .await?
        .ok_or_else(|| ApiError::template_not_found(&id))?;
    if t.is_public || t.tenant.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("template {} is built in and cannot be deleted", t.name),
        ));
    }
    state.store.delete_template(&t.id).await?;
    Ok(Json(
        json!({ "id": t.id, "name": t.name, "deleted": true, "message": "Template deleted", "request_id": rid.0 }),
    ))
}
