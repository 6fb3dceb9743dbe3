//! Live restore: at start, the sandboxes an earlier server process left running are taken over
//! (same id, same `public_host`, their processes, files and state untouched); those that did not
//! survive are recorded as stopped with the reason, and everything left of them is removed.

use std::time::{Duration, Instant};

use warren_core::{SandboxId, SandboxStatus};
use warren_store::SandboxRecord;

use super::{Lifecycle, LifecycleResult};
use crate::clock::now;
use crate::nodes::{AdoptOrder, NodeHandle};

/// Why a sandbox the store holds as live was not taken over: the reason it is recorded with.
#[derive(Debug, thiserror::Error)]
enum NotTakenOver {
    #[error("the server stopped while it was being created")]
    StillCreating,
    #[error("it was started by a server without live restore")]
    NoHandle,
    #[error("{0} while the server was down")]
    Ended(crate::nodes::NodeCallError),
}

/// What a start found.
#[derive(Debug, Default)]
pub struct Restored {
    /// Taken over, running or paused as before.
    pub adopted: usize,
    /// Recorded as stopped: their processes had ended, or they were still being created.
    pub lost: usize,
    pub took: Duration,
}

impl Lifecycle {
    /// Takes over every sandbox of the store that an earlier server process left running on this
    /// node, then removes whatever else earlier servers left behind. Call once, before serving.
    pub async fn restore(&self) -> LifecycleResult<Restored> {
        let started = Instant::now();
        let mut report = Restored::default();
        let Some(node) = self.cluster.local.clone() else {
            return Ok(report);
        };
        // Only this control plane's own node's sandboxes: joined nodes take theirs over themselves.
        for rec in self.store.live_sandboxes_on(None).await? {
            match self.take_over(node.as_ref(), &rec).await {
                Ok(()) => report.adopted += 1,
                Err(why) => {
                    report.lost += 1;
                    let reason = why.to_string();
                    tracing::warn!(sandbox = %rec.id, %reason, "sandbox did not survive the previous server; recorded as stopped");
                    self.store
                        .end_sandbox(&rec.id, SandboxStatus::Stopped, Some(&reason), now())
                        .await?;
                }
            }
        }
        node.remove_leftovers().await;
        report.took = started.elapsed();
        Ok(report)
    }

    /// Takes one sandbox over; the error says why it did not survive.
    async fn take_over(
        &self,
        node: &dyn NodeHandle,
        rec: &SandboxRecord,
    ) -> Result<(), NotTakenOver> {
        if rec.status == SandboxStatus::Creating {
            return Err(NotTakenOver::StillCreating);
        }
        let handle = rec.runtime_handle.clone().ok_or(NotTakenOver::NoHandle)?;
        let adopted = node
            .adopt(AdoptOrder {
                id: rec.id.clone(),
                tier: rec.isolation,
                handle,
                owner: rec.tenant.clone(),
                paused: rec.status == SandboxStatus::Paused,
                port: rec.listen_port,
            })
            .await
            .map_err(NotTakenOver::Ended)?;
        let found = if adopted.paused {
            SandboxStatus::Paused
        } else {
            SandboxStatus::Running
        };
        if found != rec.status {
            // A pause or resume the last server did not get to record.
            if let Err(e) = self.store.set_sandbox_status(&rec.id, found, now()).await {
                tracing::error!(sandbox = %rec.id, error = %e, "cannot record the sandbox's state");
            }
        }
        if adopted.port != rec.listen_port {
            // Its old port was taken: record the new one (and so the new public_host).
            if let Err(e) = self
                .store
                .record_sandbox_runtime(&rec.id, &adopted.handle, adopted.port, now())
                .await
            {
                tracing::error!(sandbox = %rec.id, error = %e, "cannot record the sandbox's new port");
            }
        }
        // The egress proxy lives in the server process: a new one starts empty.
        self.put_network_back(node, rec, &adopted.handle).await;
        tracing::info!(sandbox = %rec.id, tier = %adopted.tier, status = %found, "sandbox taken over from the previous server");
        Ok(())
    }

    /// Gives a joined node that restarted the brokered secrets of a sandbox it took over (it
    /// never writes their values down), with the sandbox's policy.
    pub async fn rearm_network(&self, id: &SandboxId) {
        let Ok(rec) = self.get(id).await else {
            return;
        };
        let (Some(node), Some(handle)) = (self.node_of(&rec), rec.runtime_handle.as_deref()) else {
            return;
        };
        if rec.status.is_live() {
            self.put_network_back(node.as_ref(), &rec, handle).await;
        }
    }

    /// Puts a sandbox's egress policy and brokered secrets on its node again.
    async fn put_network_back(&self, node: &dyn NodeHandle, rec: &SandboxRecord, handle: &str) {
        let policy = crate::egress::stored(rec);
        let secrets = match self.vault.bindings(rec, policy.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(sandbox = %rec.id, error = %e, "a secret its network rules name cannot be given again");
                self.vault.rebind(rec).await
            }
        };
        if policy.is_none() && secrets.is_empty() {
            return;
        }
        if let Err(e) = node
            .set_network(
                &rec.id,
                handle,
                policy.as_ref(),
                &secrets,
                rec.internet_access,
            )
            .await
        {
            tracing::error!(sandbox = %rec.id, error = %e, "cannot put the sandbox's egress policy back");
        }
    }
}
