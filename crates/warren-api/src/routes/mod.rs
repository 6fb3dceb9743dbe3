//! Control-plane routes, one module per resource. Every mutating route names its audited action
//! here, next to its path.

pub mod admin;
pub(crate) mod audited;
pub mod builds;
mod console;
pub mod health;
mod mcp;
mod metrics;
pub mod sandboxes;
mod secrets;
pub mod snapshots;
pub mod templates;
#[cfg(test)]
mod tests;
pub mod volumes;

use axum::extract::{Request, State};
use axum::middleware::{self, from_fn_with_state};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::audit::ControlAction as A;
use crate::cluster::routes as cluster;
use crate::state::{AppState, PublicMode};

pub fn app(state: AppState) -> Router {
    let api = front(api_routes(&state), &state);
    // `/mcp` sits behind the same front layers: on a sandbox's wildcard host, `/mcp` is the
    // sandbox's own path, not Warren's.
    // So is the console (its terminal is routed to a sandbox like any sandbox request).
    let with_mcp = mcp::route(api.clone(), state.clone())
        .merge(console::routes())
        .merge(api_routes(&state));
    front(with_mcp, &state)
}

/// The layers every request passes first: request ids, and routing of requests that belong to a
/// sandbox (which then never reach the API).
fn front(routes: Router<AppState>, state: &AppState) -> Router {
    routes
        .layer(middleware::from_fn_with_state(
            state.clone(),
            sandbox_router,
        ))
        .layer(middleware::from_fn(crate::request_id::layer))
        .with_state(state.clone())
}

fn api_routes(state: &AppState) -> Router<AppState> {
    let audit = |action: A| from_fn_with_state((state.clone(), action), audited::record);
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::scrape))
        .route("/openapi.json", get(crate::openapi::serve))
        .route(
            "/v1/sandboxes",
            post(sandboxes::create)
                .layer(audit(A::SandboxCreate))
                .get(sandboxes::list),
        )
        .route(
            "/v1/sandboxes/{id}",
            delete(sandboxes::kill)
                .layer(audit(A::SandboxDelete))
                .get(sandboxes::get),
        )
        .route("/v1/sandboxes/{id}/usage", get(sandboxes::usage))
        .route(
            "/v1/sandboxes/{id}/snapshot",
            post(snapshots::take).layer(audit(A::SandboxSnapshot)),
        )
        .route("/v1/snapshots", get(snapshots::list))
        .route(
            "/v1/snapshots/{id}",
            delete(snapshots::delete)
                .layer(audit(A::SnapshotDelete))
                .get(snapshots::get),
        )
        .route(
            "/v1/sandboxes/{id}/pause",
            post(sandboxes::pause).layer(audit(A::SandboxPause)),
        )
        .route(
            "/v1/sandboxes/{id}/resume",
            post(sandboxes::resume).layer(audit(A::SandboxResume)),
        )
        // The vendor spec's stop and start ("stop a running sandbox", "start a stopped one"):
        // Warren's pause and resume, which keep memory as well as files.
        .route(
            "/v1/sandboxes/{id}/stop",
            post(sandboxes::pause).layer(audit(A::SandboxStop)),
        )
        .route(
            "/v1/sandboxes/{id}/start",
            post(sandboxes::resume).layer(audit(A::SandboxStart)),
        )
        .route(
            "/v1/sandboxes/{id}/timeout",
            put(sandboxes::set_timeout).layer(audit(A::SandboxTimeout)),
        )
        .route(
            "/v1/secrets",
            post(secrets::create)
                .layer(audit(A::SecretPut))
                .get(secrets::list),
        )
        .route(
            "/v1/secrets/{name}",
            delete(secrets::delete).layer(audit(A::SecretDelete)),
        )
        .route(
            "/v1/sandboxes/{id}/network",
            put(sandboxes::set_network)
                .layer(audit(A::SandboxNetwork))
                .get(sandboxes::network),
        )
        .route(
            "/v1/sandboxes/{id}/token/refresh",
            post(sandboxes::refresh_token).layer(audit(A::SandboxTokenRefresh)),
        )
        .route(
            "/v1/admin/keys",
            post(admin::create_key)
                .layer(audit(A::KeyCreate))
                .get(admin::list_keys),
        )
        .route(
            "/v1/admin/keys/{id}",
            delete(admin::revoke_key).layer(audit(A::KeyRevoke)),
        )
        .route(
            "/v1/admin/keys/{id}/rotate",
            post(admin::rotate_key).layer(audit(A::KeyRotate)),
        )
        .route("/v1/audit", get(admin::audit))
        .route("/v1/admin/nodes", get(cluster::list_nodes))
        .route(
            "/v1/admin/nodes/{id}/drain",
            post(cluster::drain).layer(audit(A::NodeDrain)),
        )
        .route(
            "/v1/admin/nodes/{id}/activate",
            post(cluster::activate).layer(audit(A::NodeActivate)),
        )
        .route("/v1/internal/nodes/join", post(cluster::join))
        .route("/v1/internal/nodes/heartbeat", post(cluster::heartbeat))
        .route("/v1/internal/nodes/audit", post(cluster::audit))
        .route("/v1/internal/layers/{key}", get(cluster::layer))
        .route(
            "/v1/templates/files/upload-link",
            post(builds::upload_link).layer(audit(A::TemplateUploadLink)),
        )
        // Streamed to disk by its handler (can be large); the build that uses it is audited.
        .route("/v1/templates/files/upload/{token}", put(builds::upload))
        .route(
            "/v1/templates/build",
            post(builds::build).layer(audit(A::TemplateBuild)),
        )
        .route("/v1/templates/build/{id}/status", get(builds::status))
        .route("/v1/templates/build/{id}/logs", get(builds::logs))
        .route(
            "/v1/volumes",
            post(volumes::create)
                .layer(audit(A::VolumeCreate))
                .get(volumes::list),
        )
        .route(
            "/v1/volumes/{id}",
            delete(volumes::delete)
                .layer(audit(A::VolumeDelete))
                .get(volumes::get),
        )
        .route(
            "/v1/volumes/{id}/clone",
            post(volumes::clone).layer(audit(A::VolumeClone)),
        )
        .route("/v1/templates", get(templates::list))
        .route(
            "/v1/templates/{name_or_id}",
            delete(templates::delete)
                .layer(audit(A::TemplateDelete))
                .get(templates::get),
        );
    api.merge(crate::e2b::routes(state))
}

