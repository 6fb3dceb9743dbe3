//! RUN steps of template builds, run on this node for a control plane without a node of its own:
//! a build sandbox (namespace tier, internet access, writable layer on disk) over the step's
//! layers; its writable layer becomes the step's layer in this node's cache, which other nodes
//! then fetch through the control plane. The output streams back as it is printed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc;
use warren_core::{Resources, SandboxId, Tier};
use warren_runtime::SandboxSpec;
use warren_wire::agent::CommandRequest;
use warren_wire::cluster::{BuildStepRequest, TemplateSource};

use super::state::{Daemon, LayersUnavailable};
use crate::agent_link::AgentError;
use crate::build_step::{follow, RUN_TIMEOUT_SECS};
use crate::error::NodeError;
use crate::layer_archive::valid_layer_key;
use crate::node::SandboxStart;

pub async fn run_step(State(d): State<Arc<Daemon>>, Json(req): Json<BuildStepRequest>) -> Response {
    let (tx, rx) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let last = match step(&d, &req, &tx).await {
            Ok(code) => format!("exit {code}\n"),
            Err(e) => format!("fail {}\n", e.to_string().replace('\n', " ")),
        };
        let _ = tx.send(last).await;
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|l| (Ok::<_, std::io::Error>(l.into_bytes()), rx))
    });
    ([("content-type", "text/plain")], Body::from_stream(lines)).into_response()
}

/// Why a build step could not run to an exit code.
#[derive(Debug, thiserror::Error)]
enum StepFailed {
    #[error(transparent)]
    Layers(#[from] LayersUnavailable),
    #[error(transparent)]
    Layer(#[from] warren_runtime::layers::LayerError),
    #[error("build sandbox failed to start: {0}")]
    Start(NodeError),
    #[error("the build sandbox ended while starting")]
    Ended,
    #[error(transparent)]
    Agent(#[from] AgentError),
}

async fn step(
    d: &Daemon,
    req: &BuildStepRequest,
    out: &mpsc::Sender<String>,
) -> Result<i64, StepFailed> {
    if !valid_layer_key(&req.key) {
        return Err(LayersUnavailable::InvalidKey(req.key.clone()).into());
    }
    if d.layers.is_ready(&req.key) {
        return Ok(0);
    }
    let layers = d
        .layers_of(&TemplateSource::Layers {
            keys: req.layers.clone(),
        })
        .await?;
    let staged = d.layers.staging(&req.key)?;
    let id = SandboxId::generate();
    let start = SandboxStart {
        spec: SandboxSpec {
            id: id.clone(),
            template_name: format!("build-{:.12}", req.key),
            layers,
            persistent_upper: Some(staged.clone()),
            workdir: req.workdir.clone(),
            resources: Resources {
                vcpu: req.vcpu,
                memory_mb: req.memory_mb,
                disk_mb: req.disk_mb,
            },
            internet_access: true,
            egress: None,
            env_vars: req.env.clone(),
            saved_state: None,
            volumes: Vec::new(),
        },
        tier: Some(Tier::Namespaces),
        owner: req.owner.clone(),
        listen: false,
    };
    if let Err(e) = d.node.start(start).await {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(StepFailed::Start(e));
    }
    let result = match d.node.agent(&id) {
        Some(agent) => {
            let cmd = CommandRequest {
                env: Some(req.env.clone()),
                workdir: req.workdir.clone(),
                ..crate::agent_link::bash(&req.command, RUN_TIMEOUT_SECS)
            };
            // A full channel drops lines rather than stalling the step: the log is best effort,
            // the exit code is not.
            follow(&agent, &cmd, |line| {
                let _ = out.try_send(format!("log {line}\n"));
            })
            .await
            .map_err(StepFailed::from)
        }
        None => Err(StepFailed::Ended),
    };
    if let Err(e) = d.node.destroy(&id).await {
        tracing::warn!(sandbox = %id, error = %e, "build sandbox cleanup");
    }
    let committed = match result {
        Ok(0) => d
            .layers
            .commit(&staged.join("upper"), &req.key)
            .map(|_| 0)
            .map_err(StepFailed::from),
        other => other,
    };
    let _ = std::fs::remove_dir_all(&staged);
    committed
}
