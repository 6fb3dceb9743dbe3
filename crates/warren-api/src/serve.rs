//! Assembles the single-machine platform (store, host layer and tiers, node, control plane) and
//! serves it until SIGTERM/SIGINT.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use warren_node::machine::{self, MachineConfig};
use warren_node::{Listeners, Node, NodeConfig, TlsListener};
use warren_runtime::templates::{builtin_recipes, TemplateCache};
use warren_store::{Store, TemplateRecord, TemplateStatus};

use crate::audit::Auditor;
use crate::cluster::Cluster;
use crate::gate::ControlGate;
use crate::lifecycle::{Lifecycle, LifecycleConfig, TemplateRoots};
use crate::limits::RateLimiter;
use crate::nodes::{LocalNode, NodeHandle};
use crate::state::{self, PublicMode};
use crate::tokens::TokenSigner;
use crate::{builds, clock, limits, routes, tls};
use warren_node::webhooks::Dispatcher;

pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub public: PublicMode,
    /// Accepted as a full-rights key if set (stored hashed).
    pub api_key: Option<warren_core::Secret>,
    pub network_base: Ipv4Addr,
    pub debian_mirror: Option<String>,
    pub region: String,
    /// Build missing built-in templates in the background at start.
    pub prebuild_templates: bool,
    pub limits: limits::Limits,
    /// How long audit events are kept.
    pub audit_retention: std::time::Duration,
    /// HTTPS for the API and the sandbox listeners. None: plain HTTP, which `serve` accepts only
    /// on loopback unless `allow_plain_http`; elsewhere it generates a local CA instead.
    pub tls: Option<tls::TlsSource>,
    pub allow_plain_http: bool,
    /// Largest request body forwarded to a sandbox.
    pub max_body_bytes: u64,
    /// Registries reached over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// Pull Docker Hub images through this registry.
    pub registry_mirror: Option<String>,
    /// Offer the gVisor tier when `runsc` works here.
    pub gvisor: bool,
    /// How the egress proxy resolves names (`--egress-resolve`).
    pub egress_resolver: warren_egress::Resolver,
    /// CA certificates (PEM) the egress proxy trusts upstream (`--egress-upstream-ca`).
    pub egress_upstream_ca: Vec<String>,
    pub runsc: PathBuf,
    /// Offer the microVM tier when QEMU and a guest kernel are installed.
    pub microvm: bool,
    pub qemu: PathBuf,
    /// An unpacked Debian kernel package for microVM guests (`scripts/guest-kernel`).
    pub guest_kernel_dir: PathBuf,
    /// Tier of sandboxes that do not ask for one.
    pub default_isolation: warren_core::Tier,
    /// Whether a create request may pick its own tier (`"isolation"`).
    pub allow_isolation_override: bool,
    /// PostgreSQL instead of SQLite in the data dir.
    pub database_url: Option<String>,
    /// Run no sandboxes here: only place them on nodes that joined (`warren node`).
    pub no_local_node: bool,
    /// What `warren node` must present to join (none: no node can join).
    pub node_join_secret: Option<warren_core::Secret>,
    /// The cluster's shared volume store, attached (`--volumes-juicefs`); none: volumes are
    /// images on this machine.
    pub shared_volumes: Option<std::sync::Arc<warren_volume_fs::SharedStore>>,
    /// On SIGTERM/SIGINT, stop every sandbox instead of leaving them running for the next
    /// server to take over.
    pub stop_sandboxes_on_exit: bool,
    /// Warm pools to keep (`--pool TEMPLATE=N`).
    pub pools: Vec<crate::lifecycle::PoolTarget>,
    /// Without `pools`: warm pools sized by the recent creates of built-in templates
    /// (false: `--no-pool`).
    pub pools_by_demand: bool,
}

/// Host names and addresses a generated certificate must cover.
fn certificate_names(cfg: &ServeConfig) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(h) = nix::unistd::gethostname() {
        names.push(h.to_string_lossy().into_owned());
    }
    if !cfg.listen.ip().is_unspecified() {
        names.push(cfg.listen.ip().to_string());
    }
    match &cfg.public {
        PublicMode::Local { host, bind } => {
            names.push(host.clone());
            if !bind.is_unspecified() {
                names.push(bind.to_string());
            }
        }
        PublicMode::Wildcard { domain, .. } => names.push(format!("*.{domain}")),
    }
    names.sort();
    names.dedup();
    names
}

