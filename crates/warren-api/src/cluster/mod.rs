//! Many machines: the nodes that joined this control plane's store, where a new sandbox goes,
//! and how to reach the node that runs a sandbox. A control plane may also run a node of its
//! own (the single-machine default), which it calls in-process.
//!
//! Every control plane reads the node table from the shared store (refreshed each second), so
//! any replica can place a sandbox or reach its node; nothing here is held only in memory
//! except the count of placements since a node's last report.

mod placement;
pub mod routes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use warren_core::Tier;
use warren_store::{NodeRecord, Store};
use warren_wire::cluster::NodeReport;

pub use placement::{Placement, TemplateNeed, Wanted};

/// How nodes name a template layer: a layer of the layer store by its key (its directory's name),
/// a built-in template's root file system (`<cache>/templates/<name>/rootfs`) as `builtin:<name>`.
pub fn layer_keys(layers: &[std::path::PathBuf]) -> Vec<String> {
    layers
        .iter()
        .filter_map(|l| {
            let name = l.file_name()?.to_str()?;
            let parent = l.parent()?;
            let in_templates =
                parent.parent()?.file_name().and_then(|n| n.to_str()) == Some("templates");
            if name == "rootfs" && in_templates {
                let template = parent.file_name()?.to_str()?;
                Some(warren_wire::cluster::builtin_layer_key(template))
            } else {
                Some(name.to_owned())
            }
        })
        .collect()
}
use crate::nodes::{NodeHandle, RemoteNode};
use crate::tokens::TokenSigner;

/// How often nodes report.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node that has not reported for this long is unhealthy: nothing new goes there.
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(6);

/// One node as the control plane knows it from the store.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub record: NodeRecord,
    pub report: NodeReport,
    pub labels: BTreeMap<String, String>,
}

impl NodeView {
    fn from_record(record: NodeRecord) -> Self {
        let report = serde_json::from_str(&record.report).unwrap_or_default();
        let labels = serde_json::from_str(&record.labels).unwrap_or_default();
        Self {
            record,
            report,
            labels,
        }
    }

    pub fn region(&self) -> Option<&str> {
        self.labels.get("region").map(String::as_str)
    }

    /// Seconds since its last report.
    pub fn silent_for(&self) -> f64 {
        (crate::audit::now_ms() - self.record.last_seen).max(0) as f64 / 1000.0
    }

    /// The tiers it reported, its default first (a name this control plane does not know is left
    /// out).
    pub fn tiers(&self) -> Vec<Tier> {
        self.report
            .tiers
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect()
    }

    pub fn healthy(&self) -> bool {
        self.silent_for() < UNHEALTHY_AFTER.as_secs_f64()
    }

    /// `healthy`, `unhealthy` or `draining`.
    pub fn state(&self) -> &'static str {
        if !self.healthy() {
            "unhealthy"
        } else if self.record.state == "draining" {
            "draining"
        } else {
            "healthy"
        }
    }
}

pub struct Cluster {
    /// This control plane's own node (absent with `--no-local-node`).
    pub local: Option<Arc<dyn NodeHandle>>,
    /// The region label of the local node.
    pub local_region: String,
    store: Store,
    tokens: Arc<TokenSigner>,
    http: reqwest::Client,
    nodes: RwLock<Vec<NodeView>>,
    /// Sandboxes placed on each node since its last report (reports lag by a heartbeat; without
    /// this, a burst of creates would all pick the same emptiest node).
    placed_since_report: Mutex<HashMap<String, (i64, u32)>>,
    /// Clients for nodes with a CA of their own: node id -> (CA PEM, client).
    node_clients: Mutex<HashMap<String, (String, reqwest::Client)>>,
    /// What nodes must present to join (none: this control plane accepts no nodes).
    pub join_secret: Option<warren_core::Secret>,
}

impl Cluster {
    pub fn new(
        local: Option<Arc<dyn NodeHandle>>,
        local_region: String,
        store: Store,
        tokens: Arc<TokenSigner>,
        join_secret: Option<warren_core::Secret>,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Arc::new(Self {
            local,
            local_region,
            store,
            tokens,
            http,
            nodes: RwLock::new(Vec::new()),
            placed_since_report: Mutex::new(HashMap::new()),
            node_clients: Mutex::new(HashMap::new()),
            join_secret,
        })
    }

