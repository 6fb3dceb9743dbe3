//! Sandboxes of template build steps: admitted against the tenant's quotas like any other and
//! tracked (so shutdown stops them), but never in the store or listed to users. On this control
//! plane's own node the build drives the sandbox's agent itself; through a control plane without
//! one, a joined node runs the whole step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use warren_core::{Resources, SandboxId, Tier};
use warren_node::AgentLink;
use warren_runtime::SandboxSpec;
use warren_wire::cluster::BuildStepRequest;

use super::{Lifecycle, LifecycleError, LifecycleResult};
use crate::cluster::{layer_keys, Placement, TemplateNeed, Wanted};

/// A build step's sandbox: reached by the control plane only, stopped with `end_build_sandbox`.
pub struct BuildSandbox {
    pub id: SandboxId,
    pub agent: AgentLink,
}

/// One RUN step to run on a joined node.
pub struct RemoteStep<'a> {
    pub tenant: &'a str,
    /// The layers it runs on, topmost first.
    pub layers: &'a [PathBuf],
    /// The cache key its own layer will have.
    pub key: &'a str,
    pub command: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub workdir: Option<&'a str>,
    pub resources: Resources,
}

impl Lifecycle {
    /// Counts a build sandbox of `tenant` against its quotas, or refuses it.
    async fn admit_build(
        &self,
        id: &SandboxId,
        tenant: &str,
        resources: Resources,
    ) -> LifecycleResult<()> {
        let _admission = self.admission.write().await;
        self.admit(tenant, resources).await?;
        self.build_sandboxes()
            .insert(id.clone(), (tenant.to_owned(), resources));
        Ok(())
    }

    /// Starts a sandbox for one template build step on this control plane's own node.
    pub async fn start_build_sandbox(
        &self,
        tenant: &str,
        spec: SandboxSpec,
    ) -> LifecycleResult<BuildSandbox> {
        let closing = self.starts_allowed().await?;
        let id = spec.id.clone();
        let node = self.local()?.clone();
        self.admit_build(&id, tenant, spec.resources).await?;
        let started = node.start_build(spec, tenant).await;
        drop(closing);
        match started {
            Ok(agent) => Ok(BuildSandbox { id, agent }),
            Err(e) => {
                self.end_build_sandbox(BuildSandbox {
                    id,
                    agent: AgentLink::new(PathBuf::new()),
                })
                .await;
                Err(LifecycleError::Unavailable(format!(
                    "build sandbox failed to start: {e}"
                )))
            }
        }
    }

    /// Runs one RUN step of a build on a joined node (this control plane has no node of its own):
    /// admitted against the tenant's quotas like a local build sandbox, placed like a sandbox of
    /// the step's layers. The step's layer stays on that node; other nodes fetch it through a
    /// control plane. Returns the step's exit code.
    pub async fn run_remote_build_step(
        &self,
        step: RemoteStep<'_>,
        line: impl FnMut(String),
    ) -> LifecycleResult<i64> {
        let keys = layer_keys(step.layers);
        let placement = self
            .cluster
            .place(&Wanted {
                tier: Some(Tier::Namespaces),
                region: None,
                memory_mb: step.resources.memory_mb,
                template: TemplateNeed::Layers(&keys),
            })
            .map_err(|why| LifecycleError::Unavailable(why.to_string()))?;
        let Placement::Remote(node) = placement else {
            return Err(LifecycleError::Unavailable(
                "no node to run the build step on".into(),
            ));
        };
        let remote = self.cluster.remote(&node.record.id).ok_or_else(|| {
            LifecycleError::Unavailable(format!("node {} left the cluster", node.record.id))
        })?;
        let slot = SandboxId::generate();
        self.admit_build(&slot, step.tenant, step.resources).await?;
        let req = BuildStepRequest {
            layers: keys,
            key: step.key.to_owned(),
            command: step.command.to_owned(),
            env: step.env.clone(),
            workdir: step.workdir.map(str::to_owned),
            vcpu: step.resources.vcpu,
            memory_mb: step.resources.memory_mb,
            disk_mb: step.resources.disk_mb,
            owner: step.tenant.to_owned(),
        };
        let result = remote.build_step(&req, line).await;
        self.build_sandboxes().remove(&slot);
        result.map_err(|e| LifecycleError::Unavailable(e.to_string()))
    }

    /// Stops a build step's sandbox and gives its resources back to the tenant's quota.
    pub async fn end_build_sandbox(&self, build: BuildSandbox) {
        if let Some(node) = &self.cluster.local {
            if let Err(e) = node.stop(&build.id).await {
                tracing::warn!(sandbox = %build.id, error = %e, "build sandbox cleanup");
            }
        }
        self.build_sandboxes().remove(&build.id);
    }
}
