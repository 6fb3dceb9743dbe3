//! Sandbox lifecycle: the one place that keeps the store, the isolation driver and the proxy in
//! step. HTTP handlers translate requests into calls here and never touch the driver themselves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::Notify;
use warren_core::{SandboxId, SandboxStatus};
use warren_runtime::templates::{builtin_recipes, Recipe, TemplateCache};
use warren_runtime::{AnyDriver, IsolationDriver, SandboxSpec};
use warren_store::{NewSandbox, SandboxRecord, Store, TemplateStatus};
use warren_wire::control::CreateSandboxRequest;

use crate::clock::now;
use crate::error::{ApiError, ApiResult};
use crate::proxy::Target;

/// How long a create waits for a template that is still being built before answering 503.
const TEMPLATE_WAIT: Duration = Duration::from_secs(40);

/// A template resolved to what the driver needs.
struct Runnable {
    spec: crate::builds::spec::TemplateSpec,
}

struct Live {
    driver: AnyDriver,
    target: Arc<Target>,
    status: SandboxStatus,
    listener: Option<tokio::task::JoinHandle<()>>,
    port: Option<u16>,
}

pub struct SandboxService {
    pub store: Store,
    /// The default tier; also runs build sandboxes.
    pub driver: AnyDriver,
    /// Every tier this server runs, the default first.
    pub tiers: Vec<AnyDriver>,
    pub templates: TemplateCache,
    live: Mutex<HashMap<SandboxId, Live>>,
    /// Wakes the reaper when an expiry moves earlier.
    pub expiry_changed: Notify,
    /// Templates whose build is under way (single flight per template).
    building: Mutex<HashMap<String, Arc<Notify>>>,
    pub limits: crate::limits::Limits,
    /// Whether a create request may pick its own isolation tier.
    pub allow_isolation_override: bool,
    /// Serialises quota check + insert, so concurrent creates cannot overshoot a quota together.
    admission: tokio::sync::Mutex<()>,
    /// Held (read) by every create from admission until its sandbox is live, so shutdown (write)
    /// waits for starts under way instead of missing them; true once shutdown has begun.
    closing: tokio::sync::RwLock<bool>,
}

impl SandboxService {
    pub fn new(
        store: Store,
        tiers: Vec<AnyDriver>,
        templates: TemplateCache,
        limits: crate::limits::Limits,
    ) -> Self {
        Self {
            store,
            driver: tiers[0].clone(),
            tiers,
            templates,
            live: Mutex::new(HashMap::new()),
            expiry_changed: Notify::new(),
            building: Mutex::new(HashMap::new()),
            limits,
            allow_isolation_override: true,
            admission: tokio::sync::Mutex::new(()),
            closing: tokio::sync::RwLock::new(false),
        }
    }

