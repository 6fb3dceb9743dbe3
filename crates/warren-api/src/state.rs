use std::sync::Arc;

use crate::service::SandboxService;
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
    pub sandboxes: Arc<SandboxService>,
    pub tokens: Arc<TokenSigner>,
    pub public: PublicMode,
    pub webhooks: Arc<crate::webhooks::Dispatcher>,
    pub audit: Arc<crate::audit::Auditor>,
    pub rate: Arc<crate::limits::RateLimiter>,
    /// Set when the API and sandbox listeners speak HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Largest request body forwarded to a sandbox (uploads, file writes, code).
    pub max_body_bytes: u64,
    pub builds: Arc<crate::builds::Builds>,
    pub layers: Arc<warren_runtime::layers::LayerStore>,
    pub uploads: Arc<crate::builds::uploads::Uploads>,
    pub registry: Arc<crate::registry::Registry>,
    pub node_id: String,
    pub region: String,
}
