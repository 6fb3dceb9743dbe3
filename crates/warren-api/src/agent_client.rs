//! Calls from the control plane itself to a sandbox's agent (start commands, ready checks, build
//! steps), over the agent's unix socket.

use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method};
use http_body_util::BodyExt;
use serde_json::Value;

pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .map_err(|e| e.to_string())?;
    let res = crate::proxy::forward_unix(socket, req).await;
    let status = res.status();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("agent response: {e}"))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v["message"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or("agent error");
        return Err(format!("{msg} (HTTP {status})"));
    }
    Ok(v)
}

/// Runs `bash -c command` to completion and returns (exit code, stdout, stderr).
pub async fn run(
    socket: &Path,
    command: &str,
    timeout_secs: u64,
) -> Result<(i64, String, String), String> {
    let body =
        serde_json::json!({ "command": "bash", "args": ["-c", command], "timeout": timeout_secs });
    let v = call(socket, Method::POST, "/commands/run", Some(body)).await?;
    Ok((
        v["exit_code"].as_i64().unwrap_or(-1),
        v["stdout"].as_str().unwrap_or("").to_owned(),
        v["stderr"].as_str().unwrap_or("").to_owned(),
    ))
}
