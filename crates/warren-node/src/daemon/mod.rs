//! `warren node`: one machine's sandboxes, run for the control planes of a cluster. The daemon
//! joins with the cluster's join secret, reports its capacity and sandboxes in heartbeats,
//! answers control planes' commands on its API and serves its sandboxes' listeners itself; the
//! SDKs talk to those directly. A restarted node takes its sandboxes over from its own records.

mod api;
mod build;
mod control;
mod gate;
mod metrics;
mod report;
mod saved;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;
use warren_core::SandboxId;
use warren_runtime::layers::LayerStore;
use warren_runtime::templates::TemplateCache;
use warren_runtime::IsolationDriver;
use warren_wire::cluster::{AuditRecord, JoinRequest, JoinResponse};

use crate::machine::{self, MachineConfig, MachineError};
use crate::node::{Adopt, Listeners, Node, NodeConfig, NodeEvent};
use crate::tokens::TokenVerifier;
use crate::webhooks::Dispatcher;
pub use control::ControlError;
use control::ControlPlane;
pub use gate::request_quota;

pub struct DaemonConfig {
    /// A control plane's URL (or the load balancer in front of several).
    pub control_plane: String,
    /// PEM of the CA that signed the control plane's certificate, when not a public one.
    pub control_plane_ca: Option<PathBuf>,
    /// The node API's address; sandboxes' listeners bind to its host too.
    pub listen: SocketAddr,
    /// The host name clients reach this node's sandboxes at (default: the listen address).
    pub public_host: Option<String>,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub join_secret: String,
    pub machine: MachineConfig,
    pub debian_mirror: Option<String>,
    pub max_body_bytes: u64,
    /// Most sandboxes this node runs at once.
    pub max_sandboxes: u32,
    /// HTTPS for the node API and the sandboxes' listeners.
    pub tls: Option<NodeTls>,
    /// Wildcard mode: sandboxes get no listener of their own; requests for
    /// `{port}-{id}.<domain>` (relayed by a control plane, or straight from clients) are routed by
    /// Host header on the node's API address.
    pub wildcard_domain: Option<String>,
    /// This node's id-keeping view of the cluster's shared volume store, when it has one
    /// (`warren node --volumes-juicefs`): volumes are mounted from `<view>/<key>`.
    pub shared_volumes: Option<PathBuf>,
    /// This build's version and commit, sent at join (messages of a refused join name it).
    pub version: String,
}

pub struct NodeTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The generated CA the certificate chains to (sent at join so control planes trust it).
    pub ca_pem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the control plane's token key is unreadable: {0}")]
    TokenKey(#[from] base64::DecodeError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// The node's id: made once, kept in its data dir.
fn node_id(data_dir: &std::path::Path) -> Result<String, DaemonError> {
    let file = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!("node-{}", hex::encode(rand::random::<[u8; 6]>()));
    std::fs::write(&file, &id).map_err(io("write node id"))?;
    Ok(id)
}

/// Runs the node until `shutdown` resolves. Its sandboxes keep running after it: the next start
/// with the same data dir takes them over.
pub async fn run(
    cfg: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&cfg.machine.data_dir).map_err(io("create data dir"))?;
    std::fs::create_dir_all(&cfg.machine.cache_dir).map_err(io("create cache dir"))?;
    let node_id = node_id(&cfg.machine.data_dir)?;
    // Everything this node logs carries its id.
    let span = tracing::info_span!("node", node = %node_id);
    serve(cfg, node_id, shutdown).instrument(span).await
}