/// Decides between the configured TLS, a generated local CA, and plain HTTP.
fn tls_setup(cfg: &ServeConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let exposed = !cfg.listen.ip().is_loopback()
        || matches!(&cfg.public, PublicMode::Local { bind, .. } if !bind.is_loopback());
    let source = match (&cfg.tls, exposed && !cfg.allow_plain_http) {
        (Some(s), _) => s.clone(),
        (None, true) => {
            tracing::warn!("listening beyond loopback without --tls-cert: generating a local CA (use --allow-plain-http to serve plain HTTP)");
            tls::TlsSource::Generated {
                names: certificate_names(cfg),
            }
        }
        (None, false) => return Ok(None),
    };
    let source = match source {
        tls::TlsSource::Generated { names } if names.is_empty() => tls::TlsSource::Generated {
            names: certificate_names(cfg),
        },
        s => s,
    };
    let (acceptor, ca) = tls::acceptor(&source, &cfg.data_dir).context("set up TLS")?;
    if let Some(ca) = ca {
        tracing::info!(ca = %ca.display(), "HTTPS with a local CA: clients must trust this file (SSL_CERT_FILE / REQUESTS_CA_BUNDLE / NODE_EXTRA_CA_CERTS)");
        eprintln!("warren: HTTPS certificate authority: {}", ca.display());
    }
    Ok(Some(acceptor))
}

