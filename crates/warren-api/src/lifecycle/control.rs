//! What happens to a sandbox after its create: stop and kill, pause and resume, usage, timeout
//! changes, what nodes report (a sandbox that ended on its own), and server shutdown.

use warren_core::{SandboxId, SandboxStatus};
use warren_node::NodeEvent;
use warren_store::{OnTimeout, SandboxRecord};
use warren_wire::cluster::MeasuredUsage;
use warren_wire::control::EgressPolicy;

use super::checks::check_timeout;
use super::{Lifecycle, LifecycleError, LifecycleResult, POOL_TENANT};
use crate::clock::now;
use crate::nodes::{NodeCallError, NodeHandle};

/// The timeout a sandbox resumed by a request gets when it had none (E2B's default).
const DEFAULT_RESUMED_TIMEOUT: i64 = 300;

impl Lifecycle {
    /// Stops a sandbox on `node` and says so in the log when it could not. A joined node that
    /// cannot be reached stops it when it reports again (the heartbeat answer names it).
    pub(super) async fn stop_on(&self, node: &dyn NodeHandle, id: &SandboxId) {
        match node.stop(id).await {
            Ok(()) => {}
            Err(e @ NodeCallError::Silent { .. }) => {
                tracing::info!(sandbox = %id, reason = %e, "it stops the sandbox when it is back");
            }
            Err(e @ NodeCallError::Remote(_)) => {
                tracing::warn!(sandbox = %id, error = %e, "node did not stop the sandbox now; it will when it reports again");
            }
            Err(e) => tracing::error!(sandbox = %id, error = %e, "sandbox teardown incomplete"),
        }
    }

    /// Stops a sandbox on whichever node runs it.
    pub(super) async fn destroy_on(&self, rec: &SandboxRecord) {
        if let Some(node) = self.node_of(rec) {
            self.stop_on(node.as_ref(), &rec.id).await;
        }
    }

    /// Reacts to what the node reports: a sandbox whose init died without being asked to (out of
    /// memory, `kill 1`, a crashed VM) is cleaned up and recorded as `error`.
    pub async fn on_node_event(&self, event: NodeEvent) {
        match event {
            NodeEvent::Exited { id, code } => {
                tracing::warn!(sandbox = %id, code, "sandbox exited on its own; cleaning up");
                let reason = if code >= 0 {
                    format!("its init process exited on its own (status {code})")
                } else {
                    "its init process exited on its own".to_owned()
                };
                self.stop(&id, SandboxStatus::Error, Some(&reason)).await;
            }
        }
    }

    /// Stops a sandbox and removes all its traces; records `final_status` (and `reason` when
    /// the server, not a user, ended it).
    pub async fn stop(&self, id: &SandboxId, final_status: SandboxStatus, reason: Option<&str>) {
        match self.store.get_sandbox(id).await {
            Ok(Some(rec)) if rec.tenant == POOL_TENANT => {
                // A warm sandbox nobody took: no history to keep.
                self.pools.remove(id);
                self.destroy_on(&rec).await;
                if let Err(e) = self.store.forget_sandbox(id).await {
                    tracing::error!(sandbox = %id, error = %e, "cannot remove a warm sandbox's record");
                }
                return;
            }
            Ok(Some(rec)) => self.destroy_on(&rec).await,
            // A build step's sandbox (never in the store), or the store is unreachable.
            _ => {
                if let Some(node) = &self.cluster.local {
                    self.stop_on(node.as_ref(), id).await;
                }
            }
        }
        self.record_end(id, final_status, reason).await;
    }

    /// A joined node reports that a sandbox of its ended on its own (or did not survive the
    /// node's restart).
    pub async fn on_remote_exit(&self, node: &str, id: &SandboxId, code: i32) {
        let Ok(Some(rec)) = self.store.get_sandbox(id).await else {
            return;
        };
        if !rec.status.is_live() || rec.node_id.as_deref() != Some(node) {
            return;
        }
        let reason = if code >= 0 {
            format!("its init process exited on its own (status {code})")
        } else {
            format!("it did not survive a restart of its node {node}")
        };
        tracing::warn!(sandbox = %id, node, code, "sandbox on a node ended on its own");
        self.record_end(id, SandboxStatus::Error, Some(&reason))
            .await;
    }

    pub async fn kill(&self, id: &SandboxId) -> LifecycleResult<SandboxRecord> {
        let mut rec = self.get(id).await?;
        if rec.status.is_live() {
            self.stop(id, SandboxStatus::Deleted, None).await;
            rec.status = SandboxStatus::Deleted;
        }
        Ok(rec)
    }

    pub async fn pause(&self, id: &SandboxId) -> LifecycleResult<SandboxRecord> {
        self.transition(id, SandboxStatus::Paused).await
    }

    pub async fn resume(&self, id: &SandboxId) -> LifecycleResult<SandboxRecord> {
        self.transition(id, SandboxStatus::Running).await
    }

    async fn transition(
        &self,
        id: &SandboxId,
        to: SandboxStatus,
    ) -> LifecycleResult<SandboxRecord> {
        let mut rec = self.get(id).await?;
        if rec.status == to {
            return Ok(rec); // pausing a paused sandbox (or resuming a running one) is a no-op
        }
        let pause = to == SandboxStatus::Paused;
        let (allowed, action) = if pause {
            (rec.status.can_pause(), "pause")
        } else {
            (rec.status.can_resume(), "resume")
        };
        let invalid = LifecycleError::InvalidState {
            action,
            status: rec.status,
        };
        if !allowed {
            return Err(invalid);
        }
        let Some(node) = self.node_of(&rec) else {
            return Err(invalid);
        };
        let done = if pause {
            node.pause(id).await
        } else {
            node.resume(id).await
        };
        done.map_err(|e| LifecycleError::from_node(e, action, rec.status))?;
        self.store.set_sandbox_status(id, to, now()).await?;
        rec.status = to;
        Ok(rec)
    }

