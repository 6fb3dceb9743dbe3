//! Control-plane routes, one module per resource.

pub mod admin;
pub mod builds;
pub mod health;
pub mod sandboxes;
pub mod templates;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use crate::state::{AppState, PublicMode};

pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::kill),
        )
        .route("/v1/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/v1/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/v1/sandboxes/{id}/timeout", put(sandboxes::set_timeout))
        .route(
            "/v1/sandboxes/{id}/token/refresh",
            post(sandboxes::refresh_token),
        )
        .route(
            "/v1/admin/keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route(
            "/v1/admin/keys/{id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route("/v1/admin/keys/{id}/rotate", post(admin::rotate_key))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/templates/files/upload-link", post(builds::upload_link))
        .route("/v1/templates/files/upload/{token}", put(builds::upload))
        .route("/v1/templates/build", post(builds::build))
        .route("/v1/templates/build/{id}/status", get(builds::status))
        .route("/v1/templates/build/{id}/logs", get(builds::logs))
        .route("/v1/templates", get(templates::list))
        .route(
            "/v1/templates/{name_or_id}",
            get(templates::get).delete(templates::delete),
        );
    let routed = match state.public {
        PublicMode::Wildcard { .. } => api.layer(middleware::from_fn_with_state(
            state.clone(),
            wildcard_router,
        )),
        PublicMode::Local { .. } => api,
    };
    routed
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::audit::control_plane,
        ))
        .layer(middleware::from_fn(crate::request_id::layer))
        .with_state(state)
}

/// In wildcard mode, requests for `{port}-{id}.{domain}` belong to a sandbox, not to the API.
async fn wildcard_router(
    State(state): State<AppState>,
    req: Request,
    next: middleware::Next,
) -> Response {
    if let PublicMode::Wildcard { domain, .. } = &state.public {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if let Some((port, id)) = crate::proxy::parse_wildcard_host(host, domain) {
            return if port == crate::proxy::AGENT_PORT {
                crate::proxy::to_agent(state.clone(), id, req).await
            } else {
                crate::proxy::to_sandbox_port(state.clone(), id, port, req).await
            };
        }
    }
    next.run(req).await
}
