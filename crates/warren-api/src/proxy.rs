//! The host side of every sandbox's agent: checks the sandbox's JWT, then forwards the request to
//! the agent's unix socket. Nothing reaches a sandbox without passing here, and the agent itself
//! never sees a token it could leak.
//!
//! Local mode gives each sandbox its own listener (`http://127.0.0.1:<port>` is its
//! `public_host`). Wildcard mode routes `{port}-{id}.{domain}` on the main listener by Host header;
//! port 7777 is the agent, any other port is forwarded to that port inside the sandbox.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::UnixStream;
use warren_core::{SandboxId, SandboxStatus};

use crate::state::AppState;

pub const AGENT_PORT: u16 = 7777;

/// What the proxy needs to know about one live sandbox.
pub struct Target {
    pub agent_socket: PathBuf,
    pub netns: Option<PathBuf>,
    /// Address of the sandbox's ports inside `netns` (its loopback, or a VM guest).
    pub port_host: std::net::Ipv4Addr,
    pub tenant: String,
}

pub(crate) fn agent_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": message, "message": message, "code": code, "details": {}, "timestamp": crate::clock::rfc3339(crate::clock::now()) });
    (status, axum::Json(body)).into_response()
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// Handles one agent request for sandbox `id`.
pub async fn to_agent(state: AppState, id: SandboxId, req: Request) -> Response {
    let Some(target) = state.sandboxes.target(&id) else {
        return agent_error(
            StatusCode::NOT_FOUND,
            "SANDBOX_NOT_FOUND",
            "Sandbox not found or no longer running",
        );
    };
    // The health probe carries no secret and answers only "healthy": let it through unauthenticated
    // so clients that probe before they hold a token see a live sandbox.
    let is_health = req.uri().path() == "/health";
    let mut key_id = None;
    if !is_health {
        match bearer(&req) {
            Some(t) => match state.tokens.verified_key(t, id.as_str()) {
                Some(kid) => key_id = kid,
                None => {
                    return agent_error(
                        StatusCode::UNAUTHORIZED,
                        "TOKEN_INVALID",
                        "Invalid or expired sandbox token",
                    )
                }
            },
            // JS sends the API key when it has no token; 401 makes it refresh and retry (§9.21).
            None => {
                return agent_error(
                    StatusCode::UNAUTHORIZED,
                    "TOKEN_INVALID",
                    "Sandbox token required (Authorization: Bearer)",
                )
            }
        }
        if let Err(e) = state.rate.check(None, &target.tenant) {
            let mut res = agent_error(e.status, e.code, &e.message);
            if let Some(s) = e.details.get("retry_after_seconds") {
                if let Ok(v) = header::HeaderValue::from_str(&s.to_string()) {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            return res;
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return agent_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!(
                "request body of {} bytes exceeds this server's limit of {} bytes",
                declared.unwrap_or(0),
                state.max_body_bytes
            ),
        );
    }
    // Bodies without a declared length are cut off at the same limit as they stream.
    let req = {
        let limit = usize::try_from(state.max_body_bytes).unwrap_or(usize::MAX);
        let (parts, body) = req.into_parts();
        Request::from_parts(parts, Body::new(http_body_util::Limited::new(body, limit)))
    };
    if state.sandboxes.status_of(&id) == Some(SandboxStatus::Paused) {
        return agent_error(
            StatusCode::CONFLICT,
            "SANDBOX_STOPPED",
            "Sandbox is paused; resume it first",
        );
    }
    let Some(action) = crate::audit::agent_action(req.method(), req.uri().path()) else {
        return forward_unix(&target.agent_socket, req).await;
    };
    // Audited: hash the input as it streams through, record the outcome.
    let started = std::time::Instant::now();
    let digest = crate::audit::BodyDigest::default();
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, digest.wrap(body));
    let mut res = if crate::webhooks::Dispatcher::handles(&req) {
        state
            .webhooks
            .accept(id.clone(), target.agent_socket.clone(), req)
            .await
    } else {
        forward_unix(&target.agent_socket, req).await
    };
    let outcome = if matches!(action, "execute" | "commands.run") && res.status().is_success() {
        let (r, o) = crate::audit::run_outcome(res).await;
        res = r;
        o
    } else {
        crate::audit::status_outcome(res.status())
    };
    let (input_bytes, input_sha256) = digest.finish();
    state
        .audit
        .record(warren_store::AuditEvent {
            at: crate::audit::now_ms(),
            tenant: target.tenant.clone(),
            key_id,
            sandbox_id: Some(id.to_string()),
            action: action.to_owned(),
            input_bytes,
            input_sha256,
            outcome,
            status_code: Some(i64::from(res.status().as_u16())),
            duration_ms: started.elapsed().as_millis() as i64,
            ..Default::default()
        })
        .await;
    res
}

/// Sends one request over a fresh HTTP/1 connection on `io` and returns the upstream response.
/// `what` names the upstream in error messages. A WebSocket upgrade (the agent's streams and
/// terminals, or an app inside the sandbox) is joined end to end once both sides switched, and
/// then copied both ways; TCP flow control gives back-pressure in each direction.
async fn send_over<IO>(io: IO, mut req: Request, what: &str) -> Response
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client_upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => {
            return agent_error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL_ERROR",
                &format!("{what} handshake failed: {e}"),
            )
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut res = match sender.send_request(req).await {
        Ok(res) => res,
        Err(e) => {
            return agent_error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL_ERROR",
                &format!("{what} request failed: {e}"),
            )
        }
    };
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client)) = (res.status(), client_upgrade) {
        let upstream = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = (client.await, upstream.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(upstream),
                )
                .await;
            }
        });
    }
    res.map(Body::new)
}

fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
        && req.headers().contains_key(header::UPGRADE)
}

pub(crate) async fn forward_unix(socket: &std::path::Path, mut req: Request) -> Response {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(socket = %socket.display(), error = %e, "agent unreachable");
            return agent_error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL_ERROR",
                "Sandbox agent is not reachable",
            );
        }
    };
    // Strip what the agent must never see: the caller's credentials.
    req.headers_mut().remove(header::AUTHORIZATION);
    req.headers_mut().remove("x-api-key");
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    parts
        .headers
        .insert(header::HOST, header::HeaderValue::from_static("agent"));
    send_over(stream, Request::from_parts(parts, body), "agent").await
}

/// Splits a wildcard host `{port}-{id}.{domain}` into port and sandbox id.
pub fn parse_wildcard_host(host: &str, domain: &str) -> Option<(u16, SandboxId)> {
    let host = host.split(':').next()?;
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (port, id) = label.split_once('-')?;
    Some((port.parse().ok()?, SandboxId::parse(id).ok()?))
}

/// Wildcard mode: a request for any port other than the agent's goes to that port inside the
/// sandbox (preview URLs). The connection is opened from inside the sandbox's network namespace.
pub async fn to_sandbox_port(state: AppState, id: SandboxId, port: u16, req: Request) -> Response {
    let Some(target) = state.sandboxes.target(&id) else {
        return agent_error(
            StatusCode::NOT_FOUND,
            "SANDBOX_NOT_FOUND",
            "Sandbox not found or no longer running",
        );
    };
    let Some(netns) = target.netns.clone() else {
        return agent_error(
            StatusCode::BAD_GATEWAY,
            "INTERNAL_ERROR",
            "Sandbox has no network namespace",
        );
    };
    let host = target.port_host;
    let stream =
        match tokio::task::spawn_blocking(move || connect_in_netns(&netns, host, port)).await {
            Ok(Ok(s)) => s,
            _ => {
                return agent_error(
                    StatusCode::BAD_GATEWAY,
                    "INTERNAL_ERROR",
                    &format!("nothing listens on port {port} in the sandbox"),
                )
            }
        };
    send_over(stream, req, &format!("port {port}")).await
}

/// Connects to `host:port` inside the sandbox's network namespace.
fn connect_in_netns(
    netns: &std::path::Path,
    host: std::net::Ipv4Addr,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let std_stream = warren_runtime::host::network::in_netns(netns, move || {
        std::net::TcpStream::connect((host, port))
    })?;
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}

/// Serves one sandbox's local-mode listener until the returned handle is aborted.
pub fn spawn_local_listener(
    state: AppState,
    id: SandboxId,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let tls = state.tls.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let state = state.clone();
        let id = id.clone();
        async move { to_agent(state, id, req).await }
    });
    tokio::spawn(async move {
        match tls {
            Some(acceptor) => {
                if let Ok(l) = crate::tls::TlsListener::new(listener, acceptor) {
                    let _ = axum::serve(l, app).await;
                }
            }
            None => {
                let _ = axum::serve(listener, app).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_name_port_and_sandbox() {
        let (port, id) = parse_wildcard_host(
            "7777-abcdefghijklmnopqr.sb.example.com:443",
            "sb.example.com",
        )
        .expect("parse");
        assert_eq!(port, 7777);
        assert_eq!(id.as_str(), "abcdefghijklmnopqr");
        assert!(
            parse_wildcard_host("7777-abcdefghijklmnopqr.evil.com", "sb.example.com").is_none()
        );
        assert!(
            parse_wildcard_host("x-abcdefghijklmnopqr.sb.example.com", "sb.example.com").is_none()
        );
        assert!(parse_wildcard_host("7777-../etc.sb.example.com", "sb.example.com").is_none());
    }
}
