use std::sync::Arc;

use warren_store::Store;

use crate::lifecycle::Lifecycle;
use crate::tokens::TokenSigner;

/// How sandboxes are reached from outside.
#[derive(Debug, Clone)]
pub enum PublicMode {
    /// Each sandbox gets `http://<bind>:<port>` on this machine.
    Local {
        bind: std::net::IpAddr,
        host: String,
    },
    /// `{port}-{id}.{domain}` routed by Host header on the main listener.
    Wildcard { domain: String, scheme: String },
}

#[derive(Clone)]
pub struct AppState {
    pub lifecycle: Arc<Lifecycle>,
    /// This control plane's own node, whose proxy serves its sandboxes' requests (None with
    /// `--no-local-node`). The lifecycle reaches it through `cluster.local`.
    pub node: Option<Arc<warren_node::Node>>,
    pub cluster: Arc<crate::cluster::Cluster>,
    pub store: Store,
    pub tokens: Arc<TokenSigner>,
    pub public: PublicMode,
    pub audit: Arc<crate::audit::Auditor>,
    pub rate: Arc<crate::limits::RateLimiter>,
    /// Whether the API and sandbox listeners speak HTTPS.
    pub https: bool,
    pub builds: Arc<crate::builds::Builds>,
    pub layers: Arc<warren_runtime::layers::LayerStore>,
    pub uploads: Arc<crate::builds::uploads::Uploads>,
    pub registry: Arc<crate::builds::registry::Registry>,
    pub volumes: Arc<crate::volumes::Volumes>,
    pub node_id: String,
    pub region: String,
}
