//! The node layer: everything that runs sandboxes on one machine. It owns the isolation tiers,
//! the registry of live sandboxes, each sandbox's listener and the proxy in front of its agent,
//! and the one typed link to agents. The control plane decides (who may create what, quotas,
//! templates, tokens, where audit records go) and calls the node through `Node`'s typed
//! commands: in-process today, over the network once a cluster has several nodes.

mod activity;
mod agent_link;
pub mod build_step;
pub mod daemon;
pub mod egress;
mod egress_audit;
mod error;
mod gate;
pub mod layer_archive;
pub mod machine;
mod node;
mod proxy;
pub mod readiness;
mod registry;
mod tls_listener;
pub mod tokens;
mod transport;
mod usage;
pub mod webhooks;

pub use agent_link::{bash, AgentError, AgentLink};
pub use error::{NoRoom, NodeError};
pub use gate::{AgentAction, AgentCall, Gate, Refusal};
pub use node::{Adopt, Listeners, Node, NodeConfig, NodeEvent, SandboxStart, Started};
pub use proxy::{
    e2b_target, parse_wildcard_host, set_e2b_target, status_outcome, Proxy, AGENT_PORT,
    E2B_ENVD_PORT, E2B_INTERPRETER_PORT,
};
pub use registry::RunState;
pub use tls_listener::{no_delay, TlsListener};
pub use transport::{agent_error, request_host, send_over};

/// Tiers as people read them in messages: `namespaces, gvisor`.
pub fn tier_list(tiers: &[warren_core::Tier]) -> String {
    tiers
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
