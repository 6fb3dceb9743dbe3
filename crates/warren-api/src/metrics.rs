//! Prometheus metrics of a control plane (`GET /metrics`, admin key): requests by status,
//! sandbox create latency, placement failures, and at scrape time sandboxes by state and each
//! node's capacity and use. Several control planes each expose their own request and latency
//! figures; the store-derived gauges are the same on all of them.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The control plane's own registry (not the process-global default: one binary, one set).
static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Registers a metric (the constructors fail only on malformed names, fixed here; a metric that
/// failed is left out rather than taking the server down).
fn registered<M: prometheus::core::Collector + Clone + 'static>(m: Option<M>) -> Option<M> {
    if let Some(m) = &m {
        let _ = REGISTRY.register(Box::new(m.clone()));
    }
    m
}

static REQUESTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("warren_http_requests_total", "API requests by status code"),
            &["status"],
        )
        .ok(),
    )
});

static CREATE_SECONDS: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "warren_sandbox_create_seconds",
                "Time from a create request to a running sandbox",
            )
            .buckets(vec![
                0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 30.0,
            ]),
        )
        .ok(),
    )
});

static PLACEMENT_FAILURES: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "warren_placement_failures_total",
            "Creates no node could take",
        )
        .ok(),
    )
});

static SANDBOXES: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(
            Opts::new("warren_sandboxes", "Live sandboxes by state"),
            &["state"],
        )
        .ok(),
    )
});

static NODE: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(
            Opts::new(
                "warren_node",
                "Each node's capacity and use as last reported (what: sandboxes_capacity, sandboxes, memory_mb_capacity, memory_mb_promised, vcpu, healthy)",
            ),
            &["node", "region", "what"],
        )
        .ok(),
    )
});

pub fn count_request(status: u16) {
    if let Some(m) = REQUESTS.as_ref() {
        m.with_label_values(&[&status.to_string()]).inc();
    }
}

pub fn observe_create(seconds: f64) {
    if let Some(m) = CREATE_SECONDS.as_ref() {
        m.observe(seconds);
    }
}

pub fn count_placement_failure() {
    if let Some(m) = PLACEMENT_FAILURES.as_ref() {
        m.inc();
    }
}

pub async fn scrape(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let counts = state.store.count_live_sandboxes().await?;
    if let Some(g) = SANDBOXES.as_ref() {
        for s in ["creating", "running", "paused"] {
            g.with_label_values(&[s]).set(0);
        }
        for (status, n) in counts {
            g.with_label_values(&[&status]).set(n);
        }
    }
    let Some(node_gauge) = NODE.as_ref() else {
        return Err(ApiError::internal("metrics", "node gauge unavailable"));
    };
    node_gauge.reset();
    for n in state.cluster.nodes() {
        let region = n.region().unwrap_or("").to_owned();
        let id = n.record.id.as_str();
        let set = |what: &str, v: i64| node_gauge.with_label_values(&[id, &region, what]).set(v);
        set("sandboxes_capacity", i64::from(n.report.capacity.sandboxes));
        set("sandboxes", i64::from(n.report.used.sandboxes));
        set("memory_mb_capacity", n.report.capacity.memory_mb as i64);
        set("memory_mb_promised", n.report.used.memory_mb as i64);
        set("vcpu", i64::from(n.report.capacity.vcpu));
        set("healthy", i64::from(n.state() == "healthy"));
    }
    // Touch the lazily registered metrics so they appear before their first event.
    LazyLock::force(&REQUESTS);
    LazyLock::force(&CREATE_SECONDS);
    LazyLock::force(&PLACEMENT_FAILURES);
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut out)
        .map_err(|e| ApiError::internal("encode metrics", e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_owned(),
        )],
        out,
    )
        .into_response())
}
