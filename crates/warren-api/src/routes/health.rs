use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;

/// No auth. 200 means the server can create sandboxes (the driver initialised at start-up);
/// `templates` says which ones are built already (the others build on first use).
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let templates: Vec<Value> = warren_runtime::templates::builtin_recipes()
        .iter()
        .map(|r| json!({ "name": r.name, "ready": state.lifecycle.templates.cache.is_ready(r) }))
        .collect();
    Json(json!({
        "status": "ok",
        "message": "Warren is running",
        "version": crate::VERSION,
        "commit": crate::commit(),
        "isolation": state.cluster.default_tier(),
        "isolation_tiers": state.cluster.tiers(),
        "local_node": state.cluster.local.is_some(),
        "templates": templates,
    }))
}
