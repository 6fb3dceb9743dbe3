//! The egress proxy's decisions into the audit trail, each under the tenant that owns the
//! sandbox now (a warm sandbox changes hands when a create takes it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use warren_core::SandboxId;
use warren_egress::{Decision, EgressEvent};

use crate::gate::{AgentAction, AgentCall, Gate};
use crate::registry::Registry;

pub(crate) async fn forward(
    mut events: mpsc::Receiver<EgressEvent>,
    registry: Arc<Registry>,
    gate: Arc<dyn Gate>,
) {
    while let Some(e) = events.recv().await {
        let Ok(sandbox) = SandboxId::parse(&e.sandbox) else {
            continue;
        };
        let Some(target) = registry.target(&sandbox) else {
            continue;
        };
        gate.record(AgentCall {
            sandbox,
            owner: target.owner,
            key_id: None,
            action: AgentAction::Egress,
            input_bytes: e.bytes_out,
            input_sha256: None,
            outcome: outcome(&e),
            status_code: match e.decision {
                Decision::Allowed => 200,
                Decision::Refused => 403,
            },
            duration: Duration::ZERO,
            request_id: String::new(),
        })
        .await;
    }
}

/// `allowed api.test:443 (allowOut api.test) out=120 in=5120`, or `refused ...`: what a reader
/// of the trail needs, in the one free-text field it has.
fn outcome(e: &EgressEvent) -> String {
    let what = match e.decision {
        Decision::Allowed => "allowed",
        Decision::Refused => "refused",
    };
    let dest = match &e.name {
        Some(n) if e.addr.is_unspecified() => format!("{n}:{}", e.port),
        Some(n) => format!("{n}:{} ({})", e.port, e.addr),
        None => format!("{}:{}", e.addr, e.port),
    };
    let mut s = format!("{what} {dest} by {}", e.rule);
    if e.decision == Decision::Allowed && e.bytes_out + e.bytes_in > 0 {
        s.push_str(&format!(" out={} in={}", e.bytes_out, e.bytes_in));
    }
    s
}
