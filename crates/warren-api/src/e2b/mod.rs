//! The E2B control-plane API on the same server and the same sandboxes as the Hopx API, so that
//! the official `e2b` and `e2b-code-interpreter` SDKs work unmodified (`E2B_API_URL` pointed
//! here, a Warren key as `E2B_API_KEY`, sent as `X-API-KEY`). Keys, tenancy, quotas, rate limits
//! and audit are the Hopx API's own (`Caller`, `Lifecycle`, the audited routes). The sandboxes'
//! side of the protocol (envd, the interpreter) is routed by `routes::sandbox_router` to the
//! node's proxy and served by the agent.

mod sandboxes;
mod secrets;
mod snapshots;
mod templates;
mod volumes;

use axum::middleware::{from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::audit::ControlAction as A;
use crate::error::E2bErrors;
use crate::state::AppState;

/// The version of envd the agent's E2B API matches: the SDKs enable features by it.
pub const ENVD_VERSION: &str = "0.6.4";

async fn mark(mut res: Response) -> Response {
    res.extensions_mut().insert(E2bErrors);
    res
}

pub fn routes(state: &AppState) -> Router<AppState> {
    let audit =
        |action: A| from_fn_with_state((state.clone(), action), crate::routes::audited::record);
    Router::new()
        .route(
            "/sandboxes",
            post(sandboxes::create)
                .layer(audit(A::SandboxCreate))
                .get(sandboxes::list_v1),
        )
        .route(
            "/v2/sandboxes",
            post(sandboxes::create)
                .layer(audit(A::SandboxCreate))
                .get(sandboxes::list),
        )
        .route(
            "/sandboxes/{id}",
            delete(sandboxes::kill)
                .layer(audit(A::SandboxDelete))
                .get(sandboxes::get),
        )
        .route(
            "/sandboxes/{id}/timeout",
            post(sandboxes::set_timeout).layer(audit(A::SandboxTimeout)),
        )
        .route(
            "/sandboxes/{id}/refreshes",
            post(sandboxes::refresh).layer(audit(A::SandboxTimeout)),
        )
        .route(
            "/sandboxes/{id}/connect",
            post(sandboxes::connect).layer(audit(A::SandboxResume)),
        )
        .route(
            "/v2/sandboxes/{id}/connect",
            post(sandboxes::connect).layer(audit(A::SandboxResume)),
        )
        .route(
            "/sandboxes/{id}/pause",
            post(sandboxes::pause).layer(audit(A::SandboxPause)),
        )
        .route(
            "/sandboxes/{id}/resume",
            post(sandboxes::resume).layer(audit(A::SandboxResume)),
        )
        .route("/sandboxes/{id}/metrics", get(sandboxes::metrics))
        .route("/sandboxes/{id}/logs", get(sandboxes::logs))
        .route("/v2/sandboxes/{id}/logs", get(sandboxes::logs))
        .route(
            "/sandboxes/{id}/snapshots",
            post(snapshots::create).layer(audit(A::SandboxSnapshot)),
        )
        .route(
            "/sandboxes/{id}/fork",
            post(snapshots::fork).layer(audit(A::SandboxSnapshot)),
        )
        .route("/snapshots", get(snapshots::list))
        .route(
            "/templates/{id}",
            delete(snapshots::delete).layer(audit(A::SnapshotDelete)),
        )
        .route(
            "/sandboxes/{id}/network",
            put(sandboxes::set_network).layer(audit(A::SandboxNetwork)),
        )
        .route(
            "/v3/templates",
            post(templates::request).layer(audit(A::TemplateBuild)),
        )
        .route(
            "/templates/{id}/files/{hash}",
            get(templates::file_upload).layer(audit(A::TemplateUploadLink)),
        )
        .route(
            "/v2/templates/{id}/builds/{build}",
            post(templates::trigger).layer(audit(A::TemplateBuild)),
        )
        .route(
            "/templates/{id}/builds/{build}/status",
            get(templates::status),
        )
        .route("/templates/aliases/{alias}", get(templates::alias))
        .route(
            "/volumes",
            post(volumes::create)
                .layer(audit(A::VolumeCreate))
                .get(volumes::list),
        )
        .route(
            "/volumes/{id}",
            // The same delete as Warren's `/v1/volumes/{id}` (204 / 404).
            delete(crate::routes::volumes::delete)
                .layer(audit(A::VolumeDelete))
                .get(volumes::get),
        )
        .route(
            "/volumecontent/{id}/path",
            get(volumes::stat)
                .patch(volumes::set_metadata)
                .delete(volumes::remove),
        )
        .route(
            "/volumecontent/{id}/dir",
            get(volumes::list_dir).post(volumes::make_dir),
        )
        .route(
            "/volumecontent/{id}/file",
            get(volumes::read_file).put(volumes::write_file),
        )
        .route(
            "/secrets",
            post(secrets::create)
                .layer(audit(A::SecretPut))
                .get(secrets::list),
        )
        .route(
            "/secrets/{id}",
            post(secrets::update)
                .layer(audit(A::SecretPut))
                .merge(delete(secrets::delete).layer(audit(A::SecretDelete)))
                .merge(get(secrets::get)),
        )
        .layer(map_response(mark))
}
