//! Sandbox lifecycle: the one place that keeps the store and the nodes in step. Every sandbox,
//! a user's or a template build step's, is admitted, started, tracked and stopped here. HTTP
//! handlers turn requests into calls on `Lifecycle` and its errors into API errors; they never
//! touch a node's sandboxes themselves. Nodes are reached through `NodeHandle`, the same verbs for
//! this control plane's own node and for joined ones.
//!
//! Files: `create.rs` (a create, step by step), `control.rs` (stop, kill, pause, resume, usage,
//! timeouts, what nodes report, shutdown), `checks.rs` (what a request may ask), `pool.rs` (warm
//! sandboxes), `snapshots.rs`, `restore.rs` (taking sandboxes over at start), `reaper.rs`
//! (expiry), `build_sandboxes.rs` (template build steps), `templates.rs` (what a template runs).

mod build_sandboxes;
mod checks;
mod control;
mod create;
mod error;
mod idle;
mod pool;
mod pool_demand;
mod reaper;
mod restore;
mod snapshots;
mod templates;
#[cfg(test)]
mod tests;
mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use warren_core::{Resources, SandboxId, SandboxStatus};
use warren_store::{SandboxRecord, Store, TenantUsage};

pub use build_sandboxes::RemoteStep;
pub use error::{LifecycleError, LifecycleResult};
pub use pool::{PoolTarget, POOL_TENANT};
pub use templates::{RootfsUnavailable, TemplateRoots};

use crate::clock::now;
use crate::cluster::Cluster;
use crate::limits::Limits;
use crate::nodes::NodeHandle;

/// Who asks: the tenant a new sandbox belongs to and the key that created it.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub tenant: &'a str,
    pub key_id: &'a str,
}

pub struct Lifecycle {
    pub store: Store,
    /// The nodes: this control plane's own (if any) and those that joined.
    pub cluster: Arc<Cluster>,
    pub templates: Arc<TemplateRoots>,
    limits: Limits,
    /// Whether a create request may pick its own isolation tier.
    allow_isolation_override: bool,
    /// Wakes the reaper when an expiry moves earlier.
    expiry_changed: Notify,
    /// Resumes on request, one at a time: a burst of requests to a paused sandbox resumes it once.
    resuming: tokio::sync::Mutex<()>,
    /// Creates hold it shared: their quota check is one step with their insert in the store
    /// (`Store::insert_sandbox_within`), so they need not queue on each other. Exclusive for
    /// what the store cannot see in that step: a build sandbox's admission (counted here, not
    /// in the store) and a volume's delete (a create checks its volumes, then records its mounts).
    admission: tokio::sync::RwLock<()>,
    /// Held (read) by every start from admission until its sandbox is live, so shutdown (write)
    /// waits for starts under way instead of missing them; true once shutdown has begun.
    closing: tokio::sync::RwLock<bool>,
    /// Build-step sandboxes and whose they are. They are not in the store (they live as long as
    /// one build step), but they hold resources, so admission counts them.
    build_sandboxes: Mutex<HashMap<SandboxId, (String, Resources)>>,
    /// Warm sandboxes ready to be taken by creates (`pool.rs`).
    pools: pool::Pools,
    /// Where snapshot layers are kept (`snapshots.rs`).
    snapshots_dir: std::path::PathBuf,
    vault: Arc<crate::secrets::SecretVault>,
    /// Persistent volumes' files, mounted into sandboxes that name them (`volumes.rs`).
    volumes: Arc<crate::volumes::Volumes>,
}

/// How a `Lifecycle` is set up.
pub struct LifecycleConfig {
    pub limits: Limits,
    /// Whether a create request may pick its own isolation tier.
    pub allow_isolation_override: bool,
    /// Where snapshot layers are kept.
    pub snapshots_dir: std::path::PathBuf,
    /// Secrets brokered for sandboxes.
    pub vault: Arc<crate::secrets::SecretVault>,
    /// Persistent volumes' files.
    pub volumes: Arc<crate::volumes::Volumes>,
}

impl Lifecycle {
    pub fn new(
        store: Store,
        cluster: Arc<Cluster>,
        templates: Arc<TemplateRoots>,
        cfg: LifecycleConfig,
    ) -> Self {
        Self {
            store,
            cluster,
            templates,
            limits: cfg.limits,
            allow_isolation_override: cfg.allow_isolation_override,
            expiry_changed: Notify::new(),
            resuming: tokio::sync::Mutex::new(()),
            admission: tokio::sync::RwLock::new(()),
            closing: tokio::sync::RwLock::new(false),
            build_sandboxes: Mutex::new(HashMap::new()),
            pools: pool::Pools::default(),
            snapshots_dir: cfg.snapshots_dir,
            vault: cfg.vault,
            volumes: cfg.volumes,
        }
    }

