//! Expiry: sandboxes are stopped, and their data deleted, as their `expires_at` passes.

use std::sync::Arc;
use std::time::Duration;

use warren_core::SandboxStatus;

use super::Lifecycle;
use crate::audit::ControlAction;
use crate::clock::now;

impl Lifecycle {
    /// Kills sandboxes as their `expires_at` passes. Sleeps until the next expiry (to the second),
    /// or until an expiry changes.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut forks_swept = std::time::Instant::now();
        // Unused fork snapshots and day-old idempotency keys go too, every ten seconds.
        loop {
            if forks_swept.elapsed() > Duration::from_secs(9) {
                self.remove_unused_fork_snapshots().await;
                // Idempotency keys name their sandbox for a day.
                if let Err(e) = self
                    .store
                    .remove_idempotency_keys_before(now() - crate::idempotency::KEPT_SECONDS)
                    .await
                {
                    tracing::warn!(error = %e, "cannot forget old idempotency keys");
                }
                forks_swept = std::time::Instant::now();
            }
            match self.store.expired_sandboxes(now()).await {
                Ok(due) => {
                    for s in due {
                        let started = std::time::Instant::now();
                        let outcome = if s.on_timeout.pauses() && self.pause_at_timeout(&s.id).await
                        {
                            "paused"
                        } else {
                            tracing::info!(sandbox = %s.id, "sandbox expired; removing it and its data");
                            self.stop(&s.id, SandboxStatus::Stopped, Some("its timeout passed"))
                                .await;
                            "ok"
                        };
                        self.audit_own(
                            &s.tenant,
                            &s.id,
                            ControlAction::SandboxExpire,
                            outcome,
                            started,
                        )
                        .await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "reaper cannot read the store"),
            }
            let wait = match self.store.next_expiry().await {
                Ok(Some(t)) => Duration::from_millis(((t - now()).max(0) as u64) * 1000 + 20)
                    .min(Duration::from_secs(10)),
                // Also the pace of the fork snapshots' sweep above.
                _ => Duration::from_secs(10),
            };
            // Expiries are whole seconds: wake just after the second boundary.
            let wait = if wait < Duration::from_millis(1020) {
                Duration::from_millis(250)
            } else {
                wait
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.expiry_changed.notified() => {}
            }
        }
    }

    /// Records a lifecycle action of the server itself (no key) in the audit trail.
    pub(super) async fn audit_own(
        &self,
        tenant: &str,
        id: &warren_core::SandboxId,
        action: ControlAction,
        outcome: &str,
        started: std::time::Instant,
    ) {
        let event = warren_store::AuditEvent {
            at: crate::audit::now_ms(),
            tenant: tenant.to_owned(),
            sandbox_id: Some(id.to_string()),
            action: action.as_str().into(),
            outcome: outcome.into(),
            duration_ms: started.elapsed().as_millis() as i64,
            ..Default::default()
        };
        if let Err(e) = self.store.append_audit(&[event]).await {
            tracing::warn!(error = %e, action = action.as_str(), "cannot audit a lifecycle action");
        }
    }

    /// Pauses a sandbox whose timeout passed (E2B's autoPause); it keeps no timeout while
    /// paused. False when it could not be paused: it is then stopped like any other.
    async fn pause_at_timeout(&self, id: &warren_core::SandboxId) -> bool {
        let paused = match self.get(id).await {
            // Paused for idleness before: from now on paused by its timeout (no request
            // resumes it unless its owner asked for that).
            Ok(r) if r.status == SandboxStatus::Paused => self
                .store
                .set_sandbox_status(id, SandboxStatus::Paused, now())
                .await
                .is_ok(),
            Ok(_) => match self.pause(id).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "cannot pause at the timeout; stopping it");
                    false
                }
            },
            Err(_) => false,
        };
        if paused {
            if let Err(e) = self.store.clear_sandbox_expiry(id, now()).await {
                tracing::warn!(sandbox = %id, error = %e, "cannot clear the timeout of a paused sandbox");
                return false;
            }
            tracing::info!(sandbox = %id, "sandbox paused at its timeout");
        }
        paused
    }
}
