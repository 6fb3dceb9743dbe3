//! The node's API (`/node/v1/*`): the typed commands of `Node`, for control planes over the
//! network. Every call carries a short-lived token a control plane signed for this node
//! (`Authorization: Bearer`); tenants' API keys and sandbox tokens are never accepted here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use warren_core::{Resources, SandboxId};
use warren_runtime::layers::LayerStore;
use warren_runtime::templates::{builtin_recipes, TemplateCache};
use warren_runtime::SandboxSpec;
use warren_wire::agent::CommandRequest;
use warren_wire::cluster::{NodeApiError, StartReply, StartRequest, TemplateSource};

use super::control::ControlPlane;
use super::saved::{SavedSandbox, SavedSandboxes};
use crate::error::NodeError;
use crate::node::{Node, SandboxStart};
use crate::tokens::TokenVerifier;

/// How long a start waits for a built-in template this node is still preparing.
const TEMPLATE_WAIT: Duration = Duration::from_secs(40);

pub struct Daemon {
    pub node: Arc<Node>,
    pub node_id: String,
    pub verifier: TokenVerifier,
    pub saved: Arc<SavedSandboxes>,
    pub templates: TemplateCache,
    pub layers: LayerStore,
    pub control: Arc<ControlPlane>,
    pub reporter: Arc<super::report::Reporter>,
    /// One layer download at a time (a second start for the same template waits and finds it).
    pub layer_fetch: tokio::sync::Mutex<()>,
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    let authed = Router::new()
        .route("/node/v1/sandboxes", post(start))
        .route("/node/v1/sandboxes/{id}", delete(destroy))
        .route("/node/v1/sandboxes/{id}/pause", post(pause))
        .route("/node/v1/sandboxes/{id}/resume", post(resume))
        .route("/node/v1/sandboxes/{id}/commands", post(run_command))
        .route("/node/v1/layers/{key}", get(layer))
        .route("/node/v1/builds/steps", post(super::build::run_step))
        .route_layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            authenticate,
        ));
    Router::new()
        .route("/node/v1/health", get(health))
        .route("/metrics", get(super::metrics::scrape))
        .merge(authed)
        .layer(axum::middleware::from_fn(super::metrics::count_requests))
        .with_state(daemon)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(NodeApiError {
            code: code.to_owned(),
            message: message.into(),
        }),
    )
        .into_response()
}

fn node_error(e: NodeError) -> Response {
    match e {
        NodeError::NotRunning(_) => error(StatusCode::NOT_FOUND, "NOT_RUNNING", e.to_string()),
        NodeError::NoSuchTier { .. } => {
            error(StatusCode::BAD_REQUEST, "NO_SUCH_TIER", e.to_string())
        }
        other => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NODE_FAILED",
            other.to_string(),
        ),
    }
}

async fn authenticate(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if d.verifier.node_call(t, &d.node_id) => next.run(req).await,
        _ => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "this is a node's API: only its control planes may call it",
        ),
    }
}

async fn health(State(d): State<Arc<Daemon>>) -> Response {
    Json(serde_json::json!({ "status": "ok", "node_id": d.node_id })).into_response()
}

fn bad_id() -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ID", "not a sandbox id")
}

async fn start(State(d): State<Arc<Daemon>>, Json(req): Json<StartRequest>) -> Response {
    let Ok(id) = SandboxId::parse(&req.id) else {
        return bad_id();
    };
    let layers = match d.layers_of(&req.source).await {
        Ok(l) => l,
        Err(msg) => return error(StatusCode::SERVICE_UNAVAILABLE, "TEMPLATE_UNAVAILABLE", msg),
    };
    let resources = Resources {
        vcpu: req.vcpu,
        memory_mb: req.memory_mb,
        disk_mb: req.disk_mb,
    };
    let start = SandboxStart {
        spec: SandboxSpec {
            id: id.clone(),
            template_name: req.template_name.clone(),
            layers,
            persistent_upper: None,
            workdir: req.workdir.clone(),
            resources,
            internet_access: req.internet_access,
            env_vars: req.env_vars.clone(),
        },
        tier: req.tier.clone(),
        owner: req.owner.clone(),
        listen: true,
    };
    let started = match d.node.start(start).await {
        Ok(s) => s,
        Err(e) => return node_error(e),
    };
    if req.start_cmd.is_some() || req.ready.is_some() {
        let ready = match d.node.agent(&id) {
            Some(agent) => {
                crate::readiness::start_and_wait_ready(
                    &agent,
                    req.start_cmd.as_deref(),
                    req.ready.as_ref(),
                )
                .await
            }
            None => Err("the sandbox ended while starting".into()),
        };
        if let Err(why) = ready {
            let _ = d.node.destroy(&id).await;
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                format!("it did not become ready: {why}"),
            );
        }
    }
    d.saved.put(SavedSandbox {
        id: id.to_string(),
        tier: started.tier.to_owned(),
        handle: started.handle.clone(),
        owner: req.owner,
        paused: false,
        port: started.port,
        vcpu: req.vcpu,
        memory_mb: req.memory_mb,
    });
    Json(StartReply {
        tier: started.tier.to_owned(),
        port: started.port,
        handle: started.handle.to_json(),
    })
    .into_response()
}