    /// The sandbox if it belongs to `tenant`; another tenant's sandbox is "not found", exactly
    /// like one that never existed.
    pub async fn get_owned(&self, id: &SandboxId, tenant: &str) -> ApiResult<SandboxRecord> {
        let rec = self.get(id).await?;
        if rec.tenant == tenant {
            Ok(rec)
        } else {
            Err(ApiError::sandbox_not_found())
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn target(&self, id: &SandboxId) -> Option<Arc<Target>> {
        self.live().get(id).map(|l| l.target.clone())
    }

    /// The tier that runs template build steps (its writable layer can be kept on disk).
    pub fn build_driver(&self) -> &AnyDriver {
        self.tiers
            .iter()
            .find(|d| matches!(d, AnyDriver::Namespaces(_)))
            .unwrap_or(&self.driver)
    }

    fn driver_of(&self, id: &SandboxId) -> AnyDriver {
        self.live()
            .get(id)
            .map_or_else(|| self.driver.clone(), |l| l.driver.clone())
    }

    /// The tier a sandbox asks for, or the server's default.
    fn tier(&self, wanted: Option<&str>) -> ApiResult<AnyDriver> {
        let Some(name) = wanted.filter(|n| !n.is_empty()) else {
            return Ok(self.driver.clone());
        };
        self.tiers
            .iter()
            .find(|d| d.name() == name)
            .cloned()
            .ok_or_else(|| {
                let have: Vec<&str> = self.tiers.iter().map(|d| d.name()).collect();
                ApiError::bad_request(format!(
                    "isolation tier {name:?} is not available on this server (available: {}; see `warren doctor`)",
                    have.join(", ")
                ))
            })
    }

    pub fn status_of(&self, id: &SandboxId) -> Option<SandboxStatus> {
        self.live().get(id).map(|l| l.status)
    }

    pub fn port_of(&self, id: &SandboxId) -> Option<u16> {
        self.live().get(id).and_then(|l| l.port)
    }

    pub fn recipe(name: &str) -> Option<Recipe> {
        builtin_recipes().into_iter().find(|r| r.name == name)
    }

    /// Builds a template's root file system if the cache lacks it; concurrent callers share one
    /// build. Progress goes to the log.
    pub async fn ensure_template(self: &Arc<Self>, recipe: &Recipe) -> Result<PathBuf, String> {
        if self.templates.is_ready(recipe) {
            return Ok(self.templates.rootfs(recipe.name));
        }
        let (notify, leader) = {
            let mut building = self.building.lock().unwrap_or_else(|p| p.into_inner());
            match building.get(recipe.name) {
                Some(n) => (n.clone(), false),
                None => {
                    let n = Arc::new(Notify::new());
                    building.insert(recipe.name.to_owned(), n.clone());
                    (n, true)
                }
            }
        };
        if !leader {
            let notified = notify.notified();
            if self.templates.is_ready(recipe) {
                return Ok(self.templates.rootfs(recipe.name));
            }
            notified.await;
            return if self.templates.is_ready(recipe) {
                Ok(self.templates.rootfs(recipe.name))
            } else {
                Err("template build failed; see the server log".into())
            };
        }
        let _ = self
            .store
            .set_template_status(recipe.id, TemplateStatus::Building, None, now())
            .await;
        let progress = |line: String| tracing::info!(target: "warren::template", "{line}");
        let result = self.templates.ensure(recipe, &progress).await;
        let (status, err) = match &result {
            Ok(_) => (TemplateStatus::Active, None),
            Err(e) => (TemplateStatus::Failed, Some(e.to_string())),
        };
        if let Some(e) = &err {
            tracing::error!(template = recipe.name, error = %e, "template build failed");
        }
        let _ = self
            .store
            .set_template_status(recipe.id, status, err.as_deref(), now())
            .await;
        self.building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(recipe.name);
        notify.notify_waiters();
        result.map_err(|e| e.to_string())
    }

    /// How to run a template: a built-in one is built on first use; a built one must be active.
    async fn runnable(
        self: &Arc<Self>,
        template: &warren_store::TemplateRecord,
    ) -> ApiResult<Runnable> {
        if template.tenant.is_some() {
            return match (&template.status, &template.spec) {
                (TemplateStatus::Active, Some(json)) => {
                    let spec: crate::builds::spec::TemplateSpec = serde_json::from_str(json)
                        .map_err(|e| ApiError::internal("template spec", e))?;
                    if let Some(missing) = spec.layers.iter().find(|l| !l.exists()) {
                        return Err(ApiError::unavailable(format!(
                            "template {} lost a layer ({}); rebuild it",
                            template.name,
                            missing.display()
                        )));
                    }
                    Ok(Runnable { spec })
                }
                (status, _) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "TEMPLATE_NOT_READY",
                    format!(
                        "template {} is {}; wait for its build to finish",
                        template.name,
                        status.as_str()
                    ),
                )),
            };
        }
        let recipe = Self::recipe(&template.name).ok_or_else(|| {
            ApiError::unavailable(format!(
                "template {} has no root file system on this server",
                template.name
            ))
        })?;
        match tokio::time::timeout(TEMPLATE_WAIT, self.ensure_template(&recipe)).await {
            Ok(Ok(rootfs)) => Ok(Runnable {
                spec: crate::builds::spec::TemplateSpec {
                    layers: vec![rootfs],
                    ..Default::default()
                },
            }),
            Ok(Err(e)) => Err(ApiError::unavailable(format!(
                "template {} could not be built: {e}",
                template.name
            ))),
            Err(_) => {
                // The build goes on in the background (the future above is dropped, not the build
                // when another caller leads it); say so instead of hanging past client timeouts.
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.ensure_template(&recipe).await;
                });
                Err(ApiError::unavailable(format!(
                    "template {} is still being built on first use (this takes a few minutes once); retry shortly",
                    template.name
                )))
            }
        }
    }

    /// Runs the template's start command and waits for its ready check, if it has them.
    async fn start_and_wait_ready(
        socket: &std::path::Path,
        spec: &crate::builds::spec::TemplateSpec,
    ) -> Result<(), String> {
        if let Some(cmd) = &spec.start_cmd {
            let body = serde_json::json!({ "command": "bash", "args": ["-c", cmd], "timeout": 365 * 86_400 });
            crate::agent_client::call(
                socket,
                axum::http::Method::POST,
                "/commands/background",
                Some(body),
            )
            .await?;
        }
        let Some(ready) = &spec.ready_cmd else {
            return Ok(());
        };
        let probe = ready.probe()?;
        let deadline = std::time::Instant::now() + Duration::from_millis(ready.timeout_ms());
        loop {
            if let Ok((0, _, _)) = crate::agent_client::run(socket, &probe, 10).await {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "ready check ({}) did not pass within {} ms",
                    ready.kind,
                    ready.timeout_ms()
                ));
            }
            tokio::time::sleep(Duration::from_millis(ready.interval_ms().min(1000))).await;
        }
    }

    pub async fn create(
        self: &Arc<Self>,
        req: CreateSandboxRequest,
        caller: &crate::auth::Caller,
    ) -> ApiResult<SandboxRecord> {
        let wanted = req
            .template_id
            .as_deref()
            .or(req.template_name.as_deref())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("template_name or template_id is required"))?;
        if let Some(t) = req.timeout_seconds {
            if t <= 0 {
                return Err(ApiError::bad_request(
                    "timeout_seconds must be a positive number of seconds",
                ));
            }
        }
        if let Some(env) = &req.env_vars {
            if env
                .keys()
                .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
                || env.values().any(|v| v.contains('\0'))
            {
                return Err(ApiError::bad_request(
                    "env_vars: names must be non-empty without '=' or NUL; values without NUL",
                ));
            }
        }
        let template = self
            .store
            .find_template(wanted, &caller.tenant)
            .await?
            .ok_or_else(|| ApiError::template_not_found(wanted))?;
        let run = self.runnable(&template).await?;
        // Per sandbox (when the operator allows it), else the template's tier, else the default.
        if req.isolation.is_some() && !self.allow_isolation_override {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "choosing the isolation tier per sandbox is disabled on this server",
            ));
        }
        let driver = self.tier(req.isolation.as_deref().or(run.spec.isolation.as_deref()))?;

        let closing = self.closing.read().await;
        if *closing {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        let id = SandboxId::generate();
        let admission = self.admission.lock().await;
        let usage = self.store.tenant_usage(&caller.tenant).await?;
        crate::limits::admit(&self.limits, &caller.tenant, usage, template.resources)?;
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
                    key_id: Some(&caller.key_id),
                    tenant: &caller.tenant,
                    isolation: driver.name(),
                },
                now(),
            )
            .await?;
        drop(admission);
        // The template's environment, overridden by the caller's env_vars.
        let mut env_vars = run.spec.env.clone();
        env_vars.extend(req.env_vars.unwrap_or_default());
        let spec = SandboxSpec {
            id: id.clone(),
            template_name: template.name.clone(),
            layers: run.spec.layers.clone(),
            persistent_upper: None,
            workdir: run.spec.workdir.clone(),
            resources: template.resources,
            internet_access: record.internet_access,
            env_vars,
        };
        let started = match driver.start(&spec).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "sandbox failed to start");
                let _ = self
                    .store
                    .set_sandbox_status(&id, SandboxStatus::Error, now())
                    .await;
                return Err(ApiError::unavailable(format!(
                    "sandbox failed to start: {e}"
                )));
            }
        };
        if driver.has_own_clock() {
            Self::set_sandbox_clock(&id, &started.agent_socket).await;
        }
        if let Err(e) = Self::start_and_wait_ready(&started.agent_socket, &run.spec).await {
            tracing::warn!(sandbox = %id, error = %e, "template start/ready check failed");
            let _ = driver.destroy(&id).await;
            let _ = self
                .store
                .set_sandbox_status(&id, SandboxStatus::Error, now())
                .await;
            return Err(ApiError::unavailable(format!(
                "sandbox of template {} did not become ready: {e}",
                template.name
            )));
        }
        let target = Arc::new(Target {
            agent_socket: started.agent_socket,
            netns: Some(PathBuf::from(format!("/run/netns/warren-{id}"))),
            port_host: started.port_host,
            tenant: caller.tenant.clone(),
        });
        self.live().insert(
            id.clone(),
            Live {
                driver: driver.clone(),
                target,
                status: SandboxStatus::Running,
                listener: None,
                port: None,
            },
        );
        self.store
            .set_sandbox_status(&id, SandboxStatus::Running, now())
            .await?;
        if record.expires_at.is_some() {
            self.expiry_changed.notify_one();
        }
        let me = self.clone();
        let watched = id.clone();
        let exited = started.exited;
        tokio::spawn(async move {
            let code = exited.await.unwrap_or(-1);
            me.on_exit(&watched, code).await;
        });
        let mut record = record;
        record.status = SandboxStatus::Running;
        Ok(record)
    }

    /// Attaches the local-mode listener (done by the HTTP layer, which owns the proxy).
    pub fn attach_listener(&self, id: &SandboxId, port: u16, handle: tokio::task::JoinHandle<()>) {
        if let Some(l) = self.live().get_mut(id) {
            l.port = Some(port);
            l.listener = Some(handle);
        } else {
            handle.abort();
        }
    }

    /// The sandbox's init died without being asked to (OOM of the agent, `kill 1`...).
    async fn on_exit(&self, id: &SandboxId, code: i32) {
        if self.live().contains_key(id) {
            tracing::warn!(sandbox = %id, code, "sandbox exited on its own; cleaning up");
            self.stop(id, SandboxStatus::Error).await;
        }
    }

    /// Stops a live sandbox and removes all its traces; records `final_status`.
    pub async fn stop(&self, id: &SandboxId, final_status: SandboxStatus) {
        let live = self.live().remove(id);
        if let Some(l) = &live {
            if let Some(h) = &l.listener {
                h.abort();
            }
        }
        let driver = live
            .as_ref()
            .map_or_else(|| self.driver.clone(), |l| l.driver.clone());
        if let Err(e) = driver.destroy(id).await {
            tracing::error!(sandbox = %id, error = %e, "sandbox teardown incomplete");
        }
        if let Err(e) = self.store.set_sandbox_status(id, final_status, now()).await {
            tracing::error!(sandbox = %id, error = %e, "cannot record sandbox status");
        }
    }

    pub async fn get(&self, id: &SandboxId) -> ApiResult<SandboxRecord> {
        self.store
            .get_sandbox(id)
            .await?
            .ok_or_else(ApiError::sandbox_not_found)
    }

    pub async fn kill(&self, id: &SandboxId) -> ApiResult<SandboxRecord> {
        let mut rec = self.get(id).await?;
        if rec.status.is_live() {
            self.stop(id, SandboxStatus::Deleted).await;
            rec.status = SandboxStatus::Deleted;
        }
        Ok(rec)
    }

    pub async fn pause(&self, id: &SandboxId) -> ApiResult<SandboxRecord> {
        self.transition(id, SandboxStatus::Paused).await
    }

    pub async fn resume(&self, id: &SandboxId) -> ApiResult<SandboxRecord> {
        self.transition(id, SandboxStatus::Running).await
    }

    async fn transition(&self, id: &SandboxId, to: SandboxStatus) -> ApiResult<SandboxRecord> {
        let mut rec = self.get(id).await?;
        if rec.status == to {
            return Ok(rec); // pausing a paused sandbox (or resuming a running one) is a no-op
        }
        let allowed = match to {
            SandboxStatus::Paused => rec.status.can_pause(),
            _ => rec.status.can_resume(),
        };
        if !allowed || self.status_of(id).is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "INVALID_STATE",
                format!(
                    "cannot {} a sandbox that is {}",
                    if to == SandboxStatus::Paused {
                        "pause"
                    } else {
                        "resume"
                    },
                    rec.status
                ),
            ));
        }
        let driver = self.driver_of(id);
        let r = if to == SandboxStatus::Paused {
            driver.pause(id).await
        } else {
            driver.resume(id).await
        };
        r.map_err(|e| ApiError::internal("pause/resume failed", e))?;
        if to == SandboxStatus::Running && driver.has_own_clock() {
            if let Some(target) = self.target(id) {
                Self::set_sandbox_clock(id, &target.agent_socket).await;
            }
        }
        if let Some(l) = self.live().get_mut(id) {
            l.status = to;
        }
        self.store.set_sandbox_status(id, to, now()).await?;
        rec.status = to;
        Ok(rec)
    }

    /// Tells the agent of a sandbox with a clock of its own the host's time. A failure is logged,
    /// not returned: the sandbox runs, with its clock off by up to a second (or by a pause).
    async fn set_sandbox_clock(id: &SandboxId, agent_socket: &std::path::Path) {
        let unix_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let body = serde_json::json!({ "unix_nanos": unix_nanos });
        let set = crate::agent_client::call(
            agent_socket,
            axum::http::Method::POST,
            "/warren/clock",
            Some(body),
        )
        .await;
        if let Err(e) = set {
            tracing::warn!(sandbox = %id, error = %e, "could not set the sandbox's clock");
        }
    }

    pub async fn set_timeout(&self, id: &SandboxId, seconds: i64) -> ApiResult<SandboxRecord> {
        if seconds <= 0 {
            return Err(ApiError::bad_request(
                "timeout_seconds must be a positive number of seconds",
            ));
        }
        let rec = self.get(id).await?;
        if !rec.status.is_live() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "INVALID_STATE",
                format!("sandbox is {}", rec.status),
            ));
        }
        self.store.set_sandbox_timeout(id, seconds, now()).await?;
        self.expiry_changed.notify_one();
        self.get(id).await
    }

    /// Kills sandboxes as their `expires_at` passes. Sleeps until the next expiry (to the second),
    /// or until an expiry changes.
    pub async fn reap_forever(self: Arc<Self>) {
        loop {
            match self.store.expired_sandboxes(now()).await {
                Ok(due) => {
                    for s in due {
                        tracing::info!(sandbox = %s.id, "sandbox expired; removing it and its data");
                        let started = std::time::Instant::now();
                        self.stop(&s.id, SandboxStatus::Stopped).await;
                        // Lifecycle actions of the server itself are audited too (no key).
                        let event = warren_store::AuditEvent {
                            at: crate::audit::now_ms(),
                            tenant: s.tenant.clone(),
                            sandbox_id: Some(s.id.to_string()),
                            action: "sandbox.expire".into(),
                            outcome: "ok".into(),
                            duration_ms: started.elapsed().as_millis() as i64,
                            ..Default::default()
                        };
                        if let Err(e) = self.store.append_audit(&[event]).await {
                            tracing::warn!(error = %e, "cannot audit an expiry");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "reaper cannot read the store"),
            }
            let wait = match self.store.next_expiry().await {
                Ok(Some(t)) => Duration::from_millis(((t - now()).max(0) as u64) * 1000 + 20)
                    .min(Duration::from_secs(30)),
                _ => Duration::from_secs(30),
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

    /// Stops every live sandbox for good (server shutdown): waits for creates under way (they would otherwise finish
    /// after this pass and outlive the server) and refuses new ones.
    pub async fn stop_all(&self, final_status: SandboxStatus) {
        *self.closing.write().await = true;
        let ids: Vec<SandboxId> = self.live().keys().cloned().collect();
        for id in ids {
            self.stop(&id, final_status).await;
        }
    }
}
