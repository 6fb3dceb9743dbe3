use std::path::Path;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use warren_wire::agent::{ExecuteRequest, ExecuteResponse};

use crate::error::AgentError;
use crate::exec::{self, Invocation};
use crate::languages;
use crate::processes::KillOutcome;
use crate::processes::StartRequest;
use crate::state::AgentState;

const DEFAULT_TIMEOUT: u64 = 120;
const DEFAULT_BACKGROUND_TIMEOUT: u64 = 300;

fn language_of(req: &ExecuteRequest) -> Result<&'static str, AgentError> {
    languages::canonical(&req.language).ok_or_else(|| {
        AgentError::bad_request(format!(
            "Unsupported language '{}'; supported: {}",
            req.language,
            languages::SUPPORTED
        ))
    })
}

/// Runs a cell in the sandbox's stateful interpreter. None when the template has none.
async fn run_in_kernel(
    state: &AgentState,
    req: &ExecuteRequest,
    default_timeout: u64,
    ipython: bool,
) -> Option<ExecuteResponse> {
    let env = state.process_env(req.env.as_ref());
    let workdir = crate::routes::workdir(req.workdir.as_deref());
    let timeout = req.timeout.unwrap_or(default_timeout).max(1);
    let started = std::time::Instant::now();
    let outcome = state
        .kernel
        .run(crate::kernel::Cell {
            code: &req.code,
            env: &env,
            workdir: &workdir,
            timeout: Duration::from_secs(timeout),
            ipython,
        })
        .await;
    let timestamp = crate::time_fmt::now();
    let failed = |message: String, exit_code: i32| ExecuteResponse {
        success: false,
        stderr: message.clone(),
        error: Some(message),
        exit_code,
        execution_time: crate::kernel::elapsed(started),
        language: req.language.clone(),
        timestamp: timestamp.clone(),
        ..Default::default()
    };
    Some(match outcome {
        crate::kernel::CellOutcome::Unavailable => return None,
        crate::kernel::CellOutcome::TimedOut => failed(
            format!("Execution timed out after {timeout} seconds; the interpreter was restarted and its state is lost"),
            124,
        ),
        crate::kernel::CellOutcome::Crashed(message) => failed(message, 1),
        crate::kernel::CellOutcome::Done(v) => {
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            ExecuteResponse {
                success: v["success"].as_bool().unwrap_or(false),
                stdout: text("stdout").unwrap_or_default(),
                stderr: text("stderr").unwrap_or_default(),
                exit_code: v["exit_code"].as_i64().unwrap_or(1) as i32,
                execution_time: crate::kernel::elapsed(started),
                language: req.language.clone(),
                timestamp,
                error: text("error"),
                png: text("png"),
                html: text("html"),
                json: v.get("json").cloned().filter(|j| !j.is_null()),
                result: text("result"),
                svg: text("svg"),
                markdown: text("markdown"),
                execution_count: v["execution_count"].as_u64(),
            }
        }
    })
}

