//! Prometheus metrics of a control plane (served by `routes::metrics`, admin key): requests by status,
//! sandbox create latency, placement failures, and at scrape time sandboxes by state and each
//! node's capacity and use. Several control planes each expose their own request and latency
//! figures; the store-derived gauges are the same on all of them.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

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

static REQUEST_SECONDS: LazyLock<Option<Histogram>> = LazyLock::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "warren_http_request_seconds",
                "Time the server held each request (API and sandbox traffic), until its answer's last byte",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
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

static POOL_READY: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    registered(
        IntGaugeVec::new(
            Opts::new(
                "warren_pool_ready",
                "Warm sandboxes ready to be taken, per template id and tier (--pool)",
            ),
            &["template", "tier"],
        )
        .ok(),
    )
});

static EGRESS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "warren_egress_connections_total",
                "Connections (and DNS questions) of sandboxes under an egress policy, by decision, on this control plane's own machine",
            ),
            &["decision"],
        )
        .ok(),
    )
});

/// Brings the egress counters up to the proxy's own counts (which only grow).
pub fn set_egress(allowed: u64, refused: u64) {
    if let Some(c) = EGRESS.as_ref() {
        for (label, now) in [("allowed", allowed), ("refused", refused)] {
            let m = c.with_label_values(&[label]);
            m.inc_by(now.saturating_sub(m.get()));
        }
    }
}

/// Replaces the warm pool gauges: (template id, tier, ready sandboxes).
pub fn set_pools(sizes: &[(String, warren_core::Tier, usize)]) {
    if let Some(g) = POOL_READY.as_ref() {
        g.reset();
        for (template, tier, n) in sizes {
            g.with_label_values(&[template.as_str(), tier.as_str()])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
}

pub fn count_request(status: u16) {
    if let Some(m) = REQUESTS.as_ref() {
        m.with_label_values(&[&status.to_string()]).inc();
    }
}

pub fn observe_request(seconds: f64) {
    if let Some(m) = REQUEST_SECONDS.as_ref() {
        m.observe(seconds);
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

/// Sets the live sandbox counts (`creating`, `running`, `paused`); states not named are 0.
pub fn set_sandboxes(counts: &[(String, i64)]) {
    if let Some(g) = SANDBOXES.as_ref() {
        for s in ["creating", "running", "paused"] {
            g.with_label_values(&[s]).set(0);
        }
        for (status, n) in counts {
            g.with_label_values(&[status]).set(*n);
        }
    }
}

/// Replaces the per-node gauges: (node id, region, what, value).
pub fn set_nodes(values: &[(String, String, &'static str, i64)]) {
    if let Some(g) = NODE.as_ref() {
        g.reset();
        for (node, region, what, v) in values {
            g.with_label_values(&[node.as_str(), region.as_str(), what])
                .set(*v);
        }
    }
}

/// The registry in Prometheus' text format, and its content type.
pub fn encode() -> Result<(Vec<u8>, String), prometheus::Error> {
    // Touch the lazily registered metrics so they appear before their first event.
    LazyLock::force(&REQUESTS);
    LazyLock::force(&CREATE_SECONDS);
    LazyLock::force(&PLACEMENT_FAILURES);
    LazyLock::force(&SANDBOXES);
    LazyLock::force(&NODE);
    LazyLock::force(&EGRESS);
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    encoder.encode(&REGISTRY.gather(), &mut out)?;
    Ok((out, encoder.format_type().to_owned()))
}