    /// Reads the node table now, then every second.
    pub async fn follow_store(self: Arc<Self>) {
        loop {
            self.refresh().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub async fn refresh(&self) {
        match self.store.list_nodes().await {
            Ok(records) => {
                let views = records.into_iter().map(NodeView::from_record).collect();
                *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = views;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the node table"),
        }
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn node(&self, id: &str) -> Option<NodeView> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|n| n.record.id == id)
            .cloned()
    }

    /// The client of a joined node.
    pub fn remote(&self, id: &str) -> Option<RemoteNode> {
        self.node(id).map(|n| {
            RemoteNode::new(
                &n.record.id,
                &n.record.api_url,
                self.http_for(&n),
                self.tokens.clone(),
                n.healthy(),
                n.tiers(),
            )
        })
    }

    /// An HTTP client for calls to `node`: one that also trusts the node's own CA when it sent
    /// one at join (kept per node and CA, so connections are reused).
    fn http_for(&self, node: &NodeView) -> reqwest::Client {
        let Some(pem) = node.record.ca_pem.as_deref() else {
            return self.http.clone();
        };
        let mut clients = self.node_clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ca, client)) = clients.get(&node.record.id) {
            if ca == pem {
                return client.clone();
            }
        }
        let built = reqwest::Certificate::from_pem(pem.as_bytes()).and_then(|cert| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .add_root_certificate(cert)
                .build()
        });
        match built {
            Ok(client) => {
                clients.insert(node.record.id.clone(), (pem.to_owned(), client.clone()));
                client
            }
            Err(e) => {
                tracing::warn!(node = %node.record.id, error = %e, "the node's CA is unusable; calls to it will fail");
                self.http.clone()
            }
        }
    }

    /// Tiers some node of the cluster runs, the local node's (or else the first node's) default
    /// first.
    pub fn tiers(&self) -> Vec<Tier> {
        let mut tiers: Vec<Tier> = self.local.iter().flat_map(|n| n.tiers()).collect();
        for n in self.nodes().iter().filter(|n| n.healthy()) {
            for t in n.tiers() {
                if !tiers.contains(&t) {
                    tiers.push(t);
                }
            }
        }
        tiers
    }

    pub fn default_tier(&self) -> Tier {
        self.tiers().first().copied().unwrap_or(Tier::Namespaces)
    }

    pub fn has_tier(&self, tier: Tier) -> bool {
        self.tiers().contains(&tier)
    }

    /// A healthy node that holds layer `key` (built there, or fetched).
    pub fn holder_of(&self, key: &str) -> Option<NodeView> {
        self.nodes()
            .into_iter()
            .find(|n| n.healthy() && n.report.layers.iter().any(|l| l == key))
    }

    fn count_placement(&self, node: &NodeView) {
        let mut placed = self
            .placed_since_report
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = placed
            .entry(node.record.id.clone())
            .or_insert((node.record.last_seen, 0));
        if entry.0 != node.record.last_seen {
            *entry = (node.record.last_seen, 0);
        }
        entry.1 += 1;
    }

    fn placed_since(&self, node: &NodeView) -> u32 {
        self.placed_since_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node.record.id)
            .filter(|(seen, _)| *seen == node.record.last_seen)
            .map_or(0, |(_, n)| *n)
    }
}

impl Cluster {
    /// Wildcard mode: relays a request for a sandbox on node `id` (its agent or a preview port,
    /// WebSocket upgrades included) to that node's API address, Host header unchanged; the node
    /// routes it like a request of its own. HTTPS to the node when it serves HTTPS, trusting the
    /// CA it sent at join (or the system's roots).
    pub async fn relay(&self, id: &str, req: axum::extract::Request) -> axum::response::Response {
        use axum::http::StatusCode;
        let fail = |status: StatusCode, msg: String| {
            warren_node::agent_error(status, "SERVICE_UNAVAILABLE", &msg)
        };
        let Some(node) = self.node(id) else {
            return fail(
                StatusCode::NOT_FOUND,
                format!("node {id} is not in the cluster"),
            );
        };
        let Ok(url) = reqwest::Url::parse(&node.record.api_url) else {
            return fail(
                StatusCode::BAD_GATEWAY,
                format!("node {id} has an unusable address"),
            );
        };
        let (Some(host), Some(port)) = (
            url.host_str().map(str::to_owned),
            url.port_or_known_default(),
        ) else {
            return fail(
                StatusCode::BAD_GATEWAY,
                format!("node {id} has an unusable address"),
            );
        };
        let tcp = match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("node {id} is unreachable; its sandboxes answer again when it is back"),
                )
            }
        };
        let what = format!("node {id}");
        if url.scheme() != "https" {
            return warren_node::send_over(tcp, req, &what).await;
        }
        let connector = match tls_connector(node.record.ca_pem.as_deref()) {
            Ok(c) => c,
            Err(e) => return fail(StatusCode::BAD_GATEWAY, format!("TLS to node {id}: {e}")),
        };
        let Ok(name) = rustls::pki_types::ServerName::try_from(host.clone()) else {
            return fail(
                StatusCode::BAD_GATEWAY,
                format!("node {id}: bad host name {host}"),
            );
        };
        match connector.connect(name, tcp).await {
            Ok(tls) => warren_node::send_over(tls, req, &what).await,
            Err(e) => fail(StatusCode::BAD_GATEWAY, format!("TLS to node {id}: {e}")),
        }
    }
}

/// Why a TLS client for a node could not be made.
#[derive(Debug, thiserror::Error)]
enum TlsSetupError {
    #[error("read the CA bundle: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// A TLS client trusting `ca_pem` (a node's own CA), or else the system's CA bundle.
fn tls_connector(ca_pem: Option<&str>) -> Result<tokio_rustls::TlsConnector, TlsSetupError> {
    let pem = match ca_pem {
        Some(p) => p.as_bytes().to_vec(),
        None => std::fs::read("/etc/ssl/certs/ca-certificates.crt").map_err(TlsSetupError::Read)?,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.map_err(TlsSetupError::Read)?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
