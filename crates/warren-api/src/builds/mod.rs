//! Template builds (spec §3.9): a base (a local template, or an image from a registry), then
//! steps. RUN executes in a build sandbox whose writable layer is kept on disk and becomes the
//! step's layer; COPY unpacks the uploaded context into a layer; ENV, WORKDIR, USER and CMD only
//! change the template's settings. Every layer is cached under a key that hashes everything its
//! content depends on (the parent's key, the step, the env and workdir it ran with, the uploaded
//! bytes), so an unchanged prefix of a recipe is never re-run.

mod error;
pub mod registry;
pub mod spec;
pub mod uploads;
mod users;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use warren_core::{Resources, SandboxId};
use warren_node::AgentLink;
use warren_runtime::layers::LayerStore;
use warren_runtime::SandboxSpec;
use warren_wire::agent::CommandRequest;

pub use error::BuildError;

use crate::clock::now;
use crate::lifecycle::{Lifecycle, RemoteStep, TemplateRoots};
use spec::{BuildRequest, Step, TemplateSpec};

/// How long one RUN step may take.
use warren_node::build_step::RUN_TIMEOUT_SECS;
/// Bytes of build log kept per build.
const MAX_LOG: usize = 4 * 1024 * 1024;

/// Live state of one build, for the status and logs endpoints.
pub struct Build {
    pub template_id: String,
    inner: Mutex<BuildInner>,
}

struct BuildInner {
    log: String,
    /// Where each line of `log` starts, and when it was written (unix ms): E2B's log entries.
    lines: Vec<(usize, i64)>,
    status: &'static str,
    progress: u32,
    current_step: Option<String>,
    finished_at: Option<i64>,
    error: Option<String>,
    duration_ms: Option<u64>,
}

/// A snapshot for the endpoints.
pub struct BuildView {
    pub status: &'static str,
    pub progress: u32,
    pub current_step: Option<String>,
    pub duration_ms: Option<u64>,
}

impl Build {
    fn lock(&self) -> std::sync::MutexGuard<'_, BuildInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log(&self, line: impl AsRef<str>) {
        let mut g = self.lock();
        if g.log.len() < MAX_LOG {
            let start = g.log.len();
            g.lines.push((start, crate::clock::now_ms()));
            g.log.push_str(line.as_ref());
            if !line.as_ref().ends_with('\n') {
                g.log.push('\n');
            }
        }
    }

    /// Log text from byte `offset`, and the next offset.
    pub fn logs_from(&self, offset: usize) -> (String, usize) {
        let g = self.lock();
        let start = offset.min(g.log.len());
        let start = (start..=g.log.len())
            .find(|&i| g.log.is_char_boundary(i))
            .unwrap_or(g.log.len());
        (g.log[start..].to_owned(), g.log.len())
    }

    /// Up to `max` log lines from line `first` on, each with when it was written (unix ms).
    pub fn lines_from(&self, first: usize, max: usize) -> Vec<(i64, String)> {
        let g = self.lock();
        let ends = g.lines.iter().skip(1).map(|&(s, _)| s).chain([g.log.len()]);
        g.lines
            .iter()
            .zip(ends)
            .skip(first)
            .take(max)
            .map(|(&(start, at), end)| (at, g.log[start..end].trim_end().to_owned()))
            .collect()
    }

    /// Why the build failed, once it has.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    pub fn view(&self) -> BuildView {
        let g = self.lock();
        BuildView {
            status: g.status,
            progress: g.progress,
            current_step: g.current_step.clone(),
            duration_ms: g.duration_ms,
        }
    }

    fn step(&self, progress: u32, step: String) {
        let mut g = self.lock();
        g.progress = progress;
        g.current_step = Some(step);
    }
}

