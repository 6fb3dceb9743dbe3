//! This control plane's own node, called in-process.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use warren_core::{SandboxId, Tier};
use warren_node::readiness::Readiness;
use warren_node::{Adopt, AgentLink, Node, NodeError, SandboxStart};
use warren_runtime::{SandboxHandle, SandboxSpec, SnapshotTaken};
use warren_wire::cluster::MeasuredUsage;

use super::{AdoptOrder, HandOver, NodeCallError, NodeHandle, NodeStarted, StartOrder};

pub struct LocalNode(pub Arc<Node>);

#[async_trait]
impl NodeHandle for LocalNode {
    fn tiers(&self) -> Vec<Tier> {
        self.0.tiers()
    }

    fn has_room(&self) -> Result<(), warren_node::NoRoom> {
        self.0.has_room()
    }

    fn sandboxes(&self) -> BTreeSet<SandboxId> {
        self.0.list().into_iter().collect()
    }

    fn runs(&self, id: &SandboxId) -> bool {
        self.0.state(id).is_some()
    }

    async fn start(&self, order: StartOrder) -> Result<NodeStarted, NodeCallError> {
        let egress = warren_node::egress::rules(order.egress.as_ref(), &order.secrets)
            .map_err(|e| NodeCallError::Unsupported(e.to_string()))?;
        let readiness = Readiness {
            start_cmd: order.run.start_cmd.clone(),
            probe: order
                .run
                .ready_probe()
                .map_err(|e| NodeCallError::Unsupported(e.to_string()))?,
        };
        let start = SandboxStart {
            spec: SandboxSpec {
                id: order.id,
                template_name: order.template_name,
                layers: order.run.layers,
                persistent_upper: None,
                workdir: order.run.workdir,
                resources: order.resources,
                internet_access: order.internet_access,
                egress,
                env_vars: order.env_vars,
                saved_state: order.run.saved_state,
                volumes: order.volumes,
            },
            tier: Some(order.tier),
            owner: order.owner,
            listen: true,
        };
        let started = self.0.start_ready(start, &readiness).await?;
        Ok(NodeStarted {
            tier: started.tier,
            port: started.port,
            handle: started.handle.to_json(),
            paused: false,
        })
    }

    async fn stop(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        Ok(self.0.destroy(id).await?)
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        Ok(self.0.pause(id).await?)
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), NodeCallError> {
        Ok(self.0.resume(id).await?)
    }

    async fn idle_sandboxes(&self, idle_for: Duration) -> Result<Vec<SandboxId>, NodeCallError> {
        // Reads every running sandbox's cgroup: off the async workers.
        let node = self.0.clone();
        Ok(
            tokio::task::spawn_blocking(move || node.idle_sandboxes(idle_for))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the idle check failed");
                    Vec::new()
                }),
        )
    }

    async fn pause_if_idle(
        &self,
        id: &SandboxId,
        idle_for: Duration,
    ) -> Result<bool, NodeCallError> {
        Ok(self.0.pause_if_idle(id, idle_for).await?)
    }

    async fn usage(&self, id: &SandboxId) -> Result<MeasuredUsage, NodeCallError> {
        self.0
            .measured_usage(id)
            .await
            .ok_or(NodeCallError::NotRunning)
    }

    async fn snapshot(&self, id: &SandboxId, dir: &Path) -> Result<SnapshotTaken, NodeCallError> {
        Ok(self.0.snapshot(id, dir).await?)
    }

    async fn set_network(
        &self,
        id: &SandboxId,
        handle: &str,
        egress: Option<&warren_wire::control::EgressPolicy>,
        secrets: &[warren_wire::cluster::SecretBinding],
        internet_access: bool,
    ) -> Result<(), NodeCallError> {
        let handle = SandboxHandle::from_json(handle).map_err(NodeCallError::BadHandle)?;
        let policy = warren_node::egress::rules(egress, secrets)
            .map_err(|e| NodeCallError::Unsupported(e.to_string()))?;
        Ok(self
            .0
            .set_egress(id, &handle, policy.as_ref(), internet_access)
            .await?)
    }

    async fn hand_over(&self, id: &SandboxId, to: HandOver) -> Result<(), NodeCallError> {
        self.0.set_owner(id, &to.owner);
        if let Some(handle) = &to.cut_internet_of {
            let handle = SandboxHandle::from_json(handle).map_err(NodeCallError::BadHandle)?;
            self.0.cut_internet(&handle).await?;
        }
        if !to.env_vars.is_empty() {
            let agent = self.0.agent(id).ok_or(NodeCallError::NotRunning)?;
            agent
                .merge_env(&to.env_vars)
                .await
                .map_err(|e| NodeCallError::Local(NodeError::Agent(e)))?;
        }
        Ok(())
    }

    async fn start_build(
        &self,
        spec: SandboxSpec,
        owner: &str,
    ) -> Result<AgentLink, NodeCallError> {
        let id = spec.id.clone();
        // Build steps keep their writable layer on disk: only the namespace tier offers that.
        let start = SandboxStart {
            spec,
            tier: Some(Tier::Namespaces),
            owner: owner.to_owned(),
            listen: false,
        };
        self.0.start(start).await?;
        self.0.agent(&id).ok_or(NodeCallError::NotRunning)
    }

    async fn adopt(&self, order: AdoptOrder) -> Result<NodeStarted, NodeCallError> {
        let handle = SandboxHandle::from_json(&order.handle)
            .map_err(|_| NodeCallError::NotAdopted("its handle is unreadable".into()))?;
        let adopted = self
            .0
            .adopt(Adopt {
                id: order.id,
                tier: order.tier,
                handle,
                owner: order.owner,
                paused: order.paused,
                port: order.port,
            })
            .await
            .map_err(|e| NodeCallError::NotAdopted(e.to_string()))?;
        Ok(NodeStarted {
            tier: adopted.tier,
            port: adopted.port,
            handle: adopted.handle.to_json(),
            paused: adopted.paused,
        })
    }

    async fn remove_leftovers(&self) {
        self.0.remove_leftovers().await;
    }
}
