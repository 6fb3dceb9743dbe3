//! One HTTP/1 exchange over an already-open stream (an agent's unix socket, a port inside a
//! sandbox), with WebSocket upgrades joined end to end (also a browser's WebSocket over HTTP/2,
//! RFC 8441), and the agent-style error body the clients parse.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::rt::TokioIo;
use time::format_description::well_known::Rfc3339;
use warren_wire::agent::AgentErrorBody;

/// An error in the agent's body shape (spec §2.4), for answers the node gives in the agent's name.
pub fn agent_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = AgentErrorBody {
        error: message.to_owned(),
        message: message.to_owned(),
        code: code.to_owned(),
        path: None,
        details: serde_json::Map::new(),
        timestamp: time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default(),
    };
    (status, axum::Json(body)).into_response()
}

/// Put in a request's extensions: kept until its exchange is over, i.e. its response body is
/// done or, for a WebSocket, the connection closed (what counts a sandbox as in use).
#[derive(Clone)]
pub struct KeepWhileOpen {
    _held: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl KeepWhileOpen {
    pub fn new(held: impl std::any::Any + Send + Sync) -> Self {
        Self {
            _held: std::sync::Arc::new(held),
        }
    }
}

/// Sends one request over a fresh HTTP/1 connection on `io` and returns the upstream response.
/// `what` names the upstream in error messages. A WebSocket upgrade (the agent's streams and
/// terminals, or an app inside the sandbox) is joined end to end once both sides switched, and
/// then copied both ways; TCP flow control gives back-pressure in each direction.
pub async fn send_over<IO>(io: IO, mut req: Request, what: &str) -> Response
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let extended_connect = is_extended_connect(&req);
    if extended_connect {
        as_http1_upgrade(&mut req);
    }
    let client_upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let keep = req.extensions_mut().remove::<KeepWhileOpen>();
    to_http1(&mut req);
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
        let keep = keep.clone();
        tokio::spawn(async move {
            let _open = keep;
            if let (Ok(client), Ok(upstream)) = (client.await, upstream.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(upstream),
                )
                .await;
            }
        });
        if extended_connect {
            // HTTP/2 accepts the stream with 200 and has no connection-level upgrade headers.
            *res.status_mut() = StatusCode::OK;
            for h in [
                header::CONNECTION,
                header::UPGRADE,
                header::SEC_WEBSOCKET_ACCEPT,
            ] {
                res.headers_mut().remove(h);
            }
        }
    }
    match keep {
        Some(keep) => res.map(|b| {
            use http_body_util::BodyExt;
            Body::new(b.map_frame(move |f| {
                let _ = &keep;
                f
            }))
        }),
        None => res.map(Body::new),
    }
}

/// A WebSocket opened over HTTP/2: a CONNECT naming a protocol (browsers use it wherever the
/// server announces extended CONNECT, as axum does on HTTP/2).
fn is_extended_connect(req: &Request) -> bool {
    req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some()
}

/// Turns an HTTP/2 WebSocket into the HTTP/1.1 upgrade upstreams speak; the client's stream
/// stays in the request's extensions and is joined once the upstream switched. The upstream's
/// handshake key is made up here: the client never sees its answer.
fn as_http1_upgrade(req: &mut Request) {
    *req.method_mut() = Method::GET;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let headers = req.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_KEY, v);
    }
    headers
        .entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(header::HeaderValue::from_static("13"));
}

/// Makes a request that may have come in over HTTP/2 fit for an HTTP/1.1 upstream: the version,
/// an origin-form target, and a Host header (HTTP/2 carries it in the URI's authority).
fn to_http1(req: &mut Request) {
    if req.headers().get(header::HOST).is_none() {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| header::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    if req.uri().authority().is_some() {
        let target = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse()
            .unwrap_or_default();
        *req.uri_mut() = target;
    }
    *req.version_mut() = axum::http::Version::HTTP_11;
}

/// The host a request names: its Host header, or over HTTP/2 its URI's authority.
pub fn request_host(req: &Request) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
        && req.headers().contains_key(header::UPGRADE)
}