/// Builds by template id (the build id is the template id, as on Hopx).
#[derive(Default)]
pub struct Builds {
    running: Mutex<HashMap<String, Arc<Build>>>,
    /// E2B's builds by their own ids, asked for before their steps are sent.
    requested: Mutex<HashMap<String, Requested>>,
}

/// A build asked for ahead of its steps (E2B's `POST /v3/templates`): the template id and
/// build id the SDK is told, and the sandboxes' resources.
#[derive(Debug, Clone)]
pub struct Requested {
    pub tenant: String,
    pub template_id: String,
    pub build_id: String,
    pub name: String,
    pub cpu: Option<u32>,
    pub memory_mb: Option<u32>,
    pub disk_gb: Option<u32>,
    pub at: i64,
    pub started: bool,
}

/// How long a requested build is remembered (its id is polled while it runs).
const REQUESTED_KEPT_SECONDS: i64 = 24 * 3600;

impl Builds {
    fn requested_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Requested>> {
        self.requested.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, r: Requested) {
        let mut m = self.requested_map();
        m.retain(|_, old| old.at > r.at - REQUESTED_KEPT_SECONDS);
        m.insert(r.build_id.clone(), r);
    }

    /// The caller's requested build `build_id` of template `template_id`.
    pub fn requested(&self, tenant: &str, template_id: &str, build_id: &str) -> Option<Requested> {
        self.requested_map()
            .get(build_id)
            .filter(|r| r.tenant == tenant && r.template_id == template_id)
            .cloned()
    }

    /// Whether the caller has asked for a build of `template_id` (its files may be uploaded).
    pub fn is_requested(&self, tenant: &str, template_id: &str) -> bool {
        self.requested_map()
            .values()
            .any(|r| r.tenant == tenant && r.template_id == template_id)
    }