async fn destroy(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    let done = d.node.destroy(&id).await;
    d.saved.remove(id.as_str());
    match done {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => node_error(e),
    }
}

async fn pause(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    match d.node.pause(&id).await {
        Ok(()) => {
            d.saved.set_paused(id.as_str(), true);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => node_error(e),
    }
}

async fn resume(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    match d.node.resume(&id).await {
        Ok(()) => {
            d.saved.set_paused(id.as_str(), false);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => node_error(e),
    }
}

async fn run_command(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Json(req): Json<CommandRequest>,
) -> Response {
    let Ok(id) = SandboxId::parse(&id) else {
        return bad_id();
    };
    match d.node.run_command(&id, &req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => node_error(e),
    }
}

/// A layer this node holds, as a tar stream (for a control plane serving it to another node).
async fn layer(State(d): State<Arc<Daemon>>, Path(key): Path<String>) -> Response {
    if !valid_layer_key(&key) || !d.layers.is_ready(&key) {
        return error(
            StatusCode::NOT_FOUND,
            "NO_SUCH_LAYER",
            format!("layer {key} is not on this node"),
        );
    }
    (
        [(header::CONTENT_TYPE, "application/x-tar")],
        axum::body::Body::from_stream(crate::layer_archive::tar_stream(d.layers.path(&key))),
    )
        .into_response()
}

/// A layer key as the control plane names it: no path separators or dots at the start.
pub(super) fn valid_layer_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

impl Daemon {
    /// The host paths of a template's layers on this node: a built-in template prepared here
    /// (built on first use), a built one's layers fetched from the control plane once.
    pub(super) async fn layers_of(&self, source: &TemplateSource) -> Result<Vec<PathBuf>, String> {
        match source {
            TemplateSource::Builtin { name } => self.builtin_rootfs(name).await.map(|p| vec![p]),
            TemplateSource::Layers { keys } => {
                let mut paths = Vec::with_capacity(keys.len());
                for key in keys {
                    if let Some(name) = key.strip_prefix("builtin:") {
                        paths.push(self.builtin_rootfs(name).await?);
                        continue;
                    }
                    if !valid_layer_key(key) {
                        return Err(format!("invalid layer key {key:?}"));
                    }
                    if !self.layers.is_ready(key) {
                        self.fetch_layer(key).await?;
                    }
                    paths.push(self.layers.path(key));
                }
                Ok(paths)
            }
        }
    }

    /// A built-in template's root file system on this node, prepared on first use.
    async fn builtin_rootfs(&self, name: &str) -> Result<PathBuf, String> {
        let recipe = builtin_recipes()
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| format!("template {name} is not built into this node"))?;
        if self.templates.is_ready(&recipe) {
            return Ok(self.templates.rootfs(recipe.name));
        }
        let templates = self.templates.clone();
        let build = tokio::spawn(async move {
            let progress = |line: String| tracing::info!(target: "warren::template", "{line}");
            templates.ensure(&recipe, &progress).await
        });
        match tokio::time::timeout(TEMPLATE_WAIT, build).await {
                    Ok(Ok(Ok(rootfs))) => Ok(rootfs),
                    Ok(Ok(Err(e))) => Err(format!("template {name} could not be built: {e}")),
                    Ok(Err(e)) => Err(format!("template {name} could not be built: {e}")),
                    Err(_) => Err(format!(
                        "template {name} is still being prepared on this node (once, a few minutes); retry shortly"
                    )),
                }
    }

    /// Downloads a layer from the control plane (a tar stream) and unpacks it into the cache.
    async fn fetch_layer(&self, key: &str) -> Result<(), String> {
        let _one = self.layer_fetch.lock().await;
        if self.layers.is_ready(key) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let res = self
            .control
            .layer(key)
            .await
            .map_err(|e| format!("fetch layer {key}: {e}"))?;
        let staged = self.layers.staging(key).map_err(|e| e.to_string())?;
        let archive = staged.with_extension("tar");
        let downloaded = async {
            let mut file = tokio::fs::File::create(&archive).await?;
            let mut body = res.bytes_stream();
            let mut bytes = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                bytes += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            Ok::<u64, std::io::Error>(bytes)
        }
        .await;
        let bytes = match downloaded {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&archive);
                let _ = std::fs::remove_dir_all(&staged);
                return Err(format!("download layer {key}: {e}"));
            }
        };
        let (from, into) = (archive.clone(), staged.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            let mut tar = tar::Archive::new(std::fs::File::open(&from)?);
            tar.set_preserve_permissions(true);
            tar.set_preserve_ownerships(true);
            tar.set_unpack_xattrs(true);
            tar.set_overwrite(true);
            tar.unpack(&into)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let _ = std::fs::remove_file(&archive);
        if let Err(e) = unpacked {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(format!("unpack layer {key}: {e}"));
        }
        self.layers
            .commit(&staged, key)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            layer = key,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "layer fetched from the control plane"
        );
        Ok(())
    }
}
