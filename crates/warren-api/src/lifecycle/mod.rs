//! Sandbox lifecycle: the one place that keeps the store and the node in step. Every sandbox,
//! a user's or a template build step's, is admitted, started, tracked and stopped here. HTTP
//! handlers turn requests into calls on `Lifecycle` and its errors into API errors; they never
//! touch the node's sandboxes themselves.

mod error;
mod readiness;
mod reaper;
mod restore;
mod templates;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use warren_core::{Resources, SandboxId, SandboxStatus};
use warren_node::{AgentLink, Node, NodeEvent, SandboxStart};
use warren_runtime::SandboxSpec;
use warren_store::{NewSandbox, SandboxRecord, Store, TenantUsage};
use warren_wire::control::CreateSandboxRequest;

pub use error::{LifecycleError, LifecycleResult};
pub use templates::TemplateRoots;

use crate::clock::now;
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

/// Who asks: the tenant a new sandbox belongs to and the key that created it.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub tenant: &'a str,
    pub key_id: &'a str,
}

pub struct Lifecycle {
    pub store: Store,
    pub node: Arc<Node>,
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
}

/// A build step's sandbox: reached by the control plane only, stopped with `end_build_sandbox`.
pub struct BuildSandbox {
    pub id: SandboxId,
    pub agent: AgentLink,
}

impl Lifecycle {
    pub fn new(
        store: Store,
        node: Arc<Node>,
        templates: Arc<TemplateRoots>,
        limits: Limits,
        allow_isolation_override: bool,
    ) -> Self {
        Self {
            store,
            node,
            templates,
            limits,
            allow_isolation_override,
            expiry_changed: Notify::new(),
            admission: tokio::sync::Mutex::new(()),
            closing: tokio::sync::RwLock::new(false),
            build_sandboxes: Mutex::new(HashMap::new()),
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
        self.node.has_room().map_err(LifecycleError::Unavailable)?;
        Ok(())
    }

    pub async fn create(
        self: &Arc<Self>,
        req: CreateSandboxRequest,
        who: Requester<'_>,
    ) -> LifecycleResult<SandboxRecord> {
        let wanted = req
            .template_id
            .as_deref()
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
        let template = self
            .store
            .find_template(wanted, who.tenant)
            .await?
            .ok_or_else(|| LifecycleError::TemplateNotFound(wanted.to_owned()))?;
        let run = self.templates.runnable(&template).await?;
        // Per sandbox (when the operator allows it), else the template's tier, else the default.
        if req.isolation.is_some() && !self.allow_isolation_override {
            return Err(LifecycleError::TierChoiceDisabled);
        }
        let tier = self.tier(req.isolation.as_deref().or(run.isolation.as_deref()))?;
        // The template's environment, overridden by the caller's env_vars.
        let mut env_vars = run.env.clone();
        env_vars.extend(req.env_vars.clone().unwrap_or_default());
        check_env(&env_vars)?;

        let closing = self.closing.read().await;
        if *closing {
            return Err(LifecycleError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
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
                    node_id: None,
                    region: None,
                },
                now(),
            )
            .await?;
        drop(admission);
        let start = SandboxStart {
            spec: SandboxSpec {
                id: id.clone(),
                template_name: template.name.clone(),
                layers: run.layers.clone(),
                persistent_upper: None,
                workdir: run.workdir.clone(),
                resources: template.resources,
                internet_access: record.internet_access,
                env_vars,
            },
            tier: Some(tier.to_owned()),
            owner: who.tenant.to_owned(),
            listen: true,
        };
        let started = match self.node.start(start).await {
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
        if let Err(e) = self.wait_ready(&id, &run).await {
            tracing::warn!(sandbox = %id, error = %e, "template start/ready check failed");
            let _ = self.node.destroy(&id).await;
            let reason = format!("it did not become ready: {e}");
            self.record_end(&id, SandboxStatus::Error, Some(&reason))
                .await;
            return Err(LifecycleError::Unavailable(format!(
                "sandbox of template {} did not become ready: {e}",
                template.name
            )));
        }
        // Running, with what a server that restarts from here on needs to take it over.
        let handle = started.handle.to_json();
        let recorded = self
            .store
            .set_sandbox_running(&id, &handle, started.port, now())
            .await;
        if let Err(e) = recorded {
            let _ = self.node.destroy(&id).await;
            return Err(e.into());
        }
        drop(closing);
        if record.expires_at.is_some() {
            self.expiry_changed.notify_one();
        }
        Ok(SandboxRecord {
            status: SandboxStatus::Running,
            ..record
        })
    }

    /// The tier a sandbox asks for, or the node's default.
    fn tier(&self, wanted: Option<&str>) -> LifecycleResult<&'static str> {
        let Some(name) = wanted.filter(|n| !n.is_empty()) else {
            return Ok(self.node.default_tier());
        };
        self.node
            .tier_names()
            .into_iter()
            .find(|t| *t == name)
            .ok_or_else(|| {
                LifecycleError::Invalid(format!(
                    "isolation tier {name:?} is not available on this server (available: {}; see `warren doctor`)",
                    self.node.tier_names().join(", ")
                ))
            })
    }

    async fn wait_ready(&self, id: &SandboxId, run: &TemplateSpec) -> Result<(), String> {
        let agent = self
            .node
            .agent(id)
            .ok_or("the sandbox ended while starting")?;
        readiness::start_and_wait_ready(&agent, run).await
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
        let closing = self.closing.read().await;
        if *closing {
            return Err(LifecycleError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
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
        if let Err(e) = self.node.start(start).await {
            self.end_build_sandbox(build).await;
            return Err(LifecycleError::Unavailable(format!(
                "build sandbox failed to start: {e}"
            )));
        }
        drop(closing);
        match self.node.agent(&id) {
            Some(agent) => Ok(BuildSandbox { agent, ..build }),
            None => {
                self.end_build_sandbox(build).await;
                Err(LifecycleError::Unavailable(
                    "build sandbox ended while starting".into(),
                ))
            }
        }
    }

    /// Stops a build step's sandbox and gives its resources back to the tenant's quota.
    pub async fn end_build_sandbox(&self, build: BuildSandbox) {
        if let Err(e) = self.node.destroy(&build.id).await {
            tracing::warn!(sandbox = %build.id, error = %e, "build sandbox cleanup");
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
        if let Err(e) = self.node.destroy(id).await {
            tracing::error!(sandbox = %id, error = %e, "sandbox teardown incomplete");
        }
        self.record_end(id, final_status, reason).await;
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
        if !allowed || self.node.state(id).is_none() {
            return Err(LifecycleError::InvalidState {
                action,
                status: rec.status,
            });
        }
        let done = if to == SandboxStatus::Paused {
            self.node.pause(id).await
        } else {
            self.node.resume(id).await
        };
        done.map_err(LifecycleError::node("pause/resume failed"))?;
        self.store.set_sandbox_status(id, to, now()).await?;
        rec.status = to;
        Ok(rec)
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
        let Some(reason) = stop_because else {
            return self.node.list().len();
        };
        for id in self.node.list() {
            self.stop(&id, SandboxStatus::Stopped, Some(reason)).await;
        }
        0
    }
}
