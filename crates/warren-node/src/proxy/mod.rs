//! The host side of every sandbox's agent: asks the control plane's `Gate` whether the sandbox's
//! token is good and its owner within its rate, limits body sizes, refuses a paused sandbox,
//! records audited calls, then forwards the request through the sandbox's `AgentLink`. Nothing
//! reaches a sandbox without passing here, and the agent never sees a token it could leak.
//!
//! Local mode gives each sandbox its own listener (`http://127.0.0.1:<port>` is its
//! `public_host`). Wildcard mode routes `{port}-{id}.{domain}` on the control plane's listener by
//! Host header; port 7777 is the agent, any other port is forwarded to that port inside the
//! sandbox (preview URLs).

mod recording;
mod vnc;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use warren_core::SandboxId;

use crate::gate::{AgentAction, AgentCall, Gate, Refusal};
use crate::registry::{Registry, RunState, Target};
use crate::transport::{agent_error, send_over, KeepWhileOpen};

pub use recording::status_outcome;

/// Bodies up to this size are read before they are forwarded (see `answer`).
const SMALL_BODY: u64 = 1024 * 1024;

/// The agent's port in wildcard host names.
pub const AGENT_PORT: u16 = 7777;
/// E2B's envd port: the agent's E2B API.
pub const E2B_ENVD_PORT: u16 = 49983;
/// E2B's code-interpreter port.
pub const E2B_INTERPRETER_PORT: u16 = 49999;

/// Which API a request for a sandbox speaks: how its token is presented and where it goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Hopx,
    /// E2B: the token in `X-Access-Token` (or `E2B-Traffic-Access-Token`), the path under this
    /// prefix in the agent.
    E2b(&'static str),
}