/// Requests that belong to a sandbox rather than to the API: E2B's `E2b-Sandbox-Id` header
/// (with `E2b-Sandbox-Port`), and in wildcard mode a `{port}-{id}.{domain}` host.
async fn sandbox_router(
    State(state): State<AppState>,
    mut req: Request,
    next: middleware::Next,
) -> Response {
    if state.https {
        // URLs the sandbox side answers with (the desktop's live view) keep the client's scheme.
        req.headers_mut().insert(
            "x-forwarded-proto",
            axum::http::HeaderValue::from_static("https"),
        );
    }
    let (port, id) = match warren_node::e2b_target(req.headers()) {
        Some((port, Some(id))) => (port, id),
        Some((_, None)) => {
            return warren_node::agent_error(
                axum::http::StatusCode::NOT_FOUND,
                "SANDBOX_NOT_FOUND",
                "no such sandbox",
            )
        }
        None => {
            let PublicMode::Wildcard { domain, .. } = &state.public else {
                return match envd_call_without_routing(&state, &req) {
                    Some(id) => to_sandbox(&state, warren_node::E2B_ENVD_PORT, id, req).await,
                    None => next.run(req).await,
                };
            };
            match warren_node::parse_wildcard_host(warren_node::request_host(&req), domain) {
                Some(found) => found,
                None => return next.run(req).await,
            }
        }
    };
    to_sandbox(&state, port, id, req).await
}

/// Older E2B JS SDKs (2.8 and before) send envd's HTTP calls (`/files` and the like) in the
/// one-address setup without the `E2b-Sandbox-*` headers their Connect calls carry; the envd
/// access token they do send names the sandbox. Only envd's own paths are taken this way.
fn envd_call_without_routing(state: &AppState, req: &Request) -> Option<warren_core::SandboxId> {
    let path = req.uri().path();
    if !matches!(path, "/files" | "/envs" | "/metrics" | "/health") {
        return None;
    }
    let token = req.headers().get("x-access-token")?.to_str().ok()?;
    let id = state.tokens.verifier().sandbox_of(token)?;
    warren_core::SandboxId::parse(&id).ok()
}

/// Hands a request to port `port` of sandbox `id`: this machine's proxy, or the node that runs it.
/// The request must carry the routing (`E2b-Sandbox-*` headers or the sandbox's host) for a
/// joined node to find it again.
pub(crate) async fn to_sandbox(
    state: &AppState,
    port: u16,
    id: warren_core::SandboxId,
    req: Request,
) -> Response {
    let local = state.node.as_ref();
    if local.is_none_or(|n| n.state(&id).is_none()) {
        // On a joined node: relay it there.
        if let Ok(Some(rec)) = state.store.get_sandbox(&id).await {
            if let (Some(node), true) = (rec.node_id.as_deref(), rec.status.is_live()) {
                return state.cluster.relay(node, req).await;
            }
        }
    }
    match local {
        Some(node) => node.proxy().to_e2b_port(id, port, req).await,
        None => warren_node::agent_error(
            axum::http::StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            "no such sandbox",
        ),
    }
}