    /// What a running or paused sandbox uses, measured by its node from outside it.
    pub async fn usage(&self, rec: &SandboxRecord) -> LifecycleResult<MeasuredUsage> {
        let invalid = LifecycleError::InvalidState {
            action: "measure",
            status: rec.status,
        };
        if !rec.status.is_live() {
            return Err(invalid);
        }
        let Some(node) = self.node_of(rec) else {
            return Err(invalid);
        };
        node.usage(&rec.id)
            .await
            .map_err(|e| LifecycleError::from_node(e, "measure", rec.status))
    }

    pub async fn set_timeout(
        &self,
        id: &SandboxId,
        seconds: i64,
    ) -> LifecycleResult<SandboxRecord> {
        let rec = self.get(id).await?;
        check_timeout(
            seconds,
            crate::limits::max_timeout_of(&self.limits, &rec.tenant),
        )?;
        if !rec.status.is_live() {
            return Err(LifecycleError::InvalidState {
                action: "set the timeout of",
                status: rec.status,
            });
        }
        self.store.set_sandbox_timeout(id, seconds, now()).await?;
        self.expiry_changed.notify_one();
        self.get(id).await
    }

    /// A request reached a paused sandbox: one paused at its timeout with autoResume runs again,
    /// with the timeout it had. True when it runs.
    pub async fn resume_on_request(&self, id: &SandboxId) -> bool {
        let _one_at_a_time = self.resuming.lock().await;
        let rec = match self.get(id).await {
            Ok(r) => r,
            Err(_) => return false,
        };
        let paused_idle = rec
            .status_reason
            .as_deref()
            .is_some_and(|r| r.starts_with(super::idle::IDLE_PAUSE_REASON));
        match rec.status {
            SandboxStatus::Running => return true,
            SandboxStatus::Paused if rec.on_timeout == OnTimeout::PauseUntilRequest => {}
            SandboxStatus::Paused if paused_idle => {}
            _ => return false,
        }
        if let Err(e) = self.resume(id).await {
            tracing::warn!(sandbox = %id, error = %e, "cannot resume a sandbox on a request");
            return false;
        }
        if paused_idle {
            // Its timeout kept running while it slept.
            tracing::info!(sandbox = %id, "idle sandbox resumed by a request");
            return true;
        }
        let timeout = rec.timeout_seconds.unwrap_or(DEFAULT_RESUMED_TIMEOUT);
        if let Err(e) = self.set_timeout(id, timeout).await {
            tracing::warn!(sandbox = %id, error = %e, "cannot set the timeout of a resumed sandbox");
        }
        tracing::info!(sandbox = %id, "sandbox resumed by a request");
        true
    }

    /// Changes what happens at a live sandbox's timeout.
    pub async fn set_on_timeout(
        &self,
        id: &SandboxId,
        on_timeout: OnTimeout,
    ) -> LifecycleResult<SandboxRecord> {
        let rec = self.get(id).await?;
        if !rec.status.is_live() {
            return Err(LifecycleError::InvalidState {
                action: "change the timeout action of",
                status: rec.status,
            });
        }
        self.store
            .set_sandbox_on_timeout(id, on_timeout, now())
            .await?;
        self.get(id).await
    }

    /// Replaces a live sandbox's egress policy (an empty one: internet access alone decides),
    /// on its node first, then in the store: what the store says is what is enforced.
    pub async fn set_network(
        &self,
        id: &SandboxId,
        policy: &EgressPolicy,
    ) -> LifecycleResult<SandboxRecord> {
        crate::egress::parse(policy).map_err(|e| LifecycleError::Invalid(e.to_string()))?;
        let rec = self.get(id).await?;
        if !rec.status.is_live() {
            return Err(LifecycleError::InvalidState {
                action: "change the network of",
                status: rec.status,
            });
        }
        let node = self
            .node_of(&rec)
            .ok_or_else(|| LifecycleError::Unavailable("the sandbox's node is gone".into()))?;
        let handle = rec
            .runtime_handle
            .as_deref()
            .ok_or_else(|| LifecycleError::Unavailable("the sandbox is still starting".into()))?;
        let policy = (!policy.is_empty()).then_some(policy);
        let secrets = self
            .vault
            .bindings(&rec, policy)
            .await
            .map_err(LifecycleError::from_secrets)?;
        node.set_network(id, handle, policy, &secrets, rec.internet_access)
            .await
            .map_err(|e| LifecycleError::from_node(e, "change the network of", rec.status))?;
        let json = policy
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| LifecycleError::Invalid(e.to_string()))?;
        self.store
            .set_sandbox_egress(id, json.as_deref(), now())
            .await?;
        self.get(id).await
    }

    /// Server shutdown. Waits for starts under way (they would otherwise finish after this and
    /// be half-recorded) and refuses new ones. Build sandboxes always stop (their build cannot go
    /// on); the others keep running for the next server to take over, unless `stop_because`
    /// gives the reason to stop them. Returns how many sandboxes keep running.
    pub async fn shut_down(&self, stop_because: Option<&str>) -> usize {
        *self.closing.write().await = true;
        let builds: Vec<SandboxId> = self.build_sandboxes().keys().cloned().collect();
        for id in builds {
            self.stop(&id, SandboxStatus::Stopped, None).await;
            self.build_sandboxes().remove(&id);
        }
        let Some(local) = self.cluster.local.clone() else {
            return 0;
        };
        let Some(reason) = stop_because else {
            return local.sandboxes().len();
        };
        for id in local.sandboxes() {
            self.stop(&id, SandboxStatus::Stopped, Some(reason)).await;
        }
        0
    }
}
