//! `/console`: the web console (`warren-console`'s embedded files) and the one route it needs
//! beyond the public API, its terminal's WebSocket. Everything else the console does is a plain
//! API or agent call made by the browser with the signed-in key, so it has no rights of its own.

use axum::extract::{Path, Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    SEC_WEBSOCKET_PROTOCOL, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use axum::Router;
use warren_core::SandboxId;

use crate::error::ApiError;
use crate::state::AppState;

/// The subprotocol the console offers and the answer names; the token rides as a second one
/// (`warren.token.<token>`), because a browser cannot set headers on a WebSocket and a URL
/// would put the token in history and access logs.
const PROTOCOL: &str = "warren.console";
const TOKEN_PROTOCOL: &str = "warren.token.";

/// The page loads only its own files and talks only to this origin (HTTP and WebSocket).
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
    style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { file("") }))
        // `any`: over HTTP/2 a browser opens a WebSocket with an extended CONNECT (RFC 8441).
        .route("/console/terminal/{id}", any(terminal))
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>| async move { file(&path) }),
        )
}

/// An embedded file; any other path outside `assets/` is the page (its routes are hash routes,
/// but a reload of a mistyped path should still land on the console).
fn file(path: &str) -> Response {
    let found = warren_console::asset(path).or_else(|| {
        (!path.starts_with("assets/"))
            .then(|| warren_console::asset(""))
            .flatten()
    });
    let Some(asset) = found else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            format!("the console has no file {path}"),
        )
        .into_response();
    };
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut res = asset.body.into_owned().into_response();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&asset.content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// The sandbox's `/terminal`, for a browser: the sandbox token offered as a subprotocol becomes
/// the usual bearer token, and the request goes the way of every sandbox request (the proxy
/// checks the token, which only the sandbox's owner can have been given).
async fn terminal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut req: Request,
) -> Response {
    // Over HTTP/2 the WebSocket is a CONNECT, answered 200 (`warren_node::send_over` joins both).
    let over_http2 = req.method() == Method::CONNECT;
    if !over_http2 && req.method() != Method::GET {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "open the terminal with a WebSocket (GET, or CONNECT over HTTP/2)",
        )
        .into_response();
    }
    let Ok(id) = SandboxId::parse(&id) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            "no such sandbox",
        )
        .into_response();
    };
    let token = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL))
        .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
    let Some(bearer) = token else {
        return ApiError::unauthorized(format!(
            "offer the sandbox's token as the WebSocket subprotocol {TOKEN_PROTOCOL}<token>"
        ))
        .into_response();
    };
    let headers = req.headers_mut();
    headers.remove(SEC_WEBSOCKET_PROTOCOL);
    headers.insert(AUTHORIZATION, bearer);
    warren_node::set_e2b_target(headers, &id, warren_node::AGENT_PORT);
    *req.uri_mut() = Uri::from_static("/terminal");
    let mut res = super::to_sandbox(&state, warren_node::AGENT_PORT, id, req).await;
    let accepted = match res.status() {
        StatusCode::SWITCHING_PROTOCOLS => true,
        StatusCode::OK => over_http2,
        _ => false,
    };
    if accepted {
        res.headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(PROTOCOL));
    }
    res
}
