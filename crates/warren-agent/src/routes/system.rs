//! Health, info, metrics and the process list. Numbers come from /proc inside the sandbox, which
//! (thanks to the pid namespace) holds exactly the sandbox's own processes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::AgentError;
use crate::proc_stats::sample_processes;
use crate::state::AgentState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn health(State(state): State<AgentState>) -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "agent": "warren-agent",
        "version": VERSION,
        "protocol": warren_wire::agent::AGENT_PROTOCOL,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "vm_id": state.sandbox_id(),
        "active_streams": 0,
        "features": features(),
    }))
}

fn features() -> Value {
    json!({
        "code_execution": true,
        "file_operations": true,
        "terminal_access": false,
        "websocket_streaming": false,
        "rich_output": false,
        "background_jobs": true,
        "ipython_kernel": false,
        "system_metrics": true,
        "languages": ["python", "javascript", "bash", "go"],
    })
}

pub async fn info(State(state): State<AgentState>) -> Json<Value> {
    Json(json!({
        "agent": "warren-agent",
        "agent_version": VERSION,
        "version": VERSION,
        "vm_id": state.sandbox_id(),
        "template": state.boot.template,
        "resources": { "vcpu": state.boot.vcpu, "memory_mb": state.boot.memory_mb, "disk_mb": state.boot.disk_mb },
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "start_time": crate::time_fmt::rfc3339(state.started_at),
        "uptime": state.started.elapsed().as_secs(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "features": features(),
        "endpoints": {
            "health": "GET /health", "info": "GET /info", "execute": "POST /execute",
            "execute_background": "POST /execute/background", "processes": "GET /execute/processes",
            "commands": "POST /commands/run", "files_read": "GET /files/read", "files_write": "POST /files/write",
            "files_list": "GET /files/list", "files_upload": "POST /files/upload", "env": "GET|PUT|PATCH /env",
            "metrics": "GET /metrics/snapshot",
        },
    }))
}

pub async fn metrics(State(state): State<AgentState>) -> Json<Value> {
    Json(metrics_value(&state))
}

/// The sandbox's usage as `/metrics` reports it.
pub fn metrics_value(state: &AgentState) -> Value {
    let procs = sample_processes();
    let cpu_total: f64 = procs.iter().map(|p| p.cpu_seconds).sum();
    let used: u64 = procs.iter().map(|p| p.rss_bytes).sum();
    let total = u64::from(state.boot.memory_mb) * 1024 * 1024;
    let usage_percent = {
        let mut last = state
            .last_cpu_sample
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let wall = last.0.elapsed().as_secs_f64().max(0.001);
        let pct = ((cpu_total - last.1).max(0.0) / wall / f64::from(state.boot.vcpu.max(1))
            * 100.0)
            .min(100.0);
        *last = (Instant::now(), cpu_total);
        pct
    };
    let disk = disk_usage();
    let running = procs.iter().filter(|p| p.state == "R").count();
    json!({
        "uptime_seconds": state.started.elapsed().as_secs(),
        "total_requests": state.total_requests.load(Relaxed),
        "total_errors": state.total_errors.load(Relaxed),
        "error_count": state.total_errors.load(Relaxed),
        "total_executions": state.total_executions.load(Relaxed),
        "active_executions": state.active_executions.load(Relaxed),
        "system": {
            "cpu": { "usage_percent": usage_percent, "cores": state.boot.vcpu, "cpu_seconds_total": cpu_total },
            "memory": {
                "total": total, "used": used, "free": total.saturating_sub(used),
                "usage_percent": if total > 0 { used as f64 / total as f64 * 100.0 } else { 0.0 },
            },
            "disk": disk,
        },
        "process": { "count": procs.len(), "running": running },
        "cache": { "size": 0, "hits": 0, "misses": 0, "hit_rate": 0.0 },
        "timestamp": crate::time_fmt::now(),
    })
}

/// `GET /system`: the sandbox's CPU, memory and disk (the `system` part of the metrics).
pub async fn system(state: State<AgentState>) -> Json<Value> {
    let Json(m) = metrics(state).await;
    Json(json!({
        "system": m["system"],
        "process": m["process"],
        "uptime_seconds": m["uptime_seconds"],
        "timestamp": m["timestamp"],
    }))
}

/// `GET /`: what this is.
pub async fn root(state: State<AgentState>) -> Json<Value> {
    let Json(mut v) = info(state).await;
    v["message"] = "Warren sandbox agent".into();
    Json(v)
}

/// `GET /ping`: every value a string (the agent spec's shape).
pub async fn ping() -> Json<Value> {
    Json(json!({ "status": "ok", "message": "pong", "timestamp": crate::time_fmt::now() }))
}

/// `GET /metrics/prometheus`: the metrics in Prometheus' text format.
pub async fn prometheus(state: State<AgentState>) -> impl axum::response::IntoResponse {
    let Json(m) = metrics(state).await;
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let gauges = [
        (
            "warren_agent_uptime_seconds",
            "Seconds since the agent started",
            num(&m["uptime_seconds"]),
        ),
        (
            "warren_agent_requests_total",
            "Requests the agent answered",
            num(&m["total_requests"]),
        ),
        (
            "warren_agent_errors_total",
            "Requests answered with an error",
            num(&m["total_errors"]),
        ),
        (
            "warren_agent_executions_total",
            "Code and command runs",
            num(&m["total_executions"]),
        ),
        (
            "warren_agent_executions_active",
            "Runs under way",
            num(&m["active_executions"]),
        ),
        (
            "warren_sandbox_cpu_usage_percent",
            "CPU used, of the sandbox's vcpus",
            num(&m["system"]["cpu"]["usage_percent"]),
        ),
        (
            "warren_sandbox_cpu_seconds_total",
            "CPU time of the sandbox's processes",
            num(&m["system"]["cpu"]["cpu_seconds_total"]),
        ),
        (
            "warren_sandbox_memory_used_bytes",
            "Memory used by the sandbox's processes",
            num(&m["system"]["memory"]["used"]),
        ),
        (
            "warren_sandbox_memory_limit_bytes",
            "The sandbox's memory",
            num(&m["system"]["memory"]["total"]),
        ),
        (
            "warren_sandbox_disk_used_bytes",
            "Bytes written in the sandbox",
            num(&m["system"]["disk"]["used"]),
        ),
        (
            "warren_sandbox_disk_total_bytes",
            "The sandbox's disk",
            num(&m["system"]["disk"]["total"]),
        ),
        (
            "warren_sandbox_processes",
            "Processes in the sandbox",
            num(&m["process"]["count"]),
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in gauges {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

/// `/update/*` of the agent spec: never from inside a sandbox. The agent comes with the Warren
/// server that starts the sandbox (a new server gives new sandboxes its new agent).
pub async fn update_refused() -> AgentError {
    AgentError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "NOT_SUPPORTED",
        "the agent is not updated from inside a sandbox: it comes with the Warren server",
    )
}

/// The writable layer's usage: statfs of `/` on an overlay reports its upper layer.
fn disk_usage() -> Value {
    match nix::sys::statvfs::statvfs("/") {
        Ok(s) => {
            let block = s.fragment_size();
            let total = s.blocks() * block;
            let free = s.blocks_available() * block;
            let used = total.saturating_sub(s.blocks_free() * block);
            json!({ "total": total, "used": used, "free": free,
                    "usage_percent": if total > 0 { used as f64 / total as f64 * 100.0 } else { 0.0 } })
        }
        Err(_) => json!({}),
    }
}

/// Every process in the sandbox. Leaders of background runs also carry their `process_id`,
/// `name` and run status: the async Python SDK lists and kills background work through here.
pub async fn system_processes(State(state): State<AgentState>) -> Json<Value> {
    let background: std::collections::HashMap<u32, Value> = state
        .processes
        .list()
        .into_iter()
        .filter_map(|p| Some((p.get("pid")?.as_u64()? as u32, p)))
        .collect();
    let procs: Vec<Value> = sample_processes()
        .into_iter()
        .map(|p| {
            let mut v = json!({
                "pid": p.pid, "name": p.name, "command": p.command, "status": p.state,
                "memory_mb": p.rss_bytes as f64 / 1048576.0, "cpu_seconds": p.cpu_seconds,
            });
            if let Some(bg) = background.get(&(p.pid as u32)) {
                v["process_id"] = bg["process_id"].clone();
                v["execution_id"] = bg["execution_id"].clone();
                v["name"] = bg["name"].clone();
            }
            v
        })
        .collect();
    Json(json!({ "count": procs.len(), "processes": procs, "timestamp": crate::time_fmt::now() }))
}

pub async fn jupyter_sessions(State(state): State<AgentState>) -> Json<Value> {
    let sessions = state.kernel.sessions();
    Json(json!({ "count": sessions.len(), "sessions": sessions }))
}

pub async fn cache_stats() -> Json<Value> {
    Json(
        json!({ "cache": { "size": 0, "max_size": 0, "total_hits": 0, "ttl": 0 }, "hits": 0, "misses": 0,
                 "hit_rate": 0.0, "size": 0, "count": 0, "timestamp": crate::time_fmt::now() }),
    )
}

pub async fn cache_clear() -> Json<Value> {
    Json(json!({ "success": true, "message": "Cache cleared successfully", "entries_removed": 0 }))
}

/// Gives the agent of a copy resumed from another sandbox's saved memory its own id: Warren's own
/// route, called by the node once the copy runs. What it changes is what this sandbox says of
/// itself (`SANDBOX_ID`, `vm_id`); nothing outside the sandbox trusts it.
pub async fn set_identity(
    State(state): State<AgentState>,
    Json(req): Json<warren_wire::agent::SetIdentityRequest>,
) -> Result<axum::http::StatusCode, AgentError> {
    if req.sandbox_id.is_empty() || req.sandbox_id.len() > 64 {
        return Err(AgentError::bad_request(
            "sandbox_id must be 1 to 64 characters",
        ));
    }
    state.set_sandbox_id(req.sandbox_id);
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Sets the system clock: Warren's own route (not in the Hopx agent API), called by the control
/// plane after a microVM starts (its RTC counts whole seconds) and after it resumes from a saved
/// state (its clock stood still while it was paused).
/// Only a sandbox with a kernel of its own may set its clock; elsewhere the kernel refuses (the
/// clock is the host's) and this answers 403.
pub async fn set_clock(
    Json(req): Json<warren_wire::agent::SetClockRequest>,
) -> Result<axum::http::StatusCode, AgentError> {
    let nanos_per_second = 1_000_000_000i128;
    let (secs, nanos) = (
        req.unix_nanos.div_euclid(nanos_per_second),
        req.unix_nanos.rem_euclid(nanos_per_second),
    );
    let secs = i64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| AgentError::bad_request("unix_nanos is not a time after 1970"))?;
    let time = nix::sys::time::TimeSpec::new(secs, nanos as i64);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, time).map_err(|e| {
        AgentError::new(
            axum::http::StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!("cannot set this sandbox's clock: {e}"),
        )
    })?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
