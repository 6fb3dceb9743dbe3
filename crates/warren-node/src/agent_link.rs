//! The one way anything on the host talks to a sandbox's agent: the proxy forwards the SDKs'
//! requests through `forward`, and the control plane's own calls (template start and ready
//! commands, build steps, asynchronous runs, a VM guest's clock) are typed methods here, built
//! from `warren-wire` shapes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;
use warren_wire::agent::{
    BackgroundStarted, CommandRequest, CommandResponse, ExecuteRequest, ExecuteResponse,
    ProcessOutput, SetClockRequest, SetIdentityRequest,
};

use crate::transport::{agent_error, send_over};

/// A call from the host to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// the agent's socket did not accept the connection (the sandbox is gone or not up)
    #[error("sandbox agent is not reachable")]
    Unreachable,
    /// the agent answered with an error status
    #[error("{message} (HTTP {status})")]
    Refused { status: StatusCode, message: String },
    /// the answer could not be read or had an unexpected shape
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
}

/// How to reach one sandbox's agent: the unix socket every tier provides on the host.
#[derive(Debug, Clone)]
pub struct AgentLink {
    socket: PathBuf,
}

impl AgentLink {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Forwards one request to the agent and returns its answer. The caller's credentials are
    /// stripped first: the agent must never see a token or key it could leak.
    pub async fn forward(&self, mut req: Request) -> Response {
        let stream = match UnixStream::connect(&self.socket).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(socket = %self.socket.display(), error = %e, "agent unreachable");
                return agent_error(
                    StatusCode::BAD_GATEWAY,
                    "INTERNAL_ERROR",
                    "Sandbox agent is not reachable",
                );
            }
        };
        for credential in [
            header::AUTHORIZATION.as_str(),
            "x-api-key",
            "x-access-token",
            "e2b-traffic-access-token",
        ] {
            req.headers_mut().remove(credential);
        }
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

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, AgentError> {
        let bytes = match body {
            Some(b) => {
                serde_json::to_vec(b).map_err(|e| AgentError::Protocol(format!("request: {e}")))?
            }
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let res = self.forward(req).await;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| AgentError::Protocol(format!("response: {e}")))?
            .to_bytes();
        if status == StatusCode::BAD_GATEWAY {
            return Err(AgentError::Unreachable);
        }
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let message = v["message"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or("agent error")
                .to_owned();
            return Err(AgentError::Refused { status, message });
        }
        if bytes.is_empty() {
            // 204: decode from `null` so that `()` works.
            return serde_json::from_value(serde_json::Value::Null)
                .map_err(|e| AgentError::Protocol(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| AgentError::Protocol(e.to_string()))
    }

    /// Runs a command to completion (`POST /commands/run`).
    pub async fn run_command(&self, req: &CommandRequest) -> Result<CommandResponse, AgentError> {
        self.call(Method::POST, "/commands/run", Some(req)).await
    }

    /// Starts a command in the background (`POST /commands/background`).
    pub async fn start_command(
        &self,
        req: &CommandRequest,
    ) -> Result<BackgroundStarted, AgentError> {
        self.call(Method::POST, "/commands/background", Some(req))
            .await
    }

    /// A background process and its output from the given byte offsets.
    pub async fn process_output(
        &self,
        process_id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<ProcessOutput, AgentError> {
        let path = format!(
            "/execute/processes/{process_id}?stdout_offset={stdout_offset}&stderr_offset={stderr_offset}"
        );
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// Runs code to completion (`POST /execute`).
    pub async fn execute(&self, req: &ExecuteRequest) -> Result<ExecuteResponse, AgentError> {
        self.call(Method::POST, "/execute", Some(req)).await
    }

    /// Adds variables to the environment of every later run (`PATCH /env`): a create's
    /// `env_vars` for a warm sandbox, which started with its template's only.
    pub async fn merge_env(
        &self,
        vars: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), AgentError> {
        let body = serde_json::json!({ "env_vars": vars });
        self.call::<_, serde_json::Value>(Method::PATCH, "/env", Some(&body))
            .await
            .map(drop)
    }

    /// Tells a sandbox with a kernel of its own the host's time (`POST /warren/clock`).
    pub async fn set_clock(&self, now: SystemTime) -> Result<(), AgentError> {
        let unix_nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        self.call::<_, serde_json::Value>(
            Method::POST,
            "/warren/clock",
            Some(&SetClockRequest { unix_nanos }),
        )
        .await
        .map(drop)
    }

    /// Tells the agent of a copy resumed from another sandbox's memory its own id
    /// (`POST /warren/identity`).
    /// The agent protocol it speaks (its `/health`; 1 when it names none, as 0.1.0's agents).
    pub async fn protocol(&self) -> Result<u32, AgentError> {
        let health: serde_json::Value = self.call(Method::GET, "/health", None::<&()>).await?;
        Ok(health
            .get("protocol")
            .and_then(serde_json::Value::as_u64)
            .map_or(1, |p| u32::try_from(p).unwrap_or(u32::MAX)))
    }

    pub async fn set_identity(&self, id: &str) -> Result<(), AgentError> {
        self.call::<_, serde_json::Value>(
            Method::POST,
            "/warren/identity",
            Some(&SetIdentityRequest {
                sandbox_id: id.to_owned(),
            }),
        )
        .await
        .map(drop)
    }
}

/// `bash -c <script>` as the agent's command request (what the SDKs send for `commands.run`).
pub fn bash(script: &str, timeout_secs: u64) -> CommandRequest {
    CommandRequest {
        command: "bash".into(),
        args: vec!["-c".into(), script.to_owned()],
        timeout: Some(timeout_secs),
        workdir: None,
        env: None,
    }
}