#[derive(Clone)]
pub struct Proxy {
    registry: Arc<Registry>,
    gate: Arc<dyn Gate>,
    max_body_bytes: u64,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

/// The sandbox token as the E2B SDKs present it.
fn e2b_token(req: &Request) -> Option<&str> {
    ["x-access-token", "e2b-traffic-access-token"]
        .iter()
        .find_map(|h| req.headers().get(*h)?.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// envd names the acting user in `Authorization: Basic <user:>`; the agent gets the name alone
/// (the header itself is stripped with every credential).
fn e2b_user(req: &Request) -> Option<header::HeaderValue> {
    use base64::Engine;
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let name = text.split(':').next().filter(|n| !n.is_empty())?;
    header::HeaderValue::from_str(name).ok()
}

/// Moves an E2B request under its prefix in the agent, with the user it names.
fn into_agent_path(mut req: Request, prefix: &str) -> Request {
    let user = e2b_user(&req);
    let headers = req.headers_mut();
    headers.remove("x-warren-user");
    if let Some(u) = user {
        headers.insert("x-warren-user", u);
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    if let Ok(uri) = format!("{prefix}{pq}").parse() {
        *req.uri_mut() = uri;
    }
    req
}

/// The sandbox counts as in use until this request's exchange is over (`activity.rs`).
fn in_use_while_open(target: &Target, req: &mut Request) {
    let open = target.activity.in_use();
    req.extensions_mut().insert(KeepWhileOpen::new(open));
}

fn not_running() -> Response {
    agent_error(
        StatusCode::NOT_FOUND,
        "SANDBOX_NOT_FOUND",
        "Sandbox not found or no longer running",
    )
}

/// An error as each API's clients read it: Hopx's agent envelope, or E2B's `{code, message}`
/// (whose SDKs branch on the numeric code and on the message's wording).
fn refuse(dialect: Dialect, status: StatusCode, code: &str, message: &str) -> Response {
    match dialect {
        Dialect::Hopx => agent_error(status, code, message),
        Dialect::E2b(_) => (
            status,
            axum::Json(serde_json::json!({ "code": status.as_u16(), "message": message })),
        )
            .into_response(),
    }
}

/// E2B's proxy answers 502 "... was not found" for a sandbox that is gone; its SDKs then report
/// the sandbox as not running (rather than a missing file or process).
fn gone(dialect: Dialect, id: &SandboxId) -> Response {
    match dialect {
        Dialect::Hopx => not_running(),
        Dialect::E2b(_) => refuse(
            dialect,
            StatusCode::BAD_GATEWAY,
            "SANDBOX_NOT_FOUND",
            &format!("The sandbox {id} was not found"),
        ),
    }
}

impl Proxy {
    pub(crate) fn new(
        registry: Arc<Registry>,
        gate: Arc<dyn Gate>,
        max_body_bytes: u64,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        Self {
            registry,
            gate,
            max_body_bytes,
            tls,
        }
    }

    /// Who may call: the key id the token was obtained with, or the refusal. The health probe
    /// carries no secret and answers only "healthy", so it passes without a token: clients probe
    /// before they hold one.
    fn admit(
        &self,
        id: &SandboxId,
        target: &Target,
        req: &Request,
        dialect: Dialect,
    ) -> Result<Option<String>, Refusal> {
        if req.uri().path() == "/health" {
            return Ok(None);
        }
        let invalid = |message: &str| Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "TOKEN_INVALID",
            message: message.to_owned(),
            retry_after_seconds: None,
        };
        let presented = match dialect {
            Dialect::Hopx => bearer(req).or_else(|| vnc::browser_token(req, id)),
            Dialect::E2b(_) => e2b_token(req),
        };
        let key_id = match presented {
            Some(t) => self
                .gate
                .verify_token(id, t)
                .ok_or_else(|| invalid("Invalid or expired sandbox token"))?,
            // JS sends the API key when it has no token; 401 makes it refresh and retry (§9.21).
            None if dialect == Dialect::Hopx => {
                return Err(invalid("Sandbox token required (Authorization: Bearer)"))
            }
            None => return Err(invalid("Sandbox access token required (X-Access-Token)")),
        };
        self.gate.check_rate(&target.owner)?;
        Ok(key_id)
    }

    /// Whether sandbox `id` is paused and stays so: a paused one is resumed if the Gate lets its
    /// requests wake it. Call once the request counts as open (`in_use_while_open`): the state is
    /// read after that, so an idle pause racing the request sees it (`Node::pause_if_idle`).
    async fn paused_after_asking(&self, id: &SandboxId) -> bool {
        self.registry.target(id).map(|t| t.state) == Some(RunState::Paused)
            && !self.gate.resume_on_request(id).await
    }

    /// Handles one agent request for sandbox `id`. The answer carries an `X-Request-ID` (the SDKs
    /// put it in their errors) that the audit trail records too.
    pub async fn to_agent(&self, id: SandboxId, req: Request) -> Response {
        self.to_agent_as(id, req, Dialect::Hopx).await
    }

    /// A request for an E2B port of sandbox `id` (routed by the `E2b-Sandbox-Id` and
    /// `E2b-Sandbox-Port` headers or by a wildcard host): envd and the interpreter are the
    /// agent's E2B API; any other port is that port inside the sandbox.
    pub async fn to_e2b_port(&self, id: SandboxId, port: u16, req: Request) -> Response {
        match port {
            E2B_ENVD_PORT => self.to_agent_as(id, req, Dialect::E2b("/e2b/envd")).await,
            E2B_INTERPRETER_PORT => {
                self.to_agent_as(id, req, Dialect::E2b("/e2b/interpreter"))
                    .await
            }
            AGENT_PORT => self.to_agent(id, req).await,
            _ => self.to_sandbox_port(id, port, req).await,
        }
    }

    async fn to_agent_as(&self, id: SandboxId, req: Request, dialect: Dialect) -> Response {
        let request_id = format!("req_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut res = self.answer(id, req, &request_id, dialect).await;
        if let Ok(v) = header::HeaderValue::from_str(&request_id) {
            res.headers_mut().insert("x-request-id", v);
        }
        res
    }

    async fn answer(
        &self,
        id: SandboxId,
        req: Request,
        request_id: &str,
        dialect: Dialect,
    ) -> Response {
        let Some(target) = self.registry.target(&id) else {
            return gone(dialect, &id);
        };
        let key_id = match self.admit(&id, &target, &req, dialect) {
            Ok(k) => k,
            Err(r) => {
                let mut res = refuse(dialect, r.status, r.code, &r.message);
                if let Some(v) = r
                    .retry_after_seconds
                    .and_then(|s| header::HeaderValue::from_str(&s.to_string()).ok())
                {
                    res.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return res;
            }
        };
        let https = self.tls.is_some();
        let public_urls = match dialect {
            Dialect::Hopx => vnc::PublicUrls::for_request(
                &req,
                bearer(&req).or_else(|| vnc::browser_token(&req, &id)),
                https,
            ),
            Dialect::E2b(_) => None,
        };
        let req = match dialect {
            Dialect::Hopx => match vnc::admit_browser(req, &id, https) {
                vnc::Admitted::Forward(r) => r,
                vnc::Admitted::Answer(redirect) => return redirect,
            },
            Dialect::E2b(prefix) => into_agent_path(req, prefix),
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > self.max_body_bytes) {
            return refuse(
                dialect,
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                &format!(
                    "request body of {n} bytes exceeds this server's limit of {} bytes",
                    self.max_body_bytes
                ),
            );
        }
        // Bodies without a declared length are cut off at the same limit as they stream.
        let req = {
            let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
            let (parts, body) = req.into_parts();
            Request::from_parts(parts, Body::new(http_body_util::Limited::new(body, limit)))
        };
        // Small bodies (every JSON call) are read first and sent with their request in one go: an
        // agent that refuses a request before reading its body (a wrong Content-Type, say) and
        // closes the connection would otherwise fail the body's write, and the client would get
        // a 502 instead of the agent's 4xx.
        let (req, small) = match declared {
            Some(n) if n <= SMALL_BODY => {
                let (parts, body) = req.into_parts();
                match axum::body::to_bytes(body, SMALL_BODY as usize).await {
                    Ok(bytes) => (
                        Request::from_parts(parts, Body::from(bytes.clone())),
                        Some(bytes),
                    ),
                    Err(_) => {
                        return refuse(
                            dialect,
                            StatusCode::BAD_REQUEST,
                            "INVALID_REQUEST",
                            "the request body could not be read",
                        )
                    }
                }
            }
            _ => (req, None),
        };
        let mut req = req;
        in_use_while_open(&target, &mut req);
        if self.paused_after_asking(&id).await {
            return refuse(
                dialect,
                StatusCode::CONFLICT,
                "SANDBOX_STOPPED",
                "Sandbox is paused; resume it first",
            );
        }
        let Some(action) = AgentAction::of(req.method(), req.uri().path()) else {
            let res = target.agent.forward(req).await;
            return match public_urls {
                Some(urls) => urls.apply(res).await,
                None => res,
            };
        };
        // Audited: hash the input as it streams through, record the outcome.
        let started = Instant::now();
        let digest = recording::BodyDigest::default();
        let req = match small {
            // Already read: hashed at once, and still sent in one piece.
            Some(bytes) => {
                digest.add(&bytes);
                req
            }
            None => {
                let (parts, body) = req.into_parts();
                Request::from_parts(parts, digest.wrap(body))
            }
        };
        let mut res = if action == AgentAction::ExecuteAsync {
            self.gate
                .execute_async(id.clone(), target.agent.clone(), req)
                .await
        } else {
            target.agent.forward(req).await
        };
        let outcome = if action.reports_exit_code() && res.status().is_success() {
            let (r, o) = recording::run_outcome(res).await;
            res = r;
            o
        } else {
            status_outcome(res.status()).to_owned()
        };
        let (input_bytes, input_sha256) = digest.finish();
        self.gate
            .record(AgentCall {
                sandbox: id,
                owner: target.owner.clone(),
                key_id,
                action,
                input_bytes,
                input_sha256,
                outcome,
                status_code: res.status().as_u16(),
                duration: started.elapsed(),
                request_id: request_id.to_owned(),
            })
            .await;
        res
    }

    /// A request for any port other than the agent's goes to that port inside the sandbox
    /// (preview URLs, public like Hopx's). The connection is opened from inside the sandbox's
    /// network namespace.
    pub async fn to_sandbox_port(&self, id: SandboxId, port: u16, req: Request) -> Response {
        let Some(target) = self.registry.target(&id) else {
            return not_running();
        };
        let mut req = req;
        in_use_while_open(&target, &mut req);
        // An app served from a sandbox paused for idleness wakes with its next visitor.
        if self.paused_after_asking(&id).await {
            return agent_error(
                StatusCode::CONFLICT,
                "SANDBOX_STOPPED",
                "Sandbox is paused; resume it first",
            );
        }
        let (netns, host) = (target.netns.clone(), target.port_host);
        let dialled = tokio::task::spawn_blocking(move || {
            warren_runtime::host::network::in_netns(&netns, move || {
                std::net::TcpStream::connect((host, port))
            })
        })
        .await;
        let stream = match dialled {
            Ok(Ok(s)) => s
                .set_nonblocking(true)
                .and_then(|()| s.set_nodelay(true))
                .and_then(|()| tokio::net::TcpStream::from_std(s)),
            _ => Err(std::io::Error::other("connect failed")),
        };
        match stream {
            Ok(s) => send_over(s, req, &format!("port {port}")).await,
            Err(_) => agent_error(
                StatusCode::BAD_GATEWAY,
                "INTERNAL_ERROR",
                &format!("nothing listens on port {port} in the sandbox"),
            ),
        }
    }

    /// Wildcard mode: the answer for a request whose Host names a sandbox under `domain`, or the
    /// request back when it is for the control plane.
    pub async fn route_by_host(&self, domain: &str, req: Request) -> Result<Response, Request> {
        let host = crate::transport::request_host(&req);
        let Some((port, id)) = parse_wildcard_host(host, domain) else {
            return Err(req);
        };
        Ok(self.to_e2b_port(id, port, req).await)
    }

    /// Serves one sandbox's local-mode listener until the returned handle is aborted.
    pub(crate) fn serve_listener(
        &self,
        id: SandboxId,
        listener: tokio::net::TcpListener,
    ) -> tokio::task::JoinHandle<()> {
        let tls = self.tls.clone();
        let proxy = self.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let proxy = proxy.clone();
            let id = id.clone();
            async move { proxy.to_agent(id, req).await }
        });
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(l) = crate::tls_listener::TlsListener::new(listener, acceptor) {
                        let _ = axum::serve(l, app).await;
                    }
                }
                None => {
                    let _ = axum::serve(crate::tls_listener::no_delay(listener), app).await;
                }
            }
        })
    }
}

