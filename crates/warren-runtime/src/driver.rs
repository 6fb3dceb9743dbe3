//! The isolation driver interface. The control plane sees only this; each isolation tier
//! (namespaces, gVisor, microVMs) is one implementation, dispatched by `AnyDriver`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::oneshot;
use warren_core::{Resources, SandboxId};

/// What to start.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub template_name: String,
    /// The template's read-only layers on the host, topmost first (a built-in template is one
    /// layer; an image or a built template several).
    pub layers: Vec<PathBuf>,
    /// Keep the writable layer here, on disk, instead of a tmpfs that dies with the sandbox (build
    /// steps: the upper directory becomes the step's layer).
    pub persistent_upper: Option<PathBuf>,
    /// The template's WORKDIR, the default working directory of runs and terminals.
    pub workdir: Option<String>,
    pub resources: Resources,
    pub internet_access: bool,
    pub env_vars: BTreeMap<String, String>,
}

/// A sandbox whose agent answers.
pub struct StartedSandbox {
    /// Host path of the agent's unix socket.
    pub agent_socket: PathBuf,
    /// Where ports the sandbox listens on are reached from inside its network namespace: its
    /// loopback, or a VM guest's address.
    pub port_host: std::net::Ipv4Addr,
    /// Resolves with the init's exit code when the sandbox dies, for whatever reason.
    pub exited: oneshot::Receiver<i32>,
}

/// Resource usage, read from outside the sandbox (the sandbox cannot lie about it).
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxUsage {
    pub memory_bytes: u64,
    pub processes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cgroup: {0}")]
    Cgroup(#[from] crate::host::cgroups::CgroupError),
    #[error("network: {0}")]
    Network(#[from] crate::host::network::NetworkError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// the sandbox did not come up; the message carries the agent's or jail's last words
    #[error("sandbox failed to start: {0}")]
    Start(String),
    #[error("sandbox {0} is not running on this host")]
    NotFound(SandboxId),
    /// The namespace tier owns host-wide names (netns, veth, the nftables table, cgroups), so
    /// two servers on one host would remove each other's sandboxes.
    #[error(
        "another `warren serve` already runs sandboxes on this host (it holds {0}); stop it first"
    )]
    HostBusy(String),
}

/// One isolation tier.
#[allow(async_fn_in_trait)] // only used through the `AnyDriver` enum, never as `dyn`
pub trait IsolationDriver {
    /// Short name shown in API objects and `warren doctor` ("namespaces", "gvisor", "microvm").
    fn name(&self) -> &'static str;
    /// Starts the sandbox and returns once its agent listens.
    async fn start(&self, spec: &SandboxSpec) -> Result<StartedSandbox, DriverError>;
    /// Freezes every process; memory and files are kept.
    async fn pause(&self, id: &SandboxId) -> Result<(), DriverError>;
    async fn resume(&self, id: &SandboxId) -> Result<(), DriverError>;
    /// Whether a sandbox keeps a clock of its own (a VM's kernel), which its agent must be told
    /// the host's time for when it starts (a guest's RTC counts whole seconds) and when it resumes
    /// (a guest restored from a saved state resumes at the time it was paused).
    fn has_own_clock(&self) -> bool {
        false
    }
    /// Removes every trace: processes, mounts, cgroups, network namespace, veth, files.
    async fn destroy(&self, id: &SandboxId) -> Result<(), DriverError>;
    fn usage(&self, id: &SandboxId) -> Option<SandboxUsage>;
    /// Removes what of this tier an earlier server process left behind (after a crash), once
    /// the host layer has removed the leftover cgroups and namespaces.
    async fn remove_leftovers(&self);
}

/// The closed set of drivers. An enum rather than `dyn` keeps async methods simple and makes the
/// set of tiers visible in one place. Cheap to clone: each variant is shared.
#[derive(Clone)]
pub enum AnyDriver {
    Namespaces(std::sync::Arc<crate::namespaces::NamespaceDriver>),
    Gvisor(std::sync::Arc<crate::gvisor::GvisorDriver>),
    Microvm(std::sync::Arc<crate::microvm::MicrovmDriver>),
}

macro_rules! each {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            AnyDriver::Namespaces($d) => $e,
            AnyDriver::Gvisor($d) => $e,
            AnyDriver::Microvm($d) => $e,
        }
    };
}

impl IsolationDriver for AnyDriver {
    fn name(&self) -> &'static str {
        each!(self, d => d.name())
    }
    async fn start(&self, spec: &SandboxSpec) -> Result<StartedSandbox, DriverError> {
        each!(self, d => d.start(spec).await)
    }
    async fn pause(&self, id: &SandboxId) -> Result<(), DriverError> {
        each!(self, d => d.pause(id).await)
    }
    async fn resume(&self, id: &SandboxId) -> Result<(), DriverError> {
        each!(self, d => d.resume(id).await)
    }
    fn has_own_clock(&self) -> bool {
        each!(self, d => d.has_own_clock())
    }
    async fn destroy(&self, id: &SandboxId) -> Result<(), DriverError> {
        each!(self, d => d.destroy(id).await)
    }
    fn usage(&self, id: &SandboxId) -> Option<SandboxUsage> {
        each!(self, d => d.usage(id))
    }
    async fn remove_leftovers(&self) {
        each!(self, d => d.remove_leftovers().await)
    }
}