/// The assembled platform of one machine, before it serves.
struct Platform {
    lifecycle: Arc<Lifecycle>,
    /// None with `--no-local-node`.
    node: Option<Arc<Node>>,
    templates: Arc<TemplateRoots>,
    state: state::AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Runs the whole single-machine platform until SIGTERM/SIGINT. Sandboxes an earlier server left
/// running are taken over first; at the end they keep running for the next server, unless
/// `stop_sandboxes_on_exit`.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let p = assemble(&cfg).await?;
    let restored = p.lifecycle.restore().await.context("take over sandboxes")?;
    if restored.adopted + restored.lost > 0 {
        tracing::info!(
            adopted = restored.adopted,
            stopped = restored.lost,
            ms = restored.took.as_millis() as u64,
            "sandboxes of the previous server taken over"
        );
    }
    p.lifecycle
        .configure_pools(cfg.pools.clone(), cfg.pools_by_demand)
        .await
        .context("warm pools")?;
    tokio::spawn(p.lifecycle.clone().keep_pools());
    tokio::spawn(lead_periodic_jobs(
        p.state.store.clone(),
        p.lifecycle.clone(),
        cfg.audit_retention,
    ));
    if cfg.prebuild_templates {
        let templates = p.templates.clone();
        tokio::spawn(async move {
            for r in builtin_recipes() {
                if let Err(e) = templates.ensure(&r).await {
                    tracing::error!(template = r.name, error = %e, "template build failed");
                }
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))?;
    let scheme = if p.tls.is_some() { "https" } else { "http" };
    tracing::info!(url = %format!("{scheme}://{}", cfg.listen), data_dir = %cfg.data_dir.display(), "warren is serving");
    match p.tls {
        Some(acceptor) => {
            let listener = TlsListener::new(listener, acceptor).context("TLS listener")?;
            axum::serve(listener, routes::app(p.state))
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serve")?;
        }
        None => {
            axum::serve(warren_node::no_delay(listener), routes::app(p.state))
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serve")?;
        }
    }
    if cfg.stop_sandboxes_on_exit {
        tracing::info!("shutting down: stopping every sandbox (--stop-sandboxes-on-exit)");
    }
    let kept = p
        .lifecycle
        .shut_down(
            cfg.stop_sandboxes_on_exit
                .then_some("the server was stopped with --stop-sandboxes-on-exit"),
        )
        .await;
    // Sandboxes that run on keep their own mounts of their volumes.
    p.lifecycle.volumes().unmount_all();
    if let (0, Some(node)) = (kept, &p.node) {
        node.release_host().await;
        tracing::info!("shut down; no sandbox is left running");
    } else {
        tracing::info!(
            sandboxes = kept,
            "shut down; the sandboxes keep running and the next `warren serve` with this data dir \
             takes them over (to stop them all: `warren stop-sandboxes` with the same data dir, or \
             `warren serve --stop-sandboxes-on-exit`)"
        );
    }
    Ok(())
}

/// Stops every sandbox an earlier server left running for this data dir, and removes all they
/// left: for when no server runs. Returns how many were still running.
pub async fn stop_sandboxes(cfg: ServeConfig) -> anyhow::Result<usize> {
    let p = assemble(&cfg).await?;
    let restored = p.lifecycle.restore().await.context("find the sandboxes")?;
    p.lifecycle
        .shut_down(Some("stopped with `warren stop-sandboxes`"))
        .await;
    p.lifecycle.volumes().unmount_all();
    if let Some(node) = &p.node {
        node.release_host().await;
    }
    Ok(restored.adopted)
}

async fn assemble(cfg: &ServeConfig) -> anyhow::Result<Platform> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
    std::fs::create_dir_all(&cfg.cache_dir)
        .with_context(|| format!("create cache dir {}", cfg.cache_dir.display()))?;
    let store = Store::open_url_or_dir(cfg.database_url.as_deref(), &cfg.data_dir)
        .await
        .context("open store")?;
    let interrupted = store.fail_interrupted_builds(clock::now()).await?;
    if interrupted > 0 {
        tracing::warn!(
            builds = interrupted,
            "template builds interrupted by the last shutdown marked failed"
        );
    }
    let now = clock::now();
    if let Some(key) = cfg
        .api_key
        .as_ref()
        .map(warren_core::Secret::expose)
        .filter(|k| !k.is_empty())
    {
        let environment = if key.starts_with("wrn_test_") {
            warren_store::KeyEnvironment::Test
        } else {
            warren_store::KeyEnvironment::Live
        };
        let spec = warren_store::KeySpec {
            name: "WARREN_API_KEY",
            tenant: "default",
            role: warren_store::Role::Admin,
            environment,
            expires_at: None,
        };
        let rec = store
            .ensure_api_key(&spec, key, now)
            .await
            .context("register WARREN_API_KEY")?;
        tracing::info!(key_id = %rec.id, "WARREN_API_KEY accepted");
    }
    let templates = TemplateCache::new(&cfg.cache_dir, cfg.debian_mirror.clone());
    register_builtin_templates(&store, &templates, cfg.no_local_node, now).await?;

    let tls = tls_setup(cfg)?;
    let tokens = Arc::new(
        TokenSigner::load(&store, &cfg.data_dir)
            .await
            .context("load token signing key")?,
    );
    let audit = Auditor::start(store.clone());
    let rate = Arc::new(RateLimiter::new(&cfg.limits));
    {
        let rate = rate.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                rate.forget_idle();
            }
        });
    }
    let gate_lifecycle = Arc::new(std::sync::OnceLock::new());
    let (node, node_events) = if cfg.no_local_node {
        (None, None)
    } else {
        let (host, tiers) = machine::prepare(&MachineConfig {
            data_dir: cfg.data_dir.clone(),
            cache_dir: cfg.cache_dir.clone(),
            network_base: cfg.network_base,
            gvisor: cfg.gvisor,
            runsc: cfg.runsc.clone(),
            microvm: cfg.microvm,
            qemu: cfg.qemu.clone(),
            guest_kernel_dir: cfg.guest_kernel_dir.clone(),
            default_isolation: cfg.default_isolation,
            egress_resolver: cfg.egress_resolver.clone(),
            egress_upstream_ca: cfg.egress_upstream_ca.clone(),
        })
        .await?;
        let gate = Arc::new(ControlGate {
            tokens: tokens.clone(),
            rate: rate.clone(),
            audit: audit.clone(),
            webhooks: Arc::new(Dispatcher::new()),
            lifecycle: gate_lifecycle.clone(),
        });
        let listeners = match &cfg.public {
            PublicMode::Local { bind, .. } => Listeners::Local { bind: *bind },
            PublicMode::Wildcard { .. } => Listeners::Wildcard,
        };
        let (node, events) = Node::new(
            NodeConfig {
                host,
                tiers,
                listeners,
                tls: tls.clone(),
                max_body_bytes: cfg.max_body_bytes,
            },
            gate,
        );
        (Some(node), Some(events))
    };
    let cluster = Cluster::new(
        node.clone()
            .map(|n| Arc::new(LocalNode(n)) as Arc<dyn NodeHandle>),
        cfg.region.clone(),
        store.clone(),
        tokens.clone(),
        cfg.node_join_secret.clone(),
    );
    cluster.refresh().await;
    tokio::spawn(cluster.clone().follow_store());
    let templates = Arc::new(TemplateRoots::new(templates, store.clone()));
    let lifecycle = Arc::new(Lifecycle::new(
        store.clone(),
        cluster.clone(),
        templates.clone(),
        LifecycleConfig {
            limits: cfg.limits.clone(),
            allow_isolation_override: cfg.allow_isolation_override,
            snapshots_dir: cfg.data_dir.join("snapshots"),
            vault: Arc::new(
                crate::secrets::SecretVault::open(store.clone(), &cfg.data_dir)
                    .context("open the secret store")?,
            ),
            volumes: Arc::new(match &cfg.shared_volumes {
                Some(store) => crate::volumes::Volumes::shared(&cfg.data_dir, store.clone()),
                None => crate::volumes::Volumes::new(&cfg.data_dir),
            }),
        },
    ));
    // Set once: the gate was made before the lifecycle existed.
    let _ = gate_lifecycle.set(Arc::downgrade(&lifecycle));
    if let Some(mut node_events) = node_events {
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move {
            while let Some(event) = node_events.recv().await {
                lifecycle.on_node_event(event).await;
            }
        });
    }
    let node_id = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "local".into());
    let state = state::AppState {
        lifecycle: lifecycle.clone(),
        node: node.clone(),
        cluster,
        store: store.clone(),
        tokens,
        public: cfg.public.clone(),
        audit,
        rate,
        https: tls.is_some(),
        builds: Arc::new(builds::Builds::default()),
        layers: Arc::new(warren_runtime::layers::LayerStore::new(&cfg.cache_dir)),
        uploads: Arc::new(builds::uploads::Uploads::new(&cfg.data_dir)),
        volumes: lifecycle.volumes().clone(),
        registry: Arc::new(builds::registry::Registry::new(
            &cfg.cache_dir,
            cfg.insecure_registries.clone(),
            cfg.registry_mirror.clone(),
        )),
        node_id,
        region: cfg.region.clone(),
    };

    Ok(Platform {
        lifecycle,
        node,
        templates,
        state,
        tls,
    })
}

