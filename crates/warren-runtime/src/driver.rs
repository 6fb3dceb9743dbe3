//! The isolation driver interface. The control plane sees only this; each isolation tier
//! (namespaces, gVisor, microVMs) is one implementation, dispatched by `AnyDriver`.

use std::collections::BTreeMap;
use std::path::PathBuf;

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

pub use crate::host::{SandboxUsage, StartedSandbox};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
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

impl From<crate::host::cgroups::CgroupError> for DriverError {
    fn from(e: crate::host::cgroups::CgroupError) -> Self {
        Self::Host(e.into())
    }
}

impl From<crate::host::network::NetworkError> for DriverError {
    fn from(e: crate::host::network::NetworkError) -> Self {
        Self::Host(e.into())
    }
}
