use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::Value;
use warren_wire::agent::{CommandRequest, CommandResponse};

use crate::error::AgentError;
use crate::exec::{self, Invocation};
use crate::processes::StartRequest;
use crate::state::AgentState;

const DEFAULT_TIMEOUT: u64 = 120;

fn describe(req: &CommandRequest) -> String {
    // The SDKs send `bash -c <cmd>`: show the user's command, not the wrapper.
    match (req.command.as_str(), req.args.as_slice()) {
        ("bash" | "sh", [flag, cmd]) if flag == "-c" => cmd.clone(),
        _ => std::iter::once(req.command.clone())
            .chain(req.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn validate(req: &CommandRequest) -> Result<(), AgentError> {
    if req.command.trim().is_empty() {
        return Err(AgentError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "MISSING_PARAMETER",
            "command must not be empty",
        ));
    }
    if req.command.contains('\0') || req.args.iter().any(|a| a.contains('\0')) {
        return Err(AgentError::bad_request(
            "command and args must not contain NUL bytes",
        ));
    }
    Ok(())
}

pub async fn run(
    State(state): State<AgentState>,
    Json(req): Json<CommandRequest>,
) -> Result<Json<CommandResponse>, AgentError> {
    validate(&req)?;
    let _guard = state.count_execution();
    let env = state.process_env(req.env.as_ref());
    let workdir = crate::routes::workdir(req.workdir.as_deref());
    let outcome = exec::run(Invocation {
        program: &req.command,
        args: &req.args,
        env: &env,
        workdir: &workdir,
        timeout: Duration::from_secs(req.timeout.unwrap_or(DEFAULT_TIMEOUT).max(1)),
    })
    .await;
    let timestamp = crate::time_fmt::now();
    let command = describe(&req);
    Ok(Json(match outcome {
        Ok(o) => CommandResponse {
            success: o.exit_code == 0,
            stdout: o.stdout,
            stderr: o.stderr,
            exit_code: o.exit_code,
            execution_time: o.elapsed.as_secs_f64(),
            command,
            pid: o.pid,
            timestamp,
        },
        Err(e) => CommandResponse {
            success: false,
            stderr: e.to_string(),
            exit_code: 127,
            command,
            timestamp,
            ..Default::default()
        },
    }))
}

pub async fn background(
    State(state): State<AgentState>,
    Json(req): Json<CommandRequest>,
) -> Result<Json<Value>, AgentError> {
    validate(&req)?;
    let env = state.process_env(req.env.as_ref());
    let workdir = crate::routes::workdir(req.workdir.as_deref());
    state
        .processes
        .start(StartRequest {
            invocation: Invocation {
                program: &req.command,
                args: &req.args,
                env: &env,
                workdir: &workdir,
                timeout: Duration::from_secs(req.timeout.unwrap_or(DEFAULT_TIMEOUT).max(1)),
            },
            name: None,
            language: "bash".to_owned(),
            command: describe(&req),
            cleanup: None,
        })
        .map(Json)
        .map_err(|e| AgentError::bad_request(e.to_string()))
}
