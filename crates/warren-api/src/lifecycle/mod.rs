//! Sandbox lifecycle: the one place that keeps the store and the node in step. Every sandbox,
//! a user's or a template build step's, is admitted, started, tracked and stopped here. HTTP
//! handlers turn requests into calls on `Lifecycle` and its errors into API errors; they never
//! touch the node's sandboxes themselves.

mod error;
mod pool;
mod reaper;
mod restore;
mod snapshots;
mod templates;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use warren_core::{Resources, SandboxId, SandboxStatus};
use warren_node::{AgentLink, Node, NodeEvent, SandboxStart};
use warren_runtime::SandboxSpec;
use warren_store::{NewSandbox, SandboxRecord, Store, TenantUsage};
use warren_wire::cluster::{MeasuredUsage, StartRequest, TemplateSource};
use warren_wire::control::CreateSandboxRequest;

pub use error::{LifecycleError, LifecycleResult};
pub use pool::{PoolTarget, POOL_TENANT};
pub use templates::TemplateRoots;

use crate::clock::now;
use crate::cluster::{Cluster, Placement, RemoteNode, TemplateNeed, Wanted};
use crate::limits::Limits;
use crate::template_spec::TemplateSpec;

/// Longest timeout a sandbox may have: a year. Larger values are refused rather than clamped, so
/// that a typo (milliseconds for seconds) is noticed.
pub const MAX_TIMEOUT_SECONDS: i64 = 365 * 86_400;
/// Most environment variables a create may set.
pub const MAX_ENV_VARS: usize = 1000;
/// Largest environment a create may set, JSON-encoded: it reaches the sandbox's agent as one
/// variable, and the kernel refuses any single one over 128 KiB at exec.
pub const MAX_ENV_BYTES: usize = 120 * 1024;

/// Checks `timeout_seconds` of a create or a timeout change.
fn check_timeout(seconds: i64) -> LifecycleResult<()> {
    if seconds <= 0 {
        return Err(LifecycleError::Invalid(
            "timeout_seconds must be a positive number of seconds".into(),
        ));
    }
    if seconds > MAX_TIMEOUT_SECONDS {
        return Err(LifecycleError::Invalid(format!(
            "timeout_seconds may be at most {MAX_TIMEOUT_SECONDS} (365 days); got {seconds}"
        )));
    }
    Ok(())
}

/// Checks the environment a sandbox starts with (the template's plus the caller's).
fn check_env(env: &std::collections::BTreeMap<String, String>) -> LifecycleResult<()> {
    if env
        .keys()
        .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        || env.values().any(|v| v.contains('\0'))
    {
        return Err(LifecycleError::Invalid(
            "env_vars: names must be non-empty without '=' or NUL; values without NUL".into(),
        ));
    }
    let bytes = serde_json::to_string(env).map_or(usize::MAX, |j| j.len());
    if env.len() > MAX_ENV_VARS || bytes > MAX_ENV_BYTES {
        return Err(LifecycleError::Invalid(format!(
            "env_vars: at most {MAX_ENV_VARS} variables and {} KiB in all (as JSON); got {} \
             variables, {} KiB",
            MAX_ENV_BYTES / 1024,
            env.len(),
            bytes.div_ceil(1024)
        )));
    }
    Ok(())
}

