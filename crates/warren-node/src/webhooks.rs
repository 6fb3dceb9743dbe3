//! `POST /execute/async` (spec §5.2): run code, then POST the result to the caller's
//! `callback_url`. Handled here, on the host, rather than in the agent: the run itself goes to
//! the agent's `/execute`, but the callback — its URL, headers and signing secret — never enters
//! the sandbox, so code inside can neither forge a callback nor suppress one.
//!
//! Signature: `X-HOPX-Signature: sha256=<hex>` is HMAC-SHA256 with the secret as key over the
//! bytes `<X-HOPX-Timestamp value>.<request body>` (decimal unix seconds, a literal `.`, then the
//! exact JSON body as sent). Receivers recompute it over the raw body and compare in constant
//! time, and reject old timestamps to stop replays.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent_link::{AgentError, AgentLink};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Semaphore;
use warren_core::SandboxId;
use warren_wire::agent::ExecuteRequest;

/// Async runs waiting or in flight per server; beyond this callers get 429.
const MAX_PENDING: usize = 256;
const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Delivery attempts and the pause before each retry (doubling).
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Now as RFC 3339 UTC, seconds precision (the timestamp of a callback's payload).
fn rfc3339_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Dispatcher {
    client: reqwest::Client,
    pending: Arc<Semaphore>,
}

#[derive(Deserialize)]
struct AsyncRequest {
    code: String,
    #[serde(default = "default_language")]
    language: String,
    #[serde(default = "default_timeout")]
    timeout: u64,
    workdir: Option<String>,
    env: Option<BTreeMap<String, String>>,
    callback_url: String,
    #[serde(default)]
    callback_headers: BTreeMap<String, String>,
    callback_signature_secret: Option<warren_core::Secret>,
}

fn default_language() -> String {
    "python".into()
}

fn default_timeout() -> u64 {
    1800
}

fn bad_request(message: &str) -> Response {
    crate::transport::agent_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

impl Dispatcher {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warren-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            client,
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    /// Accepts the run (answering at once with `queued`) and finishes it in the background.
    pub async fn accept(
        self: &Arc<Self>,
        id: SandboxId,
        agent: AgentLink,
        req: Request,
    ) -> Response {
        let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST_BYTES).await {
            Ok(b) => b,
            Err(_) => return bad_request("request body too large or unreadable"),
        };
        let run: AsyncRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(&format!("invalid request: {e}")),
        };
        match reqwest::Url::parse(&run.callback_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return bad_request("callback_url must be an absolute http or https URL"),
        }
        if run.callback_headers.iter().any(|(k, v)| {
            header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || header::HeaderValue::from_str(v).is_err()
        }) {
            return bad_request("callback_headers holds an invalid header name or value");
        }
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            return crate::transport::agent_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "too many async executions pending on this server; retry later",
            );
        };
        let execution_id = format!("async_{}", hex::encode(rand::random::<[u8; 8]>()));
        let accepted = json!({
            "execution_id": execution_id,
            "status": "queued",
            "callback_url": run.callback_url,
            "message": "Execution queued; the result will be POSTed to callback_url",
            "timestamp": rfc3339_now(),
        });
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = execute(&agent, &run).await;
            let mut payload = result;
            payload["execution_id"] = execution_id.clone().into();
            payload["timestamp"] = rfc3339_now().into();
            this.deliver(&id, &run, &payload).await;
        });
        (StatusCode::OK, axum::Json(accepted)).into_response()
    }

    async fn deliver(&self, id: &SandboxId, run: &AsyncRequest, payload: &Value) {
        let body = payload.to_string();
        let mut delay = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            // A fresh timestamp (and signature) per attempt: receivers may reject stale ones.
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string();
            let mut req = self
                .client
                .post(&run.callback_url)
                .header(header::CONTENT_TYPE, "application/json")
                .header("X-HOPX-Timestamp", &ts);
            for (k, v) in &run.callback_headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(secret) = &run.callback_signature_secret {
                req = req.header(
                    "X-HOPX-Signature",
                    format!("sha256={}", sign(secret.expose(), &ts, &body)),
                );
            }
            match req.body(body.clone()).send().await {
                Ok(res) if res.status().is_success() => {
                    tracing::info!(sandbox = %id, attempt, "webhook delivered");
                    return;
                }
                Ok(res) => {
                    tracing::warn!(sandbox = %id, attempt, status = %res.status(), "webhook rejected")
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, attempt, error = %e, "webhook not delivered")
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        tracing::error!(sandbox = %id, "webhook given up after {ATTEMPTS} attempts");
    }
}

/// HMAC-SHA256 over `<timestamp>.<body>`, hex.
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this branch cannot happen.
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Runs the code through the agent's synchronous `/execute` and shapes the callback body.
async fn execute(agent: &AgentLink, run: &AsyncRequest) -> Value {
    let started = Instant::now();
    let request = ExecuteRequest {
        code: run.code.clone(),
        language: run.language.clone(),
        timeout: Some(run.timeout),
        workdir: run.workdir.clone(),
        env: run.env.clone(),
        name: None,
    };
    // The agent enforces `timeout`; the margin covers a paused sandbox being resumed.
    let limit = Duration::from_secs(run.timeout.saturating_add(30));
    let result = match tokio::time::timeout(limit, agent.execute(&request)).await {
        Err(_) => {
            return json!({ "status": "timeout", "stdout": "", "stderr": "", "exit_code": 124,
                           "execution_time": started.elapsed().as_secs_f64(),
                           "error": format!("Execution timed out after {} seconds", run.timeout) })
        }
        Ok(Err(AgentError::Refused { message, .. })) => return failed(&message, started),
        Ok(Err(AgentError::Unreachable)) => {
            return failed("the sandbox went away during the run", started)
        }
        Ok(Err(AgentError::Protocol(_))) => {
            return failed("the sandbox returned no result", started)
        }
        Ok(Ok(r)) => r,
    };
    let outcome = match (result.success, result.exit_code, result.error.as_deref()) {
        (_, 124, Some(e)) if e.contains("timed out") => "timeout",
        (true, _, _) => "completed",
        _ => "failed",
    };
    let mut payload = json!({
        "status": outcome,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
        "execution_time": result.execution_time,
    });
    if let Some(e) = result.error {
        payload["error"] = e.into();
    }
    payload
}

fn failed(message: &str, started: Instant) -> Value {
    json!({ "status": "failed", "stdout": "", "stderr": "", "exit_code": 1,
            "execution_time": started.elapsed().as_secs_f64(), "error": message })
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_covers_timestamp_and_body() {
        // Reference value computed independently with Python's hmac module:
        // hmac.new(b"s3cret", b"1700000000.{\"a\":1}", "sha256").hexdigest()
        let sig = super::sign("s3cret", "1700000000", "{\"a\":1}");
        assert_eq!(
            sig,
            "1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
        assert_ne!(sig, super::sign("s3cret", "1700000001", "{\"a\":1}"));
        assert_ne!(sig, super::sign("other", "1700000000", "{\"a\":1}"));
    }
}
