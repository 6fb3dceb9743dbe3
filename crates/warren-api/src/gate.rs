//! The control plane's answers to the node's questions about each sandbox request
//! (`warren_node::Gate`): sandbox tokens, request rates, the audit trail and asynchronous runs.

use std::sync::{Arc, OnceLock, Weak};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::future::BoxFuture;
use warren_core::SandboxId;
use warren_node::{AgentCall, AgentLink, Gate, Refusal};

use crate::audit::Auditor;
use crate::lifecycle::Lifecycle;
use crate::limits::RateLimiter;
use crate::tokens::TokenSigner;
use warren_node::webhooks::Dispatcher;

pub struct ControlGate {
    pub tokens: Arc<TokenSigner>,
    pub rate: Arc<RateLimiter>,
    pub audit: Arc<Auditor>,
    pub webhooks: Arc<Dispatcher>,
    /// Set once the lifecycle exists (it is made after the node this gate serves); weak, as the
    /// lifecycle holds that node.
    pub lifecycle: Arc<OnceLock<Weak<Lifecycle>>>,
}

impl Gate for ControlGate {
    fn verify_token(&self, sandbox: &SandboxId, token: &str) -> Option<Option<String>> {
        self.tokens.verifier().sandbox(token, sandbox.as_str())
    }

    fn check_rate(&self, owner: &str) -> Result<(), Refusal> {
        self.rate.check(None, owner).map_err(|e| Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "RATE_LIMIT_EXCEEDED",
            message: e.to_string(),
            retry_after_seconds: Some(e.retry_after_seconds),
        })
    }

    fn record(&self, call: AgentCall) -> BoxFuture<'static, ()> {
        let audit = self.audit.clone();
        Box::pin(async move { audit.record(crate::audit::agent_event(call)).await })
    }

    fn resume_on_request(&self, sandbox: &SandboxId) -> BoxFuture<'static, bool> {
        let lifecycle = self.lifecycle.get().and_then(Weak::upgrade);
        let sandbox = sandbox.clone();
        Box::pin(async move {
            match lifecycle {
                Some(l) => l.resume_on_request(&sandbox).await,
                None => false,
            }
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
