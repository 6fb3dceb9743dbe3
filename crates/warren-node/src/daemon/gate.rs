//! The node daemon's answers to its proxy's questions (`Gate`), without asking the control plane
//! per request: tokens are checked with the control planes' public key, request rates counted
//! here (so a tenant's limit applies per node), audit records sent to the control plane in
//! batches, and `/execute/async` callbacks delivered from this host.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::mpsc;
use warren_core::SandboxId;
use warren_wire::cluster::AuditRecord;

use crate::agent_link::AgentLink;
use crate::gate::{AgentCall, Gate, Refusal};
use crate::tokens::TokenVerifier;
use crate::webhooks::Dispatcher;

pub struct NodeGate {
    pub verifier: TokenVerifier,
    pub rate: DefaultKeyedRateLimiter<String>,
    pub audit: mpsc::Sender<AuditRecord>,
    pub webhooks: Arc<Dispatcher>,
}

/// `per_second` requests, with bursts of twice that (SDK start-up fires a few calls at once): the
/// rule of every request limit, on control planes and nodes alike.
pub fn request_quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.max(1).saturating_mul(2)).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

/// The per-organization limit of one node.
pub fn tenant_limiter(per_second: u32) -> DefaultKeyedRateLimiter<String> {
    governor::RateLimiter::keyed(request_quota(per_second))
}

impl Gate for NodeGate {
    fn verify_token(&self, sandbox: &SandboxId, token: &str) -> Option<Option<String>> {
        self.verifier.sandbox(token, sandbox.as_str())
    }

    fn check_rate(&self, owner: &str) -> Result<(), Refusal> {
        self.rate.check_key(&owner.to_owned()).map_err(|wait| {
            let secs = wait
                .wait_time_from(DefaultClock::default().now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64;
            Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "RATE_LIMIT_EXCEEDED",
                message: format!(
                    "organization request rate exceeded on this node; retry in {secs} s"
                ),
                retry_after_seconds: Some(secs),
            }
        })
    }

    fn record(&self, call: AgentCall) -> BoxFuture<'static, ()> {
        let record = AuditRecord {
            at: time::OffsetDateTime::now_utc().unix_timestamp() * 1000
                + i64::from(time::OffsetDateTime::now_utc().millisecond()),
            sandbox_id: call.sandbox.to_string(),
            tenant: call.owner,
            key_id: call.key_id,
            action: call.action.as_str().to_owned(),
            input_bytes: call.input_bytes,
            input_sha256: call.input_sha256,
            outcome: call.outcome,
            status_code: call.status_code,
            duration_ms: u64::try_from(call.duration.as_millis()).unwrap_or(u64::MAX),
            request_id: call.request_id,
        };
        let audit = self.audit.clone();
        Box::pin(async move {
            // Waits for room rather than dropping the record: the trail must be complete.
            let _ = audit.send(record).await;
        })
    }

    fn execute_async(
        &self,
        sandbox: SandboxId,
        agent: AgentLink,
        req: Request,
    ) -> BoxFuture<'static, Response> {
        let webhooks = self.webhooks.clone();
        Box::pin(async move { webhooks.accept(sandbox, agent, req).await })
    }
}
