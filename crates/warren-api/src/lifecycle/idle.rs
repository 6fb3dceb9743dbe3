//! Idle pause (`warren serve --idle-pause SECONDS`): running sandboxes nobody used for that long
//! are paused, and the next request that reaches one resumes it (`resume_on_request`). Nodes say
//! which sandboxes are unused (no request open or recent through their proxy, no CPU use to
//! speak of); the control plane decides, records why in the sandbox's `status_reason`, and
//! audits it. Warm pool sandboxes are never paused: idleness is their purpose.

use std::sync::Arc;
use std::time::Duration;

use warren_core::{SandboxId, SandboxStatus};

use super::pool::POOL_TENANT;
use super::Lifecycle;
use crate::audit::ControlAction;
use crate::clock::now;
use crate::nodes::NodeHandle;

/// How a sandbox paused for idleness says so (`status_reason` begins with it).
pub const IDLE_PAUSE_REASON: &str = "paused after";

impl Lifecycle {
    /// Pauses idle sandboxes for as long as this control plane leads the periodic jobs.
    pub async fn pause_idle_forever(self: Arc<Self>, idle_for: Duration) {
        // Often enough that a sandbox sleeps within a quarter of its idle time of going idle,
        // and that nodes read each sandbox's CPU time at least that often.
        let every = (idle_for / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            tokio::time::sleep(every).await;
            self.pause_idle_once(idle_for).await;
        }
    }

    /// One round: every node's idle sandboxes are paused. Returns how many were.
    pub async fn pause_idle_once(&self, idle_for: Duration) -> usize {
        let mut nodes: Vec<Arc<dyn NodeHandle>> = self.cluster.local.iter().cloned().collect();
        for n in self.cluster.nodes().iter().filter(|n| n.healthy()) {
            if let Some(remote) = self.cluster.remote(&n.record.id) {
                nodes.push(Arc::new(remote));
            }
        }
        let mut paused = 0;
        for node in nodes {
            let idle = match node.idle_sandboxes(idle_for).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::debug!(error = %e, "a node did not say which sandboxes are idle");
                    continue;
                }
            };
            for id in idle {
                if self.pause_if_idle(node.as_ref(), &id, idle_for).await {
                    paused += 1;
                }
            }
        }
        paused
    }

    async fn pause_if_idle(
        &self,
        node: &dyn NodeHandle,
        id: &SandboxId,
        idle_for: Duration,
    ) -> bool {
        // One at a time with request-driven resumes, which read what is recorded here.
        let _one_at_a_time = self.resuming.lock().await;
        let started = std::time::Instant::now();
        let tenant = match self.get(id).await {
            Ok(r) if r.status == SandboxStatus::Running && r.tenant != POOL_TENANT => r.tenant,
            _ => return false,
        };
        let reason = format!(
            "{IDLE_PAUSE_REASON} {} s unused; its next request resumes it",
            idle_for.as_secs()
        );
        // Recorded first: a request that finds it paused on its node must find why here.
        match self
            .store
            .set_sandbox_paused_because(id, &reason, now())
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "cannot record an idle pause");
                return false;
            }
        }
        let paused = match node.pause_if_idle(id, idle_for).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "cannot pause an idle sandbox");
                false
            }
        };
        if !paused {
            if let Err(e) = self
                .store
                .set_sandbox_status(id, SandboxStatus::Running, now())
                .await
            {
                tracing::warn!(sandbox = %id, error = %e, "cannot record a sandbox as running again");
            }
            return false;
        }
        tracing::info!(sandbox = %id, idle_s = idle_for.as_secs(), "idle sandbox paused");
        self.audit_own(
            &tenant,
            id,
            ControlAction::SandboxIdlePause,
            "paused",
            started,
        )
        .await;
        true
    }
}