/// Metadata is for finding sandboxes again, not for storing data.
fn check_metadata(m: &std::collections::BTreeMap<String, String>) -> LifecycleResult<()> {
    const MAX_ENTRIES: usize = 64;
    const MAX_KEY: usize = 256;
    const MAX_VALUE: usize = 4096;
    if m.len() > MAX_ENTRIES
        || m.iter()
            .any(|(k, v)| k.is_empty() || k.len() > MAX_KEY || v.len() > MAX_VALUE)
    {
        return Err(LifecycleError::Invalid(format!(
            "metadata: at most {MAX_ENTRIES} entries, keys of 1 to {MAX_KEY} bytes, values up to \
             {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

/// The stored egress policy of a sandbox, as rules for its node.
fn egress_rules(
    record: &SandboxRecord,
) -> LifecycleResult<Option<warren_runtime::host::egress::EgressRules>> {
    let Some(json) = record.egress.as_deref() else {
        return Ok(None);
    };
    let policy: warren_wire::control::EgressPolicy =
        serde_json::from_str(json).map_err(|e| LifecycleError::Invalid(e.to_string()))?;
    warren_runtime::host::egress::EgressRules::parse(&policy.allow_out, &policy.deny_out)
        .map(Some)
        .map_err(LifecycleError::Invalid)
}

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
    /// Serialises quota check + insert, so concurrent creates cannot overshoot a quota together.
    admission: tokio::sync::Mutex<()>,
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
}

/// A build step's sandbox: reached by the control plane only, stopped with `end_build_sandbox`.
pub struct BuildSandbox {
    pub id: SandboxId,
    pub agent: AgentLink,
}

impl Lifecycle {
    pub fn new(
        store: Store,
        cluster: Arc<Cluster>,
        templates: Arc<TemplateRoots>,
        limits: Limits,
        allow_isolation_override: bool,
        snapshots_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            store,
            cluster,
            templates,
            limits,
            allow_isolation_override,
            expiry_changed: Notify::new(),
            admission: tokio::sync::Mutex::new(()),
            closing: tokio::sync::RwLock::new(false),
            build_sandboxes: Mutex::new(HashMap::new()),
            pools: pool::Pools::default(),
            snapshots_dir,
        }
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

    /// This control plane's own node, for what only it can do (build sandboxes it reaches itself).
    fn local(&self) -> LifecycleResult<&Arc<Node>> {
        self.cluster.local.as_ref().ok_or_else(|| {
            LifecycleError::Unavailable(
                "this control plane runs no sandboxes itself (--no-local-node): template builds \
                 need a control plane with a local node"
                    .into(),
            )
        })
    }

    /// Where a sandbox runs: this control plane's node, or a joined one.
    fn node_of(&self, rec: &SandboxRecord) -> Option<NodeRef<'_>> {
        match &rec.node_id {
            None => self.cluster.local.as_ref().map(NodeRef::Local),
            Some(id) => self.cluster.remote(id).map(NodeRef::Remote),
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

    /// Checks the tenant's quotas for one more sandbox of `resources`; call with `admission` held.
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

    pub async fn create(
        self: &Arc<Self>,
        req: CreateSandboxRequest,
        who: Requester<'_>,
    ) -> LifecycleResult<SandboxRecord> {
        let _under_way = self.pools.create_under_way();
        // A copy of a snapshot runs its source's template with the snapshot's layer on top.
        let snapshot = match req.snapshot_id.as_deref().filter(|s| !s.is_empty()) {
            Some(sid) => Some(self.owned_snapshot(sid, who.tenant).await?),
            None => None,
        };
        let wanted = snapshot
            .as_ref()
            .map(|s| s.template_id.as_str())
            .or(req.template_id.as_deref())
            .or(req.template_name.as_deref())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                LifecycleError::Invalid("template_name or template_id is required".into())
            })?;
        if let Some(t) = req.timeout_seconds {
            check_timeout(t)?;
        }
        if let Some(env) = &req.env_vars {
            check_env(env)?;
        }
        let metadata = match &req.metadata {
            Some(m) if !m.is_empty() => {
                check_metadata(m)?;
                Some(serde_json::to_string(m).map_err(|e| LifecycleError::Invalid(e.to_string()))?)
            }
            _ => None,
        };
        let egress = match &req.network {
            Some(p) if !(p.allow_out.is_empty() && p.deny_out.is_empty()) => {
                crate::egress::check(p).map_err(LifecycleError::Invalid)?;
                Some(serde_json::to_string(p).map_err(|e| LifecycleError::Invalid(e.to_string()))?)
            }
            _ => None,
        };
        let template = self
            .store
            .find_template(wanted, who.tenant)
            .await?
            .ok_or_else(|| LifecycleError::TemplateNotFound(wanted.to_owned()))?;
        // Per sandbox (when the operator allows it), else the template's tier, else the default.
        if req.isolation.is_some() && !self.allow_isolation_override {
            return Err(LifecycleError::TierChoiceDisabled);
        }
        let stored_spec = match (&template.tenant, &template.spec) {
            (Some(_), Some(json)) => serde_json::from_str::<TemplateSpec>(json).ok(),
            _ => None,
        };
        let template_tier = match &snapshot {
            Some(snap) => {
                if req
                    .isolation
                    .as_deref()
                    .is_some_and(|t| t != snap.isolation)
                {
                    return Err(LifecycleError::Invalid(format!(
                        "snapshot {} runs on the {} tier",
                        snap.id, snap.isolation
                    )));
                }
                Some(snap.isolation.clone())
            }
            None => stored_spec.as_ref().and_then(|s| s.isolation.clone()),
        };
        let wanted_tier = self.tier(req.isolation.as_deref().or(template_tier.as_deref()))?;
        let region = req.region.as_deref().filter(|r| !r.is_empty());
        let layer_keys: Vec<String> = stored_spec
            .as_ref()
            .map(|s| crate::cluster::layer_keys(&s.layers))
            .unwrap_or_default();
        let placement = if snapshot.is_some() {
            // Its layer is on this machine.
            self.local()?;
            Placement::Local
        } else {
            self.cluster
                .place(&Wanted {
                    tier: wanted_tier.as_deref(),
                    region,
                    memory_mb: template.resources.memory_mb,
                    template: if template.tenant.is_some() {
                        TemplateNeed::Layers(&layer_keys)
                    } else {
                        TemplateNeed::Builtin(&template.name)
                    },
                })
                .map_err(|why| {
                    crate::metrics::count_placement_failure();
                    LifecycleError::Unavailable(why)
                })?
        };
        let (run, tier, node_id, node_region) = match &placement {
            Placement::Local => {
                if let Some(local) = &self.cluster.local {
                    local.has_room().map_err(LifecycleError::Unavailable)?;
                }
                let run = match &snapshot {
                    Some(snap) => snapshots::snapshot_spec(snap)?,
                    None => self.templates.runnable(&template).await?,
                };
                let tier = wanted_tier.unwrap_or_else(|| self.cluster.default_tier());
                (run, tier, None, self.cluster.local_region.clone())
            }
            Placement::Remote(node) => {
                let run = match (&template.tenant, stored_spec) {
                    (Some(_), Some(spec)) => spec,
                    (Some(_), None) => {
                        return Err(LifecycleError::TemplateNotReady {
                            name: template.name.clone(),
                            status: template.status.as_str(),
                        })
                    }
                    (None, _) => TemplateSpec::default(),
                };
                let tier = wanted_tier
                    .or_else(|| node.report.tiers.first().cloned())
                    .unwrap_or_else(|| "namespaces".into());
                let region = node.region().unwrap_or("default").to_owned();
                (run, tier, Some(node.record.id.clone()), region)
            }
        };
        let tier = tier.as_str();
        // The template's environment, overridden by the caller's env_vars.
        let mut env_vars = run.env.clone();
        env_vars.extend(req.env_vars.clone().unwrap_or_default());
        check_env(&env_vars)?;
        if matches!(placement, Placement::Local) && egress.is_none() && snapshot.is_none() {
            let claimed = self
                .claim_pooled(&template, tier, &req, who, metadata.as_deref())
                .await?;
            if let Some(record) = claimed {
                return Ok(record);
            }
        }

        let closing = self.starts_allowed().await?;
        let id = SandboxId::generate();
        let admission = self.admission.lock().await;
        self.admit(who.tenant, template.resources).await?;
        let record = self
            .store
            .insert_sandbox(
                NewSandbox {
                    id: &id,
                    template_id: &template.id,
                    template_name: &template.name,
                    resources: template.resources,
                    internet_access: req.internet_access.unwrap_or(true),
                    timeout_seconds: req.timeout_seconds,
                    key_id: Some(who.key_id),
                    tenant: who.tenant,
                    isolation: tier,
                    node_id: node_id.as_deref(),
                    region: Some(&node_region),
                    metadata: metadata.as_deref(),
                    egress: egress.as_deref(),
                    pause_on_timeout: req.auto_pause.unwrap_or(false),
                    snapshot_id: snapshot.as_ref().map(|s| s.id.as_str()),
                },
                now(),
            )
            .await?;
        drop(admission);
        let started = match &placement {
            Placement::Local => {
                self.start_local(
                    &id,
                    &template.name,
                    &run,
                    &record,
                    env_vars,
                    tier,
                    who.tenant,
                )
                .await
            }
            Placement::Remote(node) => {
                let remote = self.cluster.remote(&node.record.id).ok_or_else(|| {
                    LifecycleError::Unavailable(format!("node {} left the cluster", node.record.id))
                })?;
                let ready = run.ready_probe().map_err(LifecycleError::Invalid)?;
                let source = if template.tenant.is_some() {
                    TemplateSource::Layers {
                        keys: layer_keys.clone(),
                    }
                } else {
                    TemplateSource::Builtin {
                        name: template.name.clone(),
                    }
                };
                let req = StartRequest {
                    id: id.to_string(),
                    template_name: template.name.clone(),
                    source,
                    workdir: run.workdir.clone(),
                    vcpu: template.resources.vcpu,
                    memory_mb: template.resources.memory_mb,
                    disk_mb: template.resources.disk_mb,
                    internet_access: record.internet_access,
                    egress: record
                        .egress
                        .as_deref()
                        .and_then(|e| serde_json::from_str(e).ok()),
                    env_vars,
                    tier: Some(tier.to_owned()),
                    owner: who.tenant.to_owned(),
                    start_cmd: run.start_cmd.clone(),
                    ready,
                };
                remote
                    .start(&req)
                    .await
                    .map(|r| (r.handle, r.port))
                    .map_err(|e| e.to_string())
            }
        };
        let (handle, port) = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "sandbox failed to start");
                let reason = format!("it failed to start: {e}");
                self.record_end(&id, SandboxStatus::Error, Some(&reason))
                    .await;
                return Err(LifecycleError::Unavailable(format!(
                    "sandbox failed to start: {e}"
                )));
            }
        };
        // Running, with what a server that restarts from here on needs to take it over.
        let recorded = self
            .store
            .set_sandbox_running(&id, &handle, port, now())
            .await;
        if let Err(e) = recorded {
            self.destroy_on(&record, &id).await;
            return Err(e.into());
        }
        drop(closing);
        if record.expires_at.is_some() {
            self.expiry_changed.notify_one();
        }
        Ok(SandboxRecord {
            status: SandboxStatus::Running,
            listen_port: port,
            runtime_handle: Some(handle),
            ..record
        })
    }

    /// The tier a sandbox asks for (None: the default of the node it goes to), checked against
    /// the tiers the cluster runs.
    fn tier(&self, wanted: Option<&str>) -> LifecycleResult<Option<String>> {
        let Some(name) = wanted.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        if self.cluster.has_tier(name) {
            return Ok(Some(name.to_owned()));
        }
        Err(LifecycleError::Invalid(format!(
            "isolation tier {name:?} is not available on this server (available: {}; see `warren doctor`)",
            self.cluster.tier_names().join(", ")
        )))
    }

    /// Starts a sandbox on this control plane's own node and waits for its template's ready
    /// check. Returns its handle (JSON) and port.
    #[allow(clippy::too_many_arguments)]
    async fn start_local(
        &self,
        id: &SandboxId,
        template_name: &str,
        run: &TemplateSpec,
        record: &SandboxRecord,
        env_vars: std::collections::BTreeMap<String, String>,
        tier: &str,
        owner: &str,
    ) -> Result<(String, Option<u16>), String> {
        let node = self.local().map_err(|e| e.to_string())?;
        let start = SandboxStart {
            spec: SandboxSpec {
                id: id.clone(),
                template_name: template_name.to_owned(),
                layers: run.layers.clone(),
                persistent_upper: None,
                workdir: run.workdir.clone(),
                resources: record.resources,
                internet_access: record.internet_access,
                egress: egress_rules(record).map_err(|e| e.to_string())?,
                env_vars,
                saved_state: run.saved_state.clone(),
            },
            tier: Some(tier.to_owned()),
            owner: owner.to_owned(),
            listen: true,
        };
        let started = node.start(start).await.map_err(|e| e.to_string())?;
        // A copy resumed with its memory runs its source's start command already.
        let ready = if run.saved_state.is_some() {
            Ok(())
        } else {
            self.wait_ready(node, id, run).await
        };
        if let Err(e) = ready {
            tracing::warn!(sandbox = %id, error = %e, "template start/ready check failed");
            let _ = node.destroy(id).await;
            return Err(format!("it did not become ready: {e}"));
        }
        Ok((started.handle.to_json(), started.port))
    }

    /// Stops a sandbox on whichever node runs it. A node that cannot be reached stops it when
    /// it reports again (the heartbeat answer names it).
    async fn destroy_on(&self, rec: &SandboxRecord, id: &SandboxId) {
        match self.node_of(rec) {
            Some(NodeRef::Local(node)) => {
                if let Err(e) = node.destroy(id).await {
                    tracing::error!(sandbox = %id, error = %e, "sandbox teardown incomplete");
                }
            }
            Some(NodeRef::Remote(node)) => {
                if !self.cluster.is_healthy(&node.id) {
                    // Silent node: do not wait for it. Its next report, once it is back, gets
                    // the answer to stop the sandbox.
                    tracing::info!(sandbox = %id, node = %node.id, "the sandbox's node is not reporting; it stops the sandbox when it is back");
                    return;
                }
                if let Err(e) = node.destroy(id).await {
                    tracing::warn!(sandbox = %id, node = %node.id, error = %e, "node did not stop the sandbox now; it will when it reports again");
                }
            }
            None => {}
        }
    }

    async fn wait_ready(
        &self,
        node: &Node,
        id: &SandboxId,
        run: &TemplateSpec,
    ) -> Result<(), String> {
        let agent = node.agent(id).ok_or("the sandbox ended while starting")?;
        let ready = run.ready_probe()?;
        warren_node::readiness::start_and_wait_ready(
            &agent,
            run.start_cmd.as_deref(),
            ready.as_ref(),
        )
        .await
    }

    /// Records that a sandbox ended, and why when the server ended it.
    async fn record_end(&self, id: &SandboxId, status: SandboxStatus, reason: Option<&str>) {
        if let Err(e) = self.store.end_sandbox(id, status, reason, now()).await {
            tracing::error!(sandbox = %id, error = %e, "cannot record sandbox status");
        }
    }

    /// Starts a sandbox for one template build step: admitted against `tenant`'s quotas like any
    /// other, tracked by the node (so shutdown stops it), never listed to users.
    pub async fn start_build_sandbox(
        &self,
        tenant: &str,
        spec: SandboxSpec,
    ) -> LifecycleResult<BuildSandbox> {
        let closing = self.starts_allowed().await?;
        let resources = spec.resources;
        let id = spec.id.clone();
        {
            let _admission = self.admission.lock().await;
            self.admit(tenant, resources).await?;
            self.build_sandboxes()
                .insert(id.clone(), (tenant.to_owned(), resources));
        }
        let build = BuildSandbox {
            id: id.clone(),
            agent: AgentLink::new(std::path::PathBuf::new()),
        };
        // Build steps keep their writable layer on disk: only the namespace tier offers that.
        let start = SandboxStart {
            spec,
            tier: Some("namespaces".into()),
            owner: tenant.to_owned(),
            listen: false,
        };
        let node = self.local()?;
        if let Err(e) = node.start(start).await {
            self.end_build_sandbox(build).await;
            return Err(LifecycleError::Unavailable(format!(
                "build sandbox failed to start: {e}"
            )));
        }
        drop(closing);
        match node.agent(&id) {
            Some(agent) => Ok(BuildSandbox { agent, ..build }),
            None => {
                self.end_build_sandbox(build).await;
                Err(LifecycleError::Unavailable(
                    "build sandbox ended while starting".into(),
                ))
            }
        }
    }

    /// Runs one RUN step of a build on a joined node (this control plane has no node of its own):
    /// admitted against the tenant's quotas like a local build sandbox, placed like a sandbox of
    /// the step's layers. The step's layer `key` stays on that node; other nodes fetch it through
    /// a control plane. Returns the step's exit code.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_remote_build_step(
        &self,
        tenant: &str,
        layers: &[std::path::PathBuf],
        key: &str,
        command: &str,
        env: &std::collections::BTreeMap<String, String>,
        workdir: Option<&str>,
        resources: Resources,
        line: impl FnMut(String),
    ) -> LifecycleResult<i64> {
        let keys = crate::cluster::layer_keys(layers);
        let placement = self
            .cluster
            .place(&Wanted {
                tier: Some("namespaces"),
                region: None,
                memory_mb: resources.memory_mb,
                template: TemplateNeed::Layers(&keys),
            })
            .map_err(LifecycleError::Unavailable)?;
        let Placement::Remote(node) = placement else {
            return Err(LifecycleError::Unavailable(
                "no node to run the build step on".into(),
            ));
        };
        let remote = self.cluster.remote(&node.record.id).ok_or_else(|| {
            LifecycleError::Unavailable(format!("node {} left the cluster", node.record.id))
        })?;
        let slot = SandboxId::generate();
        {
            let _admission = self.admission.lock().await;
            self.admit(tenant, resources).await?;
            self.build_sandboxes()
                .insert(slot.clone(), (tenant.to_owned(), resources));
        }
        let req = warren_wire::cluster::BuildStepRequest {
            layers: keys,
            key: key.to_owned(),
            command: command.to_owned(),
            env: env.clone(),
            workdir: workdir.map(str::to_owned),
            vcpu: resources.vcpu,
            memory_mb: resources.memory_mb,
            disk_mb: resources.disk_mb,
            owner: tenant.to_owned(),
        };
        let result = remote.build_step(&req, line).await;
        self.build_sandboxes().remove(&slot);
        result.map_err(LifecycleError::Unavailable)
    }

    /// Stops a build step's sandbox and gives its resources back to the tenant's quota.
    pub async fn end_build_sandbox(&self, build: BuildSandbox) {
        if let Some(node) = &self.cluster.local {
            if let Err(e) = node.destroy(&build.id).await {
                tracing::warn!(sandbox = %build.id, error = %e, "build sandbox cleanup");
            }
        }
        self.build_sandboxes().remove(&build.id);
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
                self.destroy_on(&rec, id).await;
                if let Err(e) = self.store.forget_sandbox(id).await {
                    tracing::error!(sandbox = %id, error = %e, "cannot remove a warm sandbox's record");
                }
                return;
            }
            Ok(Some(rec)) => self.destroy_on(&rec, id).await,
            // A build step's sandbox (never in the store), or the store is unreachable.
            _ => {
                if let Some(node) = &self.cluster.local {
                    if let Err(e) = node.destroy(id).await {
                        tracing::error!(sandbox = %id, error = %e, "sandbox teardown incomplete");
                    }
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
        let (allowed, action) = match to {
            SandboxStatus::Paused => (rec.status.can_pause(), "pause"),
            _ => (rec.status.can_resume(), "resume"),
        };
        let invalid = LifecycleError::InvalidState {
            action,
            status: rec.status,
        };
        if !allowed {
            return Err(invalid);
        }
        let pause = to == SandboxStatus::Paused;
        match self.node_of(&rec) {
            None => return Err(invalid),
            Some(NodeRef::Local(node)) => {
                if node.state(id).is_none() {
                    return Err(invalid);
                }
                let done = if pause {
                    node.pause(id).await
                } else {
                    node.resume(id).await
                };
                done.map_err(LifecycleError::node("pause/resume failed"))?;
            }
            Some(NodeRef::Remote(node)) => {
                if !self.cluster.is_healthy(&node.id) {
                    return Err(LifecycleError::Unavailable(format!(
                        "the sandbox's node {} is not reporting; retry when it is back",
                        node.id
                    )));
                }
                let done = if pause {
                    node.pause(id).await
                } else {
                    node.resume(id).await
                };
                match done {
                    Ok(()) => {}
                    Err(e) if e.not_running() => return Err(invalid),
                    Err(e) => return Err(LifecycleError::Unavailable(e.to_string())),
                }
            }
        }
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
        match self.node_of(rec) {
            None => Err(invalid),
            Some(NodeRef::Local(node)) => node.measured_usage(&rec.id).await.ok_or(invalid),
            Some(NodeRef::Remote(node)) => match node.usage(&rec.id).await {
                Ok(u) => Ok(u),
                Err(e) if e.not_running() => Err(invalid),
                Err(e) => Err(LifecycleError::Unavailable(e.to_string())),
            },
        }
    }

    pub async fn set_timeout(
        &self,
        id: &SandboxId,
        seconds: i64,
    ) -> LifecycleResult<SandboxRecord> {
        check_timeout(seconds)?;
        let rec = self.get(id).await?;
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
            return local.list().len();
        };
        for id in local.list() {
            self.stop(&id, SandboxStatus::Stopped, Some(reason)).await;
        }
        0
    }
}

/// The node that runs a sandbox.
enum NodeRef<'a> {
    Local(&'a Arc<Node>),
    Remote(RemoteNode),
}
