//! Health, info, metrics and the process list. Numbers come from /proc inside the sandbox, which
//! (thanks to the pid namespace) holds exactly the sandbox's own processes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::AgentError;
use crate::state::AgentState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn health(State(state): State<AgentState>) -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "agent": "warren-agent",
        "version": VERSION,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "vm_id": state.boot.sandbox_id,
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
        "vm_id": state.boot.sandbox_id,
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

struct ProcSample {
    pid: i32,
    name: String,
    command: String,
    state: String,
    rss_bytes: u64,
    cpu_seconds: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

fn sample_processes() -> Vec<ProcSample> {
    let ticks = clock_ticks();
    let page = page_size();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The name is in parentheses and may contain spaces; fields follow the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command = String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim()
            .to_owned();
        out.push(ProcSample {
            pid,
            command: if command.is_empty() {
                name.clone()
            } else {
                command
            },
            name,
            state: fields.first().map(|s| s.to_string()).unwrap_or_default(),
            // fields[11], [12] are utime, stime; fields[21] is rss in pages.
            cpu_seconds: (num(11) + num(12)) as f64 / ticks,
            rss_bytes: num(21) * page,
        });
    }
    out
}

pub async fn metrics(State(state): State<AgentState>) -> Json<Value> {
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
    Json(json!({
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
    }))
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
                if !bg["name"].is_null() {
                    v["name"] = bg["name"].clone();
                }
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
