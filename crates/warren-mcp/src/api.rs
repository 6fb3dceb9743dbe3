//! Warren's HTTP API as the tools call it, the way the official SDKs do: the control plane with
//! an API key, then a sandbox's agent with a sandbox token from the control plane. Going through
//! the public API (rather than into the server's internals) means the MCP tools get exactly the
//! tenancy, limits and audit trail of any other client.
//!
//! Two transports: over the network (`warren mcp`), reaching agents at their `public_host`; and
//! in-process (`/mcp` on the control plane), handing each request to the server's own router and
//! reaching agents through it by sandbox-routing headers, so that neither TLS nor public names
//! of the server need to work from inside it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

/// A failed call, shown to the MCP client as the tool's error result.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error status (its message, from the wire envelope).
    #[error("{message}")]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("cannot reach {what}: {detail}")]
    Transport { what: String, detail: String },
    /// A parameter the tool refuses before calling anything.
    #[error("{0}")]
    Invalid(String),
}

impl ApiError {
    /// The error as a tool result body: `error` always, with the server's status and code.
    pub fn to_json(&self) -> Value {
        match self {
            ApiError::Status {
                status,
                code,
                message,
            } => json!({"error": message, "status": status, "code": code}),
            other => json!({"error": other.to_string()}),
        }
    }

    pub fn not_found(&self) -> bool {
        matches!(self, ApiError::Status { status: 404, .. })
    }
}

/// One request to a sandbox's agent.
pub struct AgentCall<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub body: Option<Value>,
    /// Of the whole request.
    pub timeout: Duration,
}

impl<'a> AgentCall<'a> {
    pub fn get(path: &'a str) -> Self {
        Self::new(Method::GET, path, None)
    }

    pub fn new(method: Method, path: &'a str, body: Option<Value>) -> Self {
        Self {
            method,
            path,
            query: &[],
            body,
            timeout: Duration::from_secs(60),
        }
    }

    pub fn query(mut self, query: &'a [(&'a str, &'a str)]) -> Self {
        self.query = query;
        self
    }

    /// A run of `seconds` at most: the request waits that long and half a minute more.
    pub fn running_for(mut self, seconds: u64) -> Self {
        self.timeout = Duration::from_secs(seconds.saturating_add(30));
        self
    }
}

/// A sandbox's agent as last seen: where it answers and the token it takes.
#[derive(Clone)]
struct Agent {
    host: String,
    token: String,
}

/// Hands a request to the server's own router and returns its answer.
pub type Dispatch = Arc<
    dyn Fn(http::Request<Vec<u8>>) -> Pin<Box<dyn Future<Output = http::Response<Vec<u8>>> + Send>>
        + Send
        + Sync,
>;

enum Transport {
    /// The control plane's URL, without a trailing `/`.
    Network {
        http: reqwest::Client,
        base: String,
    },
    InProcess(Dispatch),
}

/// The port of the Hopx agent behind the sandbox-routing headers.
const AGENT_PORT: &str = "7777";

/// One HTTP exchange, whichever transport carries it.
struct Exchange<'a> {
    method: Method,
    /// Absolute over the network, a path (with query) in-process.
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<&'a Value>,
    timeout: Duration,
}

pub struct Api {
    transport: Transport,
    /// Agents by (API key, sandbox id): a token is only ever used with the key that fetched it.
    agents: Mutex<HashMap<(String, String), Agent>>,
}