/// `POST /execute/ipython` (JS `runIpython`): always the stateful interpreter.
pub async fn execute_ipython(
    State(state): State<AgentState>,
    Json(req): Json<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, AgentError> {
    let _guard = state.count_execution();
    match run_in_kernel(&state, &req, 60, true).await {
        Some(r) => Ok(Json(r)),
        None => Err(AgentError::bad_request(
            "this template has no python3 for a stateful interpreter; use /execute",
        )),
    }
}

pub async fn execute(
    State(state): State<AgentState>,
    Json(req): Json<ExecuteRequest>,
) -> Result<Json<ExecuteResponse>, AgentError> {
    let _guard = state.count_execution();
    let language = language_of(&req)?;
    if language == "python" {
        if let Some(r) = run_in_kernel(&state, &req, DEFAULT_TIMEOUT, false).await {
            return Ok(Json(r));
        }
    }
    let prepared = languages::prepare(language, &req.code)
        .map_err(|e| AgentError::from_io(&e, "/tmp/.warren"))?;
    let env = state.process_env(req.env.as_ref());
    let workdir = crate::routes::workdir(req.workdir.as_deref());
    let outcome = exec::run(Invocation {
        program: &prepared.program,
        args: &prepared.args,
        env: &env,
        workdir: &workdir,
        timeout: Duration::from_secs(req.timeout.unwrap_or(DEFAULT_TIMEOUT).max(1)),
    })
    .await;
    languages::cleanup(&prepared);
    let timestamp = crate::time_fmt::now();
    Ok(Json(match outcome {
        Ok(o) => ExecuteResponse {
            success: o.exit_code == 0,
            error: o.timed_out.then(|| {
                format!(
                    "Execution timed out after {} seconds",
                    req.timeout.unwrap_or(DEFAULT_TIMEOUT)
                )
            }),
            stdout: o.stdout,
            stderr: o.stderr,
            exit_code: o.exit_code,
            execution_time: o.elapsed.as_secs_f64(),
            language: req.language,
            timestamp,
            ..Default::default()
        },
        // A missing interpreter or working directory is the user's problem, not a server fault:
        // report it like a failed run (HTTP 200) so clients do not retry it.
        Err(e) => ExecuteResponse {
            success: false,
            stderr: e.to_string(),
            error: Some(e.to_string()),
            exit_code: 127,
            language: req.language,
            timestamp,
            ..Default::default()
        },
    }))
}

pub async fn background(
    State(state): State<AgentState>,
    Json(req): Json<ExecuteRequest>,
) -> Result<Json<Value>, AgentError> {
    let language = language_of(&req)?;
    let prepared = languages::prepare(language, &req.code)
        .map_err(|e| AgentError::from_io(&e, "/tmp/.warren"))?;
    let env = state.process_env(req.env.as_ref());
    let workdir = crate::routes::workdir(req.workdir.as_deref());
    let (program, args) = (prepared.program.clone(), prepared.args.clone());
    let started = state.processes.start(StartRequest {
        invocation: Invocation {
            program: &program,
            args: &args,
            env: &env,
            workdir: Path::new(&workdir),
            timeout: Duration::from_secs(req.timeout.unwrap_or(DEFAULT_BACKGROUND_TIMEOUT).max(1)),
        },
        name: req.name.clone(),
        language: language.to_owned(),
        command: format!("{} code", prepared.program),
        cleanup: Some(prepared),
    });
    started
        .map(Json)
        .map_err(|e| AgentError::bad_request(e.to_string()))
}

pub async fn list_processes(State(state): State<AgentState>) -> Json<Value> {
    let processes = state.processes.list_with_usage(state.boot.memory_mb);
    Json(
        json!({ "count": processes.len(), "processes": processes, "timestamp": crate::time_fmt::now() }),
    )
}

/// One process with its output; `?stdout_offset=&stderr_offset=` resume a previous read (the
/// response says where the next read starts).
pub async fn get_process(
    State(state): State<AgentState>,
    UrlPath(id): UrlPath<String>,
    Query(at): Query<crate::processes::Offsets>,
) -> Result<Json<Value>, AgentError> {
    state
        .processes
        .get(&id, &at)
        .map(Json)
        .ok_or_else(|| process_not_found(&id))
}

fn process_not_found(id: &str) -> AgentError {
    AgentError::new(
        StatusCode::NOT_FOUND,
        "PROCESS_NOT_FOUND",
        format!("Process {id} not found"),
    )
}

fn killed(state: &AgentState, id: &str) -> Result<Json<Value>, AgentError> {
    // The interpreter driver runs user cells but is plumbing: a cell is stopped by its timeout,
    // and a lost interpreter takes every variable with it.
    let protected: Vec<i32> = state
        .kernel
        .pid()
        .and_then(|p| i32::try_from(p).ok())
        .into_iter()
        .collect();
    match state.processes.kill(id, &protected) {
        KillOutcome::Killed => Ok(Json(
            json!({ "success": true, "process_id": id, "message": "Process killed" }),
        )),
        KillOutcome::NotFound => Err(process_not_found(id)),
        KillOutcome::Refused => Err(AgentError::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "process {id} belongs to the sandbox's agent or its interpreter: only processes \
                 you started can be killed"
            ),
        )),
    }
}

pub async fn kill_by_path(
    State(state): State<AgentState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, AgentError> {
    killed(&state, &id)
}

#[derive(Deserialize)]
pub struct KillQuery {
    process_id: String,
}

pub async fn kill_by_query(
    State(state): State<AgentState>,
    Query(q): Query<KillQuery>,
) -> Result<Json<Value>, AgentError> {
    killed(&state, &q.process_id)
}
