//! Gives every request an id, sends it as `X-Request-ID`, and renders errors (ours and axum's own
//! rejections) into the JSON envelope carrying that id.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warren_wire::control::ErrorEnvelope;

use crate::error::ApiError;

#[derive(Clone)]
pub struct RequestId(pub String);

pub fn new_id() -> String {
    format!("req_{}", hex::encode(rand::random::<[u8; 8]>()))
}

pub async fn layer(mut req: Request, next: Next) -> Response {
    use tracing::Instrument;
    // HTTP/2 names the host in the URI's authority: every handler reads the Host header.
    if req.headers().get(header::HOST).is_none() {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let id = new_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    // One structured line per request: id, method, path (never headers or bodies, which carry
    // keys and code), status and duration. Everything logged while handling it carries the id.
    let span = tracing::info_span!("request", request_id = %id);
    let (method, path, version) = (
        req.method().clone(),
        req.uri().path().to_owned(),
        req.version(),
    );
    let started = std::time::Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    crate::metrics::count_request(status);
    span.in_scope(|| {
        let ms = started.elapsed().as_millis() as u64;
        // Nodes report every two seconds: their calls are logged only when debugging.
        if path.starts_with("/v1/internal/") && status < 400 {
            tracing::debug!(%method, %path, ?version, status, ms, "request");
        } else {
            tracing::info!(%method, %path, ?version, status, ms, "request");
        }
    });
    if res.status().is_client_error() || res.status().is_server_error() {
        res = render_error(res, &id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    if path.starts_with("/v1/internal/") || path == "/metrics" {
        return res;
    }
    res.map(|inner| Body::new(TimedBody { inner, started }))
}

/// An answer's body that reports, once sent (or abandoned), how long the server held its request:
/// a streamed answer (a command's output) ends long after its headers, and the time the server
/// spends per sandbox lifecycle is what `bench/burst.py` sets apart from the client's.
struct TimedBody {
    inner: Body,
    started: Instant,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        crate::metrics::observe_request(self.started.elapsed().as_secs_f64());
    }
}

async fn render_error(res: Response, id: &str) -> Response {
    let e2b = res.extensions().get::<crate::error::E2bErrors>().is_some();
    let err = match res.extensions().get::<ApiError>() {
        Some(e) => e.clone(),
        None => {
            let is_json = res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_json {
                return res;
            }
            // An axum rejection (bad JSON, unknown route, wrong method): keep its text, give it
            // the envelope. Body-shape errors become 400 so the Py SDK raises ValidationError.
            let status = res.status();
            let text = match axum::body::to_bytes(res.into_body(), 64 * 1024).await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(_) => String::new(),
            };
            let (status, code) = match status {
                StatusCode::UNPROCESSABLE_ENTITY
                | StatusCode::BAD_REQUEST
                | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                    (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
                }
                StatusCode::NOT_FOUND => (status, "RESOURCE_NOT_FOUND"),
                StatusCode::METHOD_NOT_ALLOWED => (status, "METHOD_NOT_ALLOWED"),
                StatusCode::PAYLOAD_TOO_LARGE => (status, "PAYLOAD_TOO_LARGE"),
                s if s.is_server_error() => (status, "INTERNAL_ERROR"),
                _ => (status, "INVALID_REQUEST"),
            };
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            };
            ApiError::new(status, code, message)
        }
    };
    let mut out = if e2b {
        let body = serde_json::json!({ "code": err.status.as_u16(), "message": err.message });
        (err.status, axum::Json(body)).into_response()
    } else {
        let body = ErrorEnvelope::new(err.code, &err.message, id, err.details.clone());
        (err.status, axum::Json(body)).into_response()
    };
    if err.status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(s) = err.details.get("retry_after_seconds") {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                out.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
    }
    out
}
