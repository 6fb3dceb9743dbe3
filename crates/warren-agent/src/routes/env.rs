use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use warren_wire::agent::{EnvRequest, EnvResponse};

use crate::error::AgentError;
use crate::state::AgentState;

fn response(vars: BTreeMap<String, String>) -> Json<EnvResponse> {
    // Values are returned unmasked on purpose: both SDKs implement `delete(key)` as "GET all,
    // PUT back all but one", so a masked value would overwrite the real secret (spec §9.14).
    Json(EnvResponse {
        count: vars.len(),
        env_vars: vars,
        timestamp: crate::time_fmt::now(),
    })
}

/// Longest `NAME=value` the kernel passes to a program (MAX_ARG_STRLEN).
const MAX_VAR_BYTES: usize = 128 * 1024;
/// Largest environment in all: every run gets it, beside its arguments, within the kernel's
/// limit for both together (ARG_MAX, 2 MiB with the usual stack limit).
const MAX_ENV_BYTES: usize = 1024 * 1024;

fn validate(vars: &BTreeMap<String, String>) -> Result<(), AgentError> {
    for (k, v) in vars {
        let valid_name = !k.is_empty() && !k.contains('=') && !k.contains('\0');
        if !valid_name || v.contains('\0') {
            return Err(AgentError::bad_request(format!(
                "invalid environment variable {k:?}"
            )));
        }
        if k.len() + 1 + v.len() >= MAX_VAR_BYTES {
            return Err(AgentError::bad_request(format!(
                "environment variable {k} is too long: at most {} KiB per variable",
                MAX_VAR_BYTES / 1024
            )));
        }
    }
    Ok(())
}

/// Checks the environment every later run would get.
fn validate_total(vars: &BTreeMap<String, String>) -> Result<(), AgentError> {
    let total: usize = vars.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if total > MAX_ENV_BYTES {
        return Err(AgentError::bad_request(format!(
            "the environment would be {} KiB: at most {} KiB in all",
            total.div_ceil(1024),
            MAX_ENV_BYTES / 1024
        )));
    }
    Ok(())
}

pub async fn get_all(State(state): State<AgentState>) -> Json<EnvResponse> {
    response(state.global_env())
}

pub async fn replace(
    State(state): State<AgentState>,
    Json(req): Json<EnvRequest>,
) -> Result<Json<EnvResponse>, AgentError> {
    validate(&req.env_vars)?;
    validate_total(&req.env_vars)?;
    Ok(response(state.replace_env(req.env_vars)))
}

pub async fn merge(
    State(state): State<AgentState>,
    Json(req): Json<EnvRequest>,
) -> Result<Json<EnvResponse>, AgentError> {
    validate(&req.env_vars)?;
    let mut merged = state.global_env();
    merged.extend(req.env_vars.clone());
    validate_total(&merged)?;
    Ok(response(state.merge_env(req.env_vars)))
}

pub async fn clear(State(state): State<AgentState>) -> Json<EnvResponse> {
    response(state.replace_env(BTreeMap::new()))
}