    pub fn mark_started(&self, build_id: &str) {
        if let Some(r) = self.requested_map().get_mut(build_id) {
            r.started = true;
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Build>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn begin(&self, template_id: &str) -> Arc<Build> {
        let b = Arc::new(Build {
            template_id: template_id.to_owned(),
            inner: Mutex::new(BuildInner {
                log: String::new(),
                lines: Vec::new(),
                status: "building",
                progress: 0,
                current_step: None,
                finished_at: None,
                error: None,
                duration_ms: None,
            }),
        });
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(template_id.to_owned(), b.clone());
        b
    }
}

fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Everything a build needs besides the request.
pub struct BuildContext {
    pub lifecycle: Arc<Lifecycle>,
    pub layers: Arc<LayerStore>,
    pub uploads: Arc<uploads::Uploads>,
    pub tenant: String,
}

/// Runs a build to the end and records the result on the template.
pub async fn run(ctx: BuildContext, build: Arc<Build>, req: BuildRequest, base: TemplateSpec) {
    let started = Instant::now();
    let result = execute(&ctx, &build, &req, base).await;
    let store = &ctx.lifecycle.store;
    let finished = now();
    let duration = started.elapsed().as_millis() as u64;
    match result {
        Ok(spec) => {
            let json = serde_json::to_string(&spec).unwrap_or_default();
            build.log(format!(
                "✅ Template {} is active ({:.1} s)",
                req.name,
                duration as f64 / 1000.0
            ));
            if let Err(e) = store
                .finish_template_build(&build.template_id, Ok(&json), finished)
                .await
            {
                tracing::error!(error = %e, "cannot record a finished build");
            }
            let mut g = build.lock();
            g.status = "active";
            g.progress = 100;
            g.finished_at = Some(finished);
            g.duration_ms = Some(duration);
        }
        Err(e) => {
            let e = e.to_string();
            build.log(format!("❌ ERROR: {e}"));
            let _ = store
                .finish_template_build(&build.template_id, Err(&e), finished)
                .await;
            let mut g = build.lock();
            g.status = "failed";
            g.error = Some(e);
            g.finished_at = Some(finished);
            g.duration_ms = Some(duration);
        }
    }
}

/// Records a build that could not even start (its base is missing).
pub async fn fail(ctx: &BuildContext, build: &Build, error: impl std::fmt::Display) {
    let error = error.to_string();
    let finished = now();
    let _ = ctx
        .lifecycle
        .store
        .finish_template_build(&build.template_id, Err(&error), finished)
        .await;
    let mut g = build.lock();
    g.status = "failed";
    g.error = Some(error);
    g.finished_at = Some(finished);
}

async fn execute(
    ctx: &BuildContext,
    build: &Build,
    req: &BuildRequest,
    base: TemplateSpec,
) -> Result<TemplateSpec, BuildError> {
    let mut spec = base;
    spec.start_cmd = None;
    spec.ready_cmd = None;
    let resources = Resources {
        vcpu: req.cpu.unwrap_or(2).clamp(1, 64),
        memory_mb: req.memory.unwrap_or(2048).clamp(128, 262_144),
        disk_mb: req.disk_gb.unwrap_or(10).clamp(1, 1024) * 1024,
    };
    let steps = req.parsed_steps()?;
    if req.e2b {
        spec.user.get_or_insert_with(|| "user".into());
        spec.workdir.get_or_insert_with(|| "/home/user".into());
    }
    let total = steps.len().max(1) as u32;
    let mut invalidated = req.skip_cache;
    for (i, (step, skip)) in steps.iter().enumerate() {
        let n = i + 1;
        build.step((i as u32 * 100 / total).min(99), step.describe());
        build.log(format!("Step {n}/{}: {}", steps.len(), step.describe()));
        invalidated |= *skip;
        match step {
            Step::Env(k, v) => {
                spec.env.insert(k.clone(), v.clone());
                spec.key = key(&[&spec.key, "ENV", k, v]);
            }
            Step::Workdir(p) => {
                let base = spec.workdir.clone().unwrap_or_else(|| "/".into());
                let dir = if p.starts_with('/') {
                    p.clone()
                } else {
                    format!("{}/{p}", base.trim_end_matches('/'))
                };
                spec.key = key(&[&spec.key, "WORKDIR", &dir]);
                spec.workdir = Some(dir);
            }
            Step::User(u) if req.e2b => {
                build.log(format!("  RUN and COPY steps now act as {u}"));
                spec.user = Some(u.clone());
            }
            Step::User(u) => {
                build.log(format!("  USER {u}: recorded; runs keep root inside the sandbox (the sandbox is the boundary)"));
                spec.user = Some(u.clone());
            }
            Step::Cmd(c) => spec.start_cmd = Some(c.clone()),
            Step::Copy {
                sources,
                dest,
                files_hash,
                owner,
                permissions,
            } => {
                let (uploads, tenant, hash) =
                    (ctx.uploads.clone(), ctx.tenant.clone(), files_hash.clone());
                let (content_hash, path) =
                    tokio::task::spawn_blocking(move || uploads.stored(&tenant, &hash))
                        .await
                        .map_err(|_| BuildError::Panicked("reading the uploaded files"))?
                        .ok_or_else(|| BuildError::NoUpload {
                            step: n,
                            hash: files_hash.clone(),
                        })?;
                // E2B's dialect: a relative destination is under the workdir, and files belong
                // to the current user unless the step names one.
                let dest = match (&spec.workdir, req.e2b) {
                    (Some(w), true) if !dest.starts_with('/') => {
                        format!("{}/{dest}", w.trim_end_matches('/'))
                    }
                    _ => dest.clone(),
                };
                let owner = match owner {
                    None if req.e2b => spec.user.clone(),
                    o => o.clone(),
                };
                let k = key(&[
                    &spec.key,
                    "COPY",
                    &sources.join(","),
                    &dest,
                    &content_hash,
                    owner.as_deref().unwrap_or(""),
                    permissions.as_deref().unwrap_or(""),
                ]);
                if !invalidated && ctx.layers.is_ready(&k) {
                    build.log("  ✓ cached");
                } else {
                    invalidated = true;
                    let staged = ctx.layers.staging(&k)?;
                    let (sources, dest) = (sources.clone(), dest.clone());
                    let owner = users::resolve_owner(owner.as_deref(), &spec.layers)?;
                    let lower = spec.layers.clone();
                    let mode = match permissions.as_deref() {
                        Some(p) => Some(u32::from_str_radix(p, 8).map_err(|_| {
                            BuildError::Permissions {
                                step: n,
                                got: p.to_owned(),
                            }
                        })?),
                        None => None,
                    };
                    let target = staged.clone();
                    let copied = tokio::task::spawn_blocking(move || {
                        let f = std::fs::File::open(&path).map_err(|source| BuildError::Io {
                            what: "open the uploaded files",
                            source,
                        })?;
                        let plan = warren_runtime::layers::CopyPlan {
                            sources: &sources,
                            dest: &dest,
                            owner,
                            mode,
                            lower: &lower,
                        };
                        warren_runtime::layers::unpack_copy(f, &target, &plan)
                            .map_err(|source| BuildError::Copy { step: n, source })
                    })
                    .await
                    .map_err(|_| BuildError::Panicked("the COPY step"))??;
                    ctx.layers.commit(&staged, &k)?;
                    build.log(format!("  copied {copied} files"));
                }
                spec.layers.insert(0, ctx.layers.path(&k));
                spec.key = k;
            }
            Step::Run { command, user } => {
                // E2B's dialect runs as the step's user or the current one, in the workdir,
                // both made when missing; Hopx's runs as root where the sandbox starts.
                let (script, workdir) = if req.e2b {
                    let user = user.clone().or_else(|| spec.user.clone());
                    let dir = spec.workdir.clone().unwrap_or_else(|| "/".into());
                    let user = user.unwrap_or_else(|| "root".into());
                    (users::as_user(command, &user, Path::new(&dir)), None)
                } else {
                    (command.clone(), spec.workdir.clone())
                };
                let cmd = &script;
                let env_json = serde_json::to_string(&spec.env).unwrap_or_default();
                let k = key(&[
                    &spec.key,
                    "RUN",
                    cmd,
                    &env_json,
                    workdir.as_deref().unwrap_or_default(),
                ]);
                let built =
                    ctx.layers.is_ready(&k) || ctx.lifecycle.cluster.holder_of(&k).is_some();
                if !invalidated && built {
                    build.log("  ✓ cached");
                } else {
                    invalidated = true;
                    run_step(ctx, build, &spec, cmd, workdir.as_deref(), resources, &k)
                        .await
                        .map_err(|e| BuildError::Run {
                            step: n,
                            what: step.describe(),
                            source: Box::new(e),
                        })?;
                }
                spec.layers.insert(0, ctx.layers.path(&k));
                spec.key = k;
            }
        }
    }
    if let Some(c) = &req.start_cmd {
        spec.start_cmd = Some(c.clone());
    }
    spec.ready_cmd = req.ready_cmd.clone();
    // Checked when the build was accepted (`routes::builds`).
    let asked = req.isolation.as_deref().and_then(|t| t.parse().ok());
    spec.isolation = asked.or(spec.isolation.take());
    if let Some(n) = req.network.as_ref().filter(|n| !n.is_empty()) {
        spec.network = Some(n.clone());
    }
    if let Some(r) = &spec.ready_cmd {
        r.probe()?;
    }
    build.step(100, "done".into());
    Ok(spec)
}

/// Runs one RUN step in a build sandbox with internet access; its writable layer becomes layer
/// `key`. Output goes to the build log as it is produced.
async fn run_step(
    ctx: &BuildContext,
    build: &Build,
    spec: &TemplateSpec,
    cmd: &str,
    workdir: Option<&str>,
    resources: Resources,
    key: &str,
) -> Result<(), BuildError> {
    if !ctx.lifecycle.has_local_node() {
        let code = ctx
            .lifecycle
            .run_remote_build_step(
                RemoteStep {
                    tenant: &ctx.tenant,
                    layers: &spec.layers,
                    key,
                    command: cmd,
                    env: &spec.env,
                    workdir,
                    resources,
                },
                |line| build.log(format!("  {line}")),
            )
            .await?;
        return match code {
            0 => Ok(()),
            code => Err(BuildError::ExitCode(code)),
        };
    }
    let staged = ctx.layers.staging(key)?;
    let sandbox = SandboxSpec {
        id: SandboxId::generate(),
        template_name: format!("build-{key:.12}"),
        layers: spec.layers.clone(),
        persistent_upper: Some(staged.clone()),
        workdir: workdir.map(str::to_owned),
        resources,
        internet_access: true,
        egress: None,
        env_vars: spec.env.clone(),
        saved_state: None,
        volumes: Vec::new(),
    };
    let sandbox = ctx
        .lifecycle
        .start_build_sandbox(&ctx.tenant, sandbox)
        .await?;
    let result = follow_run(&sandbox.agent, build, cmd, workdir, spec).await;
    ctx.lifecycle.end_build_sandbox(sandbox).await;
    match result {
        Ok(0) => {
            let upper = staged.join("upper");
            let committed = ctx.layers.commit(&upper, key);
            let _ = std::fs::remove_dir_all(&staged);
            committed.map(drop).map_err(BuildError::from)
        }
        Ok(code) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(BuildError::ExitCode(code))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(e.into())
        }
    }
}

/// Starts the command in the background and copies its output into the build log until it ends.
async fn follow_run(
    agent: &AgentLink,
    build: &Build,
    cmd: &str,
    workdir: Option<&str>,
    spec: &TemplateSpec,
) -> Result<i64, warren_node::AgentError> {
    let req = CommandRequest {
        env: Some(spec.env.clone()),
        workdir: workdir.map(str::to_owned),
        ..warren_node::bash(cmd, RUN_TIMEOUT_SECS)
    };
    warren_node::build_step::follow(agent, &req, |line| build.log(format!("  {line}"))).await
}

/// The layers and settings a build starts from, when `from_image` names a local template.
pub async fn local_base(
    lifecycle: &Arc<Lifecycle>,
    name: &str,
    tenant: &str,
) -> Result<Option<TemplateSpec>, BuildError> {
    let Some(t) = lifecycle.store.find_template(name, tenant).await? else {
        return Ok(None);
    };
    if let Some(recipe) = TemplateRoots::recipe(&t.name).filter(|_| t.tenant.is_none()) {
        if !lifecycle.has_local_node() {
            // The nodes prepare built-in templates themselves: name it, do not build it here.
            return Ok(Some(TemplateSpec {
                layers: vec![lifecycle.templates.cache.rootfs(recipe.name)],
                key: key(&[
                    "builtin",
                    recipe.name,
                    &warren_runtime::templates::recipe_hash(&recipe),
                ]),
                ..Default::default()
            }));
        }
        let rootfs: PathBuf = lifecycle.templates.ensure(&recipe).await?;
        let marker = std::fs::read_to_string(rootfs.with_file_name("READY")).unwrap_or_default();
        return Ok(Some(TemplateSpec {
            layers: vec![rootfs],
            key: key(&["builtin", recipe.name, marker.trim()]),
            ..Default::default()
        }));
    }
    match (&t.status, &t.spec) {
        (warren_store::TemplateStatus::Active, Some(json)) => serde_json::from_str(json)
            .map(Some)
            .map_err(|source| BuildError::UnreadableSpec {
                name: name.to_owned(),
                source,
            }),
        _ => Err(BuildError::NotActive {
            name: name.to_owned(),
            status: t.status.as_str(),
        }),
    }
}
