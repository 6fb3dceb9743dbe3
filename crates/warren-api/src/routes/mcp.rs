//! `/mcp`: Warren's MCP tools over streamable HTTP (see the `warren-mcp` crate). A request needs
//! an API key like any other; the tools then call this server's own router with that key, so
//! they act with exactly the caller's rights and are audited and rate-limited as such.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower::ServiceExt;

use crate::auth::Caller;

/// The largest answer the tools take from the router (a file read, a list).
const MAX_ANSWER: usize = 64 << 20;

/// The `/mcp` route; `api` is the rest of the control plane, which the tools call.
pub fn route(api: Router, state: crate::state::AppState) -> Router<crate::state::AppState> {
    let dispatch: warren_mcp::api::Dispatch = Arc::new(move |req: http::Request<Vec<u8>>| {
        let api = api.clone();
        Box::pin(async move {
            let req = req.map(Body::from);
            let answer = match api.oneshot(req).await {
                Ok(answer) => answer,
                Err(never) => match never {},
            };
            let (parts, body) = answer.into_parts();
            let body = axum::body::to_bytes(body, MAX_ANSWER)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_else(|e| {
                    format!("{{\"error\":\"unreadable answer: {e}\"}}").into_bytes()
                });
            http::Response::from_parts(parts, body)
        })
    });
    Router::new()
        .route_service("/mcp", warren_mcp::http_service(dispatch))
        .layer(axum::middleware::from_fn_with_state(state, require_key))
}

/// Refuses MCP requests without a valid API key (the `Caller` extractor's answer).
async fn require_key(_caller: Caller, req: Request, next: Next) -> Response {
    next.run(req).await
}