async fn serve(
    cfg: DaemonConfig,
    node_id: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let (host, tiers) = machine::prepare(&cfg.machine).await?;
    let tier_names: Vec<String> = tiers.iter().map(|t| t.tier().to_string()).collect();
    let saved = Arc::new(
        saved::SavedSandboxes::load(&cfg.machine.data_dir.join("node-sandboxes"))
            .map_err(io("read the node's sandbox records"))?,
    );
    let templates = TemplateCache::new(&cfg.machine.cache_dir, cfg.debian_mirror.clone());
    let layers = LayerStore::new(&cfg.machine.cache_dir);
    let ca = match &cfg.control_plane_ca {
        Some(p) => Some(std::fs::read(p).map_err(io("read --control-plane-ca"))?),
        None => None,
    };
    let control = Arc::new(ControlPlane::new(
        &cfg.control_plane,
        &node_id,
        ca.as_deref(),
    )?);
    let public_host = cfg
        .public_host
        .clone()
        .unwrap_or_else(|| cfg.listen.ip().to_string());
    let reporter = Arc::new(report::Reporter::new(
        tier_names,
        cfg.max_sandboxes,
        cfg.machine.data_dir.clone(),
        templates.clone(),
        layers_dir(&cfg.machine.cache_dir),
        saved.clone(),
    ));
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let join = JoinRequest {
        ca_pem: cfg.tls.as_ref().and_then(|t| t.ca_pem.clone()),
        node_id: node_id.clone(),
        name: cfg.name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .map_or_else(|| node_id.clone(), |h| format!("{h}-{}", cfg.listen.ip()))
        }),
        api_url: format!("{scheme}://{}", cfg.listen),
        public_host,
        public_scheme: scheme.into(),
        labels: cfg.labels.clone(),
        report: reporter.report(Vec::new()),
        protocol: warren_wire::cluster::NODE_PROTOCOL,
        version: cfg.version.clone(),
    };
    // Listening before joining: a control plane places sandboxes here as soon as the join is
    // accepted, and its calls then wait in the listen backlog until the API serves them, rather
    // than finding the port closed.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(io("listen on --listen"))?;
    let mut shutdown = Box::pin(shutdown);
    let joined = tokio::select! {
        j = join_until_accepted(&control, &cfg.join_secret, &join) => j,
        () = &mut shutdown => {
            // Stopped before it ever ran a sandbox here.
            if saved.all().is_empty() {
                host.release().await;
            }
            return Ok(());
        }
    };
    let verifier = TokenVerifier::new(
        &base64_decode(&joined.token_public_key).map_err(DaemonError::TokenKey)?,
    );
    let (audit_tx, audit_rx) = mpsc::channel::<AuditRecord>(4096);
    let gate = Arc::new(gate::NodeGate {
        verifier: verifier.clone(),
        rate: gate::tenant_limiter(joined.tenant_requests_per_second),
        audit: audit_tx,
        webhooks: Arc::new(Dispatcher::new()),
    });
    let (node, events) = Node::new(
        NodeConfig {
            host,
            tiers,
            listeners: match &cfg.wildcard_domain {
                Some(_) => Listeners::Wildcard,
                None => Listeners::Local {
                    bind: cfg.listen.ip(),
                },
            },
            tls: cfg.tls.as_ref().map(|t| t.acceptor.clone()),
            max_body_bytes: cfg.max_body_bytes,
        },
        gate,
    );
    let exited = Arc::new(Mutex::new(Vec::<(String, i32)>::new()));
    take_over(&node, &saved, &exited).await;
    reporter.attach(node.clone());

    tokio::spawn(flush_audit(control.clone(), audit_rx).in_current_span());
    tokio::spawn(watch_events(events, saved.clone(), exited.clone()).in_current_span());
    tokio::spawn(
        heartbeat_forever(
            node.clone(),
            saved.clone(),
            control.clone(),
            reporter.clone(),
            exited.clone(),
            cfg.join_secret.clone(),
            join,
            Duration::from_secs(joined.heartbeat_seconds.max(1)),
        )
        .in_current_span(),
    );

    let daemon = Arc::new(state::Daemon {
        node: node.clone(),
        node_id: node_id.clone(),
        verifier,
        saved: saved.clone(),
        templates,
        layers,
        control,
        reporter,
        wildcard_domain: cfg.wildcard_domain.clone(),
        layer_fetch: tokio::sync::Mutex::new(()),
        shared_volumes: cfg.shared_volumes.clone(),
    });
    tracing::info!(node = %node_id, listen = %cfg.listen, control_plane = %cfg.control_plane, "warren node is serving");
    let app = api::router(daemon);
    match &cfg.tls {
        Some(t) => {
            let listener = crate::tls_listener::TlsListener::new(listener, t.acceptor.clone())
                .map_err(io("TLS listener"))?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(io("serve the node API"))?;
        }
        None => axum::serve(crate::tls_listener::no_delay(listener), app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(io("serve the node API"))?,
    }
    let left = node.list().len();
    if left == 0 {
        node.release_host().await;
    }
    tracing::info!(node = %node_id, sandboxes = left, "node stopped; its sandboxes keep running for the next start with this data dir");
    Ok(())
}

fn layers_dir(cache_dir: &std::path::Path) -> PathBuf {
    cache_dir.join("layers")
}

fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim())
}

