//! Warren's MCP server: the tools AI agents know from the official `hopx-mcp`, served over stdio
//! by `warren mcp` and over streamable HTTP at `/mcp` on the control plane. The tools are a
//! client of Warren's public HTTP API (see `api`), so an agent gets what its API key allows and
//! no more.

pub mod api;
mod tools;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;

pub use tools::WarrenMcp;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP session failed to start: {0}")]
    Start(String),
    #[error("MCP session ended with an error: {0}")]
    Run(String),
}

/// The API key a request carries, read as the control plane's auth reads it (`auth.rs`):
/// `X-API-Key`, else `Authorization: Bearer` — so the tools act with the key that was checked.
pub fn request_key(headers: &http::HeaderMap) -> Option<String> {
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    api_key
        .map(str::trim)
        .or(bearer.map(str::trim))
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// Serves MCP on this process's stdin/stdout until the client closes it, calling the Warren
/// server at `url` through `http` with `key`.
pub async fn serve_stdio(http: reqwest::Client, url: &str, key: String) -> Result<(), McpError> {
    let server = WarrenMcp::new(Arc::new(api::Api::new(http, url)), Some(key));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map(|_| ())
        .map_err(|e| McpError::Run(e.to_string()))
}

/// The streamable HTTP service for `/mcp`: its tools hand their API calls to the control plane's
/// own router (`dispatch`) with the API key of each request, which the caller's middleware has
/// checked already.
pub fn http_service(
    dispatch: api::Dispatch,
) -> StreamableHttpService<WarrenMcp, LocalSessionManager> {
    let api = Arc::new(api::Api::in_process(dispatch));
    // Every request carries an API key, so the Host check against DNS rebinding (meant for
    // unauthenticated local servers) would only refuse the server's own public names.
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(WarrenMcp::new(api.clone(), None)),
        Default::default(),
        config,
    )
}
