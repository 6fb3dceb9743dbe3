//! How the control plane reaches the machine that runs a sandbox: `NodeHandle`, the verbs the
//! lifecycle needs of any node, whether it is this control plane's own (`LocalNode`, in-process)
//! or one that joined (`RemoteNode`, over the node API). The lifecycle decides; a handle only
//! carries the command out and says, in one typed error, why it could not.

#[cfg(test)]
pub mod fake;
mod local;
mod remote;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use warren_core::{Resources, SandboxId, Tier};
use warren_node::{AgentLink, NodeError};
use warren_runtime::{SandboxSpec, SnapshotTaken};
use warren_wire::cluster::{MeasuredUsage, TemplateSource};
use warren_wire::control::EgressPolicy;

pub use local::LocalNode;
pub use remote::{RemoteError, RemoteNode};

use crate::template_spec::TemplateSpec;

/// What to start, as any node needs it.
#[derive(Debug, Clone)]
pub struct StartOrder {
    pub id: SandboxId,
    pub template_name: String,
    /// How it runs on this control plane's own machine: layers (host paths), working directory,
    /// start command and ready check, a saved machine to resume.
    pub run: TemplateSpec,
    /// The same template as a joined node finds it: a built-in one by name, or layers by key.
    pub source: TemplateSource,
    pub resources: Resources,
    pub internet_access: bool,
    pub egress: Option<EgressPolicy>,
    /// Secrets its node's egress proxy brokers.
    pub secrets: Vec<warren_wire::cluster::SecretBinding>,
    /// The template's environment with the caller's on top.
    pub env_vars: BTreeMap<String, String>,
    pub tier: Tier,
    /// The tenant it belongs to (rates and audit records on the node follow it).
    pub owner: String,
    /// Persistent volumes to mount: for this control plane's own node, directories on this
    /// machine; for a joined node, each volume's place inside the shared store (`Volumes::key`),
    /// which the node finds in its own view of the store.
    pub volumes: Vec<warren_runtime::VolumeMount>,
}

/// A sandbox a node started (or took over) and that is ready.
#[derive(Debug, Clone)]
pub struct NodeStarted {
    pub tier: Tier,
    /// Its listener's port (one listener per sandbox), None when routed by host name.
    pub port: Option<u16>,
    /// What a later server process needs to take it over (opaque JSON, kept in the store).
    pub handle: String,
    /// Paused (a sandbox taken over as it was found).
    pub paused: bool,
}

/// A sandbox an earlier server process started on this machine, to take over.
#[derive(Debug, Clone)]
pub struct AdoptOrder {
    pub id: SandboxId,
    pub tier: Tier,
    /// The handle its start returned (`NodeStarted::handle`).
    pub handle: String,
    pub owner: String,
    /// Recorded paused.
    pub paused: bool,
    /// Its listener's port before, kept when still free.
    pub port: Option<u16>,
}

/// What a create gives a warm sandbox when it takes it.
#[derive(Debug, Clone, Default)]
pub struct HandOver {
    pub owner: String,
    /// Take its network link away (the create asks for no internet access); its handle says
    /// which link.
    pub cut_internet_of: Option<String>,
    /// Environment variables added to the sandbox's.
    pub env_vars: BTreeMap<String, String>,
}

/// Why a node could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeCallError {
    /// the node runs no such sandbox (it ended, or never started there)
    #[error("the sandbox is not running on its node")]
    NotRunning,
    /// the node does not run the tier asked for
    #[error("{0}")]
    NoSuchTier(String),
    /// this node, or this sandbox's tier, cannot do it; the message says why
    #[error("{0}")]
    Unsupported(String),
    /// the template's start command or ready check failed; the sandbox was removed
    #[error("it did not become ready: {0}")]
    NotReady(String),
    /// a joined node that stopped reporting: not waited for
    #[error("the sandbox's node {node} is not reporting; retry when it is back")]
    Silent { node: String },
    /// a sandbox taken over after a restart did not survive; what was left of it is removed
    #[error("{0}")]
    NotAdopted(String),
    /// the sandbox's runtime handle (kept in the store) cannot be read
    #[error("unreadable runtime handle: {0}")]
    BadHandle(serde_json::Error),
    #[error(transparent)]
    Local(NodeError),
    #[error(transparent)]
    Remote(RemoteError),
}