impl Api {
    /// Over the network with `http`, to the control plane at `base_url`.
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self::with(Transport::Network {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// In-process, through `dispatch`.
    pub fn in_process(dispatch: Dispatch) -> Self {
        Self::with(Transport::InProcess(dispatch))
    }

    fn with(transport: Transport) -> Self {
        Self {
            transport,
            agents: Mutex::new(HashMap::new()),
        }
    }

    async fn exchange(&self, x: Exchange<'_>, what: &str) -> Result<Value, ApiError> {
        let transport = |detail: String| ApiError::Transport {
            what: what.to_owned(),
            detail,
        };
        let (status, text) = match &self.transport {
            Transport::Network { http, .. } => {
                let mut req = http.request(x.method, &x.url).timeout(x.timeout);
                for (name, value) in &x.headers {
                    req = req.header(*name, value);
                }
                if let Some(body) = x.body {
                    req = req.json(body);
                }
                let resp = req.send().await.map_err(|e| transport(e.to_string()))?;
                let status = resp.status().as_u16();
                (
                    status,
                    resp.text().await.map_err(|e| transport(e.to_string()))?,
                )
            }
            Transport::InProcess(dispatch) => {
                let mut req = http::Request::builder().method(x.method).uri(&x.url);
                for (name, value) in &x.headers {
                    req = req.header(*name, value);
                }
                let body = match x.body {
                    Some(b) => {
                        req = req.header("content-type", "application/json");
                        serde_json::to_vec(b).map_err(|e| transport(e.to_string()))?
                    }
                    None => Vec::new(),
                };
                let req = req.body(body).map_err(|e| transport(e.to_string()))?;
                let resp = tokio::time::timeout(x.timeout, dispatch(req))
                    .await
                    .map_err(|_| transport("timed out".into()))?;
                let status = resp.status().as_u16();
                (status, String::from_utf8_lossy(resp.body()).into_owned())
            }
        };
        parse(status, &text, what)
    }

    /// The control plane's URL of `path`.
    fn control_url(&self, path: &str) -> String {
        match &self.transport {
            Transport::Network { base, .. } => format!("{base}{path}"),
            Transport::InProcess(_) => path.to_owned(),
        }
    }

    /// A control-plane call with `key`; the answer's JSON (`{}` for an empty body).
    pub async fn control(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut headers = Vec::new();
        if !key.is_empty() {
            headers.push(("x-api-key", key.to_owned()));
        }
        let x = Exchange {
            method,
            url: self.control_url(path),
            headers,
            body: body.as_ref(),
            timeout: Duration::from_secs(120),
        };
        self.exchange(x, "the control plane").await
    }

    /// An agent call in sandbox `id`; `timeout` bounds the whole request. A 401 (an expired
    /// token) fetches a new token and tries once more, as the SDKs do.
    pub async fn agent(&self, key: &str, id: &str, call: AgentCall<'_>) -> Result<Value, ApiError> {
        check_id(id)?;
        let AgentCall {
            method,
            path,
            query,
            body,
            timeout,
        } = call;
        let path = with_query(path, query);
        let mut refresh = false;
        loop {
            let agent = self.agent_of(key, id, refresh).await?;
            let mut headers = vec![("authorization", format!("Bearer {}", agent.token))];
            let url = match &self.transport {
                Transport::Network { .. } => format!("{}{path}", agent.host),
                Transport::InProcess(_) => {
                    headers.push(("e2b-sandbox-id", id.to_owned()));
                    headers.push(("e2b-sandbox-port", AGENT_PORT.to_owned()));
                    path.clone()
                }
            };
            let x = Exchange {
                method: method.clone(),
                url,
                headers,
                body: body.as_ref(),
                timeout,
            };
            match self.exchange(x, "the sandbox's agent").await {
                Err(ApiError::Status { status: 401, .. }) if !refresh => refresh = true,
                other => return other,
            }
        }
    }

    /// The sandbox's `public_host` (for preview URLs), straight from the control plane.
    pub async fn public_host(&self, key: &str, id: &str) -> Result<String, ApiError> {
        Ok(self.agent_of(key, id, false).await?.host)
    }

    async fn agent_of(&self, key: &str, id: &str, refresh: bool) -> Result<Agent, ApiError> {
        let cache_key = (key.to_owned(), id.to_owned());
        if !refresh {
            if let Some(a) = self.cached().get(&cache_key) {
                return Ok(a.clone());
            }
        }
        let info = self
            .control(key, Method::GET, &format!("/v1/sandboxes/{id}"), None)
            .await?;
        let host = info["public_host"]
            .as_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "sandbox {id} has no agent address (is it running?)"
                ))
            })?
            .trim_end_matches('/')
            .to_owned();
        let token = self
            .control(
                key,
                Method::POST,
                &format!("/v1/sandboxes/{id}/token/refresh"),
                None,
            )
            .await?;
        let token = token["auth_token"]
            .as_str()
            .ok_or_else(|| ApiError::Invalid(format!("no token for sandbox {id}")))?
            .to_owned();
        let agent = Agent { host, token };
        self.cached().insert(cache_key, agent.clone());
        Ok(agent)
    }

    /// Forgets a sandbox's agent (it was deleted).
    pub fn forget(&self, key: &str, id: &str) {
        self.cached().remove(&(key.to_owned(), id.to_owned()));
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Agent>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sandbox ids go into URL paths: only the characters ids are made of.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!("not a sandbox id: {id:?}")))
    }
}

/// `path` with `query` appended, its values percent-encoded.
fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    let mut out = path.to_owned();
    for (i, (name, value)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// An answer's JSON (`{}` for an empty body), or its error.
fn parse(status: u16, text: &str, what: &str) -> Result<Value, ApiError> {
    let body: Value = if text.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| json!({ "body": text }))
    };
    if (200..300).contains(&status) {
        return Ok(body);
    }
    // The wire envelope (`{"error": {"code", "message"}}`) or an agent's flat one.
    let envelope = if body["error"].is_object() {
        &body["error"]
    } else {
        &body
    };
    let message = envelope["message"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{what} answered {status}"));
    Err(ApiError::Status {
        status,
        code: envelope["code"].as_str().map(str::to_owned),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            with_query("/files/read", &[("path", "/tmp/a b&c=d")]),
            "/files/read?path=/tmp/a%20b%26c%3Dd"
        );
        assert_eq!(with_query("/x", &[]), "/x");
    }

    #[test]
    fn errors_keep_the_envelope_message() {
        let e = parse(
            404,
            r#"{"error":{"code":"SANDBOX_NOT_FOUND","message":"no such sandbox"}}"#,
            "cp",
        )
        .expect_err("a 404 is an error");
        assert!(e.not_found());
        assert_eq!(e.to_json()["error"], "no such sandbox");
        assert_eq!(e.to_json()["code"], "SANDBOX_NOT_FOUND");
        assert_eq!(parse(204, "", "cp").ok(), Some(json!({})));
    }
}
