//! The desktop's live view in a browser. A browser cannot send `Authorization` when it opens a
//! link or a WebSocket, so under `/desktop/vnc/` the sandbox token may also come as an
//! `access_token` query parameter (the URLs the VNC calls answer carry it) or, after the first
//! page load, as a cookie scoped to the sandbox and to these paths. The token is taken off the
//! request before it reaches the agent, like every other credential.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use warren_core::SandboxId;

const PREFIX: &str = "/desktop/vnc/";
const QUERY_KEY: &str = "access_token";
/// VNC answers whose `url`/`websocket_url` (paths from the agent) are made absolute here.
const INFO_PATHS: &[&str] = &[
    "/desktop/vnc/start",
    "/desktop/vnc/status",
    "/desktop/vnc/info",
];
/// A VNC answer is a small JSON object.
const MAX_INFO_BYTES: usize = 64 * 1024;

fn cookie_name(id: &SandboxId) -> String {
    // Cookies are per host, not per port: in local mode every sandbox shares 127.0.0.1.
    format!("warren_vnc_{id}")
}

pub(super) fn is_vnc(req: &Request) -> bool {
    req.uri().path().starts_with(PREFIX)
}

fn query_token(req: &Request) -> Option<&str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
}

fn cookie_token<'a>(req: &'a Request, id: &SandboxId) -> Option<&'a str> {
    let name = cookie_name(id);
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
        .filter(|t| !t.is_empty())
}

/// The token a browser presents for a VNC path, if any.
pub(super) fn browser_token<'a>(req: &'a Request, id: &SandboxId) -> Option<&'a str> {
    if !is_vnc(req) {
        return None;
    }
    query_token(req).or_else(|| cookie_token(req, id))
}

fn without_token(req: &Request) -> String {
    let path = req.uri().path();
    let rest: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("access_token=") && *kv != QUERY_KEY)
        .collect();
    if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// Takes the browser's credentials off an admitted VNC request. A page opened with the token in
/// its URL is answered with a redirect to the same URL without it, setting the cookie the
/// viewer's files and WebSocket then present.
pub(super) fn admit_browser(mut req: Request, id: &SandboxId, https: bool) -> Admitted {
    if !is_vnc(&req) {
        return Admitted::Forward(req);
    }
    let from_query = query_token(&req).map(str::to_owned);
    let clean = without_token(&req);
    req.headers_mut().remove(header::COOKIE);
    let Some(token) = from_query else {
        return Admitted::Forward(req);
    };
    let is_upgrade = req.headers().contains_key(header::UPGRADE);
    if is_upgrade || req.method() != axum::http::Method::GET {
        if let Ok(uri) = clean.parse() {
            *req.uri_mut() = uri;
        }
        return Admitted::Forward(req);
    }
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!(
        "{}={token}; Path=/desktop/vnc; HttpOnly; SameSite=Lax{secure}",
        cookie_name(id)
    );
    let mut res = (StatusCode::SEE_OTHER, Body::empty()).into_response();
    if let (Ok(loc), Ok(c)) = (
        HeaderValue::from_str(&clean),
        HeaderValue::from_str(&cookie),
    ) {
        res.headers_mut().insert(header::LOCATION, loc);
        res.headers_mut().insert(header::SET_COOKIE, c);
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Admitted::Answer(res)
}

pub(super) enum Admitted {
    /// On to the agent, without the browser's credentials.
    Forward(Request),
    /// Answered here (the redirect that moves the token into the cookie).
    Answer(Response),
}

/// Where the answer's URLs must point: the sandbox's public address as the client used it, with
/// the token the client presented, for the VNC info calls.
pub(super) struct PublicUrls {
    origin: String,
    ws_origin: String,
    token: String,
}

impl PublicUrls {
    pub(super) fn for_request(req: &Request, token: Option<&str>, https: bool) -> Option<Self> {
        if !INFO_PATHS.contains(&req.uri().path()) {
            return None;
        }
        let host = crate::transport::request_host(req);
        if host.is_empty() {
            return None;
        }
        let forwarded_https = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let secure = https || forwarded_https || req.uri().scheme_str() == Some("https");
        let (http, ws) = if secure {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        Some(Self {
            origin: format!("{http}://{host}"),
            ws_origin: format!("{ws}://{host}"),
            token: token?.to_owned(),
        })
    }

    fn absolute(&self, origin: &str, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{origin}{path}{sep}{QUERY_KEY}={}", self.token)
    }

    /// Rewrites `url` and `websocket_url` of a successful JSON answer.
    pub(super) async fn apply(&self, res: Response) -> Response {
        if !res.status().is_success() {
            return res;
        }
        let (parts, body) = res.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_INFO_BYTES).await else {
            return crate::transport::agent_error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL_ERROR",
                "the agent's VNC answer could not be read",
            );
        };
        let mut parts = parts;
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Response::from_parts(parts, Body::from(bytes));
        };
        for (key, origin) in [("url", &self.origin), ("websocket_url", &self.ws_origin)] {
            if let Some(path) = v
                .get(key)
                .and_then(|p| p.as_str())
                .filter(|p| p.starts_with('/'))
            {
                let full = self.absolute(origin, path);
                v[key] = serde_json::Value::String(full);
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(v.to_string()))
    }
}