impl From<NodeError> for NodeCallError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotRunning(_) => Self::NotRunning,
            NodeError::NoSuchTier { .. } => Self::NoSuchTier(e.to_string()),
            NodeError::NotReady(why) => Self::NotReady(why.to_string()),
            NodeError::Egress(why) | NodeError::AgentProtocol(why) => Self::Unsupported(why),
            NodeError::Driver(warren_runtime::DriverError::Unsupported(why)) => {
                Self::Unsupported(why)
            }
            e => Self::Local(e),
        }
    }
}

/// The verbs the lifecycle needs of the node that runs (or will run) a sandbox.
#[async_trait]
pub trait NodeHandle: Send + Sync {
    /// The tiers it runs, its default first.
    fn tiers(&self) -> Vec<Tier>;
    /// Whether the machine can take one more sandbox now (quotas are promises; this is what the
    /// machine really has). The error says what is short.
    fn has_room(&self) -> Result<(), warren_node::NoRoom>;
    /// The sandboxes it runs (or holds paused) now.
    fn sandboxes(&self) -> BTreeSet<SandboxId>;
    fn runs(&self, id: &SandboxId) -> bool {
        self.sandboxes().contains(id)
    }

    /// Starts a sandbox and returns once it is ready (its template's start command runs and its
    /// ready check passed); a sandbox that is not ready is removed.
    async fn start(&self, order: StartOrder) -> Result<NodeStarted, NodeCallError>;
    /// Stops a sandbox and removes every trace of it. One that does not run is already gone.
    async fn stop(&self, id: &SandboxId) -> Result<(), NodeCallError>;
    async fn pause(&self, id: &SandboxId) -> Result<(), NodeCallError>;
    async fn resume(&self, id: &SandboxId) -> Result<(), NodeCallError>;
    /// Its running sandboxes unused for at least `idle_for`: no request through its proxy and
    /// no CPU use to speak of (`warren_node::Node::idle_sandboxes`).
    async fn idle_sandboxes(&self, idle_for: Duration) -> Result<Vec<SandboxId>, NodeCallError>;
    /// Pauses the sandbox if it is still unused for `idle_for`; false when it was in use.
    async fn pause_if_idle(
        &self,
        id: &SandboxId,
        idle_for: Duration,
    ) -> Result<bool, NodeCallError>;
    /// What the sandbox uses, measured from outside it.
    async fn usage(&self, id: &SandboxId) -> Result<MeasuredUsage, NodeCallError>;
    /// Captures a sandbox into `dir` (see `IsolationDriver::snapshot`).
    async fn snapshot(&self, id: &SandboxId, dir: &Path) -> Result<SnapshotTaken, NodeCallError>;
    /// Replaces a running sandbox's egress policy (`handle`: what its start returned).
    async fn set_network(
        &self,
        id: &SandboxId,
        handle: &str,
        egress: Option<&EgressPolicy>,
        secrets: &[warren_wire::cluster::SecretBinding],
        internet_access: bool,
    ) -> Result<(), NodeCallError>;
    /// Gives a warm sandbox to the create that took it.
    async fn hand_over(&self, id: &SandboxId, to: HandOver) -> Result<(), NodeCallError>;

    /// Starts a template build step's sandbox, reached by the control plane only; returns the
    /// link to its agent.
    async fn start_build(&self, spec: SandboxSpec, owner: &str)
        -> Result<AgentLink, NodeCallError>;
    /// Takes over a sandbox an earlier server process started here.
    async fn adopt(&self, order: AdoptOrder) -> Result<NodeStarted, NodeCallError>;
    /// Removes what earlier server processes left on the machine that is none of its sandboxes
    /// now (call after adopting).
    async fn remove_leftovers(&self);
}