/// Joins, retrying while the control plane is unreachable or refuses (it may be starting, or
/// the secret may be fixed by the operator meanwhile).
async fn join_until_accepted(
    control: &ControlPlane,
    secret: &str,
    req: &JoinRequest,
) -> JoinResponse {
    let mut wait = Duration::from_millis(250);
    loop {
        match control.join(secret, req).await {
            Ok(j) => {
                tracing::info!(node = %req.node_id, "joined the cluster");
                return j;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot join the cluster yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Takes over the sandboxes an earlier run of this node left running; those that did not
/// survive are reported as exited. Then removes whatever else was left.
async fn take_over(
    node: &Arc<Node>,
    saved: &saved::SavedSandboxes,
    exited: &Mutex<Vec<(String, i32)>>,
) {
    for s in saved.all() {
        let Ok(id) = SandboxId::parse(&s.id) else {
            saved.remove(&s.id);
            continue;
        };
        let adopted = node
            .adopt(Adopt {
                id: id.clone(),
                tier: s.tier,
                handle: s.handle.clone(),
                owner: s.owner.clone(),
                paused: s.paused,
                port: s.port,
            })
            .await;
        match adopted {
            Ok(a) => {
                tracing::info!(sandbox = %id, paused = a.paused, "sandbox taken over");
                let policy = crate::egress::rules(s.egress.as_ref(), &[]).ok().flatten();
                if let Some(p) = &policy {
                    if let Err(e) = node
                        .set_egress(&id, &a.handle, Some(p), s.internet_access)
                        .await
                    {
                        tracing::error!(sandbox = %id, error = %e, "cannot put the sandbox's egress policy back");
                    }
                }
                saved.put(saved::SavedSandbox {
                    paused: a.paused,
                    port: a.port,
                    handle: a.handle,
                    awaiting_secrets: s.brokers_secrets,
                    ..s
                });
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, reason = %e, "sandbox did not survive while the node was down");
                saved.remove(&s.id);
                lock(exited).push((s.id.clone(), -1));
            }
        }
    }
    node.remove_leftovers().await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn watch_events(
    mut events: mpsc::Receiver<NodeEvent>,
    saved: Arc<saved::SavedSandboxes>,
    exited: Arc<Mutex<Vec<(String, i32)>>>,
) {
    while let Some(event) = events.recv().await {
        match event {
            NodeEvent::Exited { id, code } => {
                tracing::warn!(sandbox = %id, code, "sandbox exited on its own");
                saved.remove(id.as_str());
                lock(&exited).push((id.to_string(), code));
            }
        }
    }
}

/// Reports to the control plane every `every`; joins again when it no longer knows this node.
#[allow(clippy::too_many_arguments)]
async fn heartbeat_forever(
    node: Arc<Node>,
    saved: Arc<saved::SavedSandboxes>,
    control: Arc<ControlPlane>,
    reporter: Arc<report::Reporter>,
    exited: Arc<Mutex<Vec<(String, i32)>>>,
    secret: String,
    join: JoinRequest,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let gone: Vec<(String, i32)> = lock(&exited).clone();
        let report = reporter.report(gone.clone());
        match control.heartbeat(&report).await {
            Ok(answer) => {
                // Reported: forget those exits (new ones may have arrived meanwhile).
                lock(&exited).retain(|e| !gone.contains(e));
                for id in answer.destroy {
                    let Ok(id) = SandboxId::parse(&id) else {
                        continue;
                    };
                    tracing::info!(sandbox = %id, "the cluster no longer has this sandbox: stopping it");
                    if let Err(e) = node.destroy(&id).await {
                        tracing::warn!(sandbox = %id, error = %e, "teardown incomplete");
                    }
                    saved.remove(id.as_str());
                }
            }
            Err(ControlError::Refused { status: 401, .. }) => {
                tracing::warn!("the control plane no longer knows this node: joining again");
                let _ = control.join(&secret, &join).await;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Sends audit records to the control plane in batches (at most a second late); keeps them
/// while it is unreachable.
async fn flush_audit(control: Arc<ControlPlane>, mut rx: mpsc::Receiver<AuditRecord>) {
    const MAX_BATCH: usize = 500;
    const MAX_KEPT: usize = 100_000;
    let mut pending: Vec<AuditRecord> = Vec::new();
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(r) => pending.push(r),
                None => return,
            },
            _ = tokio::time::sleep(Duration::from_secs(1)), if !pending.is_empty() => {}
        }
        while let Ok(r) = rx.try_recv() {
            pending.push(r);
        }
        if pending.len() < MAX_BATCH && !pending.is_empty() {
            // Gather a little more unless the batch is full or a second passed since the first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Ok(r) = rx.try_recv() {
                pending.push(r);
            }
        }
        while !pending.is_empty() {
            let n = pending.len().min(MAX_BATCH);
            let batch: Vec<AuditRecord> = pending[..n].to_vec();
            match control.audit(batch).await {
                Ok(()) => {
                    pending.drain(..n);
                }
                Err(e) => {
                    tracing::warn!(error = %e, kept = pending.len(), "audit records not delivered yet");
                    if pending.len() > MAX_KEPT {
                        let drop = pending.len() - MAX_KEPT;
                        tracing::error!(dropped = drop, "audit records dropped: the control plane has been unreachable too long");
                        pending.drain(..drop);
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    break;
                }
            }
        }
    }
}
