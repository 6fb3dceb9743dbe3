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

fn validate(vars: &BTreeMap<String, String>) -> Result<(), AgentError> {
    for (k, v) in vars {
        let valid_name = !k.is_empty() && !k.contains('=') && !k.contains('\0');
        if !valid_name || v.contains('\0') {
            return Err(AgentError::bad_request(format!(
                "invalid environment variable {k:?}"
            )));
        }
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
    Ok(response(state.replace_env(req.env_vars)))
}

pub async fn merge(
    State(state): State<AgentState>,
    Json(req): Json<EnvRequest>,
) -> Result<Json<EnvResponse>, AgentError> {
    validate(&req.env_vars)?;
    Ok(response(state.merge_env(req.env_vars)))
}

pub async fn clear(State(state): State<AgentState>) -> Json<EnvResponse> {
    response(state.replace_env(BTreeMap::new()))
}