    /// The tenant-scoped secret store.
    pub fn vault(&self) -> &crate::secrets::SecretVault {
        &self.vault
    }

    /// Persistent volumes' files.
    pub fn volumes(&self) -> &Arc<crate::volumes::Volumes> {
        &self.volumes
    }

    #[cfg(test)]
    pub(crate) fn vault_arc(&self) -> Arc<crate::secrets::SecretVault> {
        self.vault.clone()
    }

    /// Held by a start from admission until its sandbox is live (see `closing`); refused once
    /// shutdown has begun.
    async fn starts_allowed(&self) -> LifecycleResult<tokio::sync::RwLockReadGuard<'_, bool>> {
        let closing = self.closing.read().await;
        if *closing {
            return Err(LifecycleError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        Ok(closing)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether this control plane runs sandboxes itself.
    pub fn has_local_node(&self) -> bool {
        self.cluster.local.is_some()
    }

    /// This control plane's own node, for what only it can do (warm pools, snapshots, build
    /// sandboxes it reaches itself).
    fn local(&self) -> LifecycleResult<&Arc<dyn NodeHandle>> {
        self.cluster.local.as_ref().ok_or_else(|| {
            LifecycleError::Unavailable(
                "this control plane runs no sandboxes itself (--no-local-node): template builds \
                 need a control plane with a local node"
                    .into(),
            )
        })
    }

    /// The node that runs a sandbox: this control plane's own, or the joined one it was placed
    /// on (None: that node left the cluster, or there is no local node).
    fn node_of(&self, rec: &SandboxRecord) -> Option<Arc<dyn NodeHandle>> {
        match &rec.node_id {
            None => self.cluster.local.clone(),
            Some(id) => self
                .cluster
                .remote(id)
                .map(|n| Arc::new(n) as Arc<dyn NodeHandle>),
        }
    }

    pub async fn get(&self, id: &SandboxId) -> LifecycleResult<SandboxRecord> {
        self.store
            .get_sandbox(id)
            .await?
            .ok_or(LifecycleError::SandboxNotFound)
    }

    /// The sandbox if it belongs to `tenant`; another tenant's sandbox is "not found", exactly
    /// like one that never existed.
    pub async fn get_owned(&self, id: &SandboxId, tenant: &str) -> LifecycleResult<SandboxRecord> {
        let rec = self.get(id).await?;
        if rec.tenant == tenant {
            Ok(rec)
        } else {
            Err(LifecycleError::SandboxNotFound)
        }
    }

    fn build_sandboxes(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SandboxId, (String, Resources)>> {
        self.build_sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// What the tenant may still start beyond the store's count of its live sandboxes: its
    /// quotas less its build sandboxes (which only this control plane counts).
    fn quota_left(&self, tenant: &str) -> warren_store::Quota {
        let mut left = warren_store::Quota {
            sandboxes: self.limits.max_sandboxes_per_tenant,
            vcpu: self.limits.max_vcpu_per_tenant,
            memory_mb: self.limits.max_memory_mb_per_tenant,
        };
        for (_, r) in self.build_sandboxes().values().filter(|(t, _)| t == tenant) {
            left.sandboxes = left.sandboxes.saturating_sub(1);
            left.vcpu = left.vcpu.saturating_sub(u64::from(r.vcpu));
            left.memory_mb = left.memory_mb.saturating_sub(u64::from(r.memory_mb));
        }
        left
    }

    /// Checks the tenant's quotas for one more sandbox of `resources`, naming the one it would
    /// exceed; call with `admission` held exclusively, or to say why a checked insert refused.
    async fn admit(&self, tenant: &str, resources: Resources) -> LifecycleResult<()> {
        let mut usage: TenantUsage = self.store.tenant_usage(tenant).await?;
        for (_, r) in self.build_sandboxes().values().filter(|(t, _)| t == tenant) {
            usage.sandboxes += 1;
            usage.vcpu += u64::from(r.vcpu);
            usage.memory_mb += u64::from(r.memory_mb);
        }
        crate::limits::admit(&self.limits, tenant, usage, resources)?;
        Ok(())
    }

    /// Records that a sandbox ended, and why when the server ended it.
    async fn record_end(&self, id: &SandboxId, status: SandboxStatus, reason: Option<&str>) {
        if let Err(e) = self.store.end_sandbox(id, status, reason, now()).await {
            tracing::error!(sandbox = %id, error = %e, "cannot record sandbox status");
        }
    }
}