/// The routing headers of E2B clients that use one address for every sandbox.
const E2B_SANDBOX_ID: &str = "e2b-sandbox-id";
const E2B_SANDBOX_PORT: &str = "e2b-sandbox-port";

/// The sandbox and port an E2B client names in `E2b-Sandbox-Id` / `E2b-Sandbox-Port` (its
/// `E2B_SANDBOX_URL` mode: every sandbox behind one address). Without a port, envd's.
pub fn e2b_target(headers: &header::HeaderMap) -> Option<(u16, Option<SandboxId>)> {
    let id = headers.get(E2B_SANDBOX_ID)?.to_str().ok()?.trim();
    let port = match headers.get(E2B_SANDBOX_PORT) {
        Some(p) => p.to_str().ok()?.trim().parse().ok()?,
        None => E2B_ENVD_PORT,
    };
    Some((port, SandboxId::parse(id).ok()))
}

/// Names port `port` of sandbox `id` in a request's headers, as `e2b_target` reads them: how a
/// request made on a client's behalf (the console's terminal) is routed like an E2B client's.
pub fn set_e2b_target(headers: &mut header::HeaderMap, id: &SandboxId, port: u16) {
    if let Ok(v) = header::HeaderValue::from_str(id.as_str()) {
        headers.insert(E2B_SANDBOX_ID, v);
    }
    headers.insert(E2B_SANDBOX_PORT, header::HeaderValue::from(port));
}

/// Splits a wildcard host `{port}-{id}.{domain}` into port and sandbox id.
pub fn parse_wildcard_host(host: &str, domain: &str) -> Option<(u16, SandboxId)> {
    let host = host.split(':').next()?;
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (port, id) = label.split_once('-')?;
    Some((port.parse().ok()?, SandboxId::parse(id).ok()?))
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
