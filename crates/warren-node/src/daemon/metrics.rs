//! Prometheus metrics of a node (`GET /metrics` on its API address, no credentials: counts only,
//! never sandbox ids or addresses): its sandboxes by state, capacity and promised use, and its
//! API's requests by status.

use std::sync::{Arc, LazyLock};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::state::Daemon;

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn registered<M: prometheus::core::Collector + Clone + 'static>(m: Option<M>) -> Option<M> {
    if let Some(m) = &m {
        let _ = REGISTRY.register(Box::new(m.clone()));
    }
    m
}

static REQUESTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "warren_node_api_requests_total",
                "Node API requests by status code",
            ),
            &["status"],
        )
        .ok(),
    )
});

static NODE: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(
            Opts::new(
                "warren_node",
                "This node's sandboxes and capacity (what: sandboxes_running, sandboxes_paused, sandboxes_capacity, memory_mb_capacity, memory_mb_promised, vcpu)",
            ),
            &["what"],
        )
        .ok(),
    )
});

pub async fn count_requests(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if let Some(r) = REQUESTS.as_ref() {
        r.with_label_values(&[&res.status().as_u16().to_string()])
            .inc();
    }
    res
}

pub async fn scrape(State(d): State<Arc<Daemon>>) -> Response {
    let report = d.reporter.report(Vec::new());
    if let Some(g) = NODE.as_ref() {
        let paused = report
            .sandboxes
            .iter()
            .filter(|s| s.state == "paused")
            .count() as i64;
        let set = |what: &str, v: i64| g.with_label_values(&[what]).set(v);
        set("sandboxes_running", report.sandboxes.len() as i64 - paused);
        set("sandboxes_paused", paused);
        set("sandboxes_capacity", i64::from(report.capacity.sandboxes));
        set("memory_mb_capacity", report.capacity.memory_mb as i64);
        set("memory_mb_promised", report.used.memory_mb as i64);
        set("vcpu", i64::from(report.capacity.vcpu));
    }
    LazyLock::force(&REQUESTS);
    let mut out = Vec::new();
    let encoder = TextEncoder::new();
    if encoder.encode(&REGISTRY.gather(), &mut out).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        out,
    )
        .into_response()
}