/// Records the built-in templates in the store: active where their root file system is built
/// (or, without a node here, where the nodes prepare their own), pending until then.
pub(crate) async fn register_builtin_templates(
    store: &Store,
    templates: &TemplateCache,
    no_local_node: bool,
    now: i64,
) -> Result<(), warren_store::StoreError> {
    for r in builtin_recipes() {
        // Without a node of its own, the nodes prepare built-in templates themselves.
        let status = if no_local_node || templates.is_ready(&r) {
            TemplateStatus::Active
        } else {
            TemplateStatus::Pending
        };
        store
            .upsert_template(&TemplateRecord {
                id: r.id.to_owned(),
                name: r.name.to_owned(),
                display_name: r.display_name.to_owned(),
                description: Some(r.description.to_owned()),
                category: Some(r.category.to_owned()),
                language: Some(r.language.to_owned()),
                resources: r.resources,
                status,
                is_public: true,
                tenant: None,
                spec: None,
                build_started_at: None,
                build_finished_at: None,
                error_message: None,
                created_at: now,
                updated_at: now,
            })
            .await?;
        store.set_template_status(r.id, status, None, now).await?;
    }
    Ok(())
}

/// Runs the periodic jobs (expiry reaper, audit retention) while this control plane holds their
/// lead: exactly one of several control planes on one PostgreSQL does (SQLite: always this one).
/// When the leader dies, its lock goes with its connection and another takes over within seconds.
async fn lead_periodic_jobs(
    store: warren_store::Store,
    lifecycle: Arc<Lifecycle>,
    retention: std::time::Duration,
) {
    const RETRY: std::time::Duration = std::time::Duration::from_secs(3);
    loop {
        match store.try_lead().await {
            Ok(Some(mut lead)) => {
                tracing::info!(
                    "this control plane runs the periodic jobs (reaper, audit retention)"
                );
                let reaper = tokio::spawn(lifecycle.clone().reap_forever());
                let idle_pause = lifecycle.limits().idle_pause_seconds.map(|s| {
                    tokio::spawn(
                        lifecycle
                            .clone()
                            .pause_idle_forever(std::time::Duration::from_secs(s)),
                    )
                });
                let purge = tokio::spawn(crate::audit::purge_forever(store.clone(), retention));
                while lead.still_held().await {
                    tokio::time::sleep(RETRY).await;
                }
                reaper.abort();
                purge.abort();
                if let Some(idle_pause) = idle_pause {
                    idle_pause.abort();
                }
                tracing::warn!(
                    "lost the lead of the periodic jobs; another control plane takes them"
                );
            }
            Ok(None) => tokio::time::sleep(RETRY).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask for the lead of the periodic jobs");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Resolves at SIGTERM or SIGINT (for `warren serve` and `warren node`).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
