//! `GET /metrics` (admin key): the control plane's Prometheus metrics, with the gauges that come
//! from the store and the node table filled in at scrape time.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::metrics;
use crate::state::AppState;

pub async fn scrape(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    metrics::set_sandboxes(&state.store.count_live_sandboxes().await?);
    let mut values = Vec::new();
    for n in state.cluster.nodes() {
        let region = n.region().unwrap_or("").to_owned();
        let id = n.record.id.clone();
        let mut set =
            |what: &'static str, v: i64| values.push((id.clone(), region.clone(), what, v));
        set("sandboxes_capacity", i64::from(n.report.capacity.sandboxes));
        set("sandboxes", i64::from(n.report.used.sandboxes));
        set("memory_mb_capacity", n.report.capacity.memory_mb as i64);
        set("memory_mb_promised", n.report.used.memory_mb as i64);
        set("vcpu", i64::from(n.report.capacity.vcpu));
        set("healthy", i64::from(n.state() == "healthy"));
    }
    metrics::set_nodes(&values);
    metrics::set_pools(&state.lifecycle.pool_sizes());
    if let Some(node) = &state.node {
        let (allowed, refused) = node.egress_counts();
        metrics::set_egress(allowed, refused);
    }
    let (body, content_type) =
        metrics::encode().map_err(|e| ApiError::internal("encode metrics", e))?;
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
