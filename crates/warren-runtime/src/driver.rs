//! The isolation driver interface. The control plane sees only this; each isolation tier
//! (namespaces, gVisor, microVMs) is one implementation, dispatched by `AnyDriver`.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use warren_core::{Resources, SandboxId, Tier};

use crate::host::{AgentUp, HostRecord, ProcessRef, SandboxHost};

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
    /// Destinations allowed or denied beyond `internet_access` (E2B's `allowOut`/`denyOut`).
    pub egress: Option<crate::host::egress::Policy>,
    pub env_vars: BTreeMap<String, String>,
    /// Start from a snapshot that carries memory (a directory a tier's `snapshot` wrote, see
    /// `Snapshot::saved_state`) instead of booting: processes, memory and files as they were.
    pub saved_state: Option<PathBuf>,
    /// Persistent volumes mounted into the sandbox (they are not part of its snapshots).
    pub volumes: Vec<VolumeMount>,
}

pub use crate::host::idmapped::VolumeMount;

impl SandboxSpec {
    /// Whether the sandbox gets a link out (and so a resolver): internet access, or a policy
    /// that allows something.
    pub fn reaches_out(&self) -> bool {
        self.internet_access
            || self
                .egress
                .as_ref()
                .is_some_and(|e| !e.allow.is_empty() || e.has_domains())
    }
}

/// What `IsolationDriver::snapshot` wrote into the snapshot's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// A read-only layer of the sandbox's file changes, stacked on its template's layers by
    /// copies (which start afresh: no memory).
    Layer(PathBuf),
    /// The whole machine, memory included: copies resume from it (`SandboxSpec::saved_state`).
    SavedState(PathBuf),
}

/// A snapshot taken: what it is and the bytes it holds on the host's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    pub snapshot: Snapshot,
    pub bytes: u64,
}

pub use crate::host::SandboxUsage;

/// A sandbox whose agent answers.
pub struct StartedSandbox {
    /// Host path of the agent's unix socket.
    pub agent_socket: PathBuf,
    /// Where ports the sandbox listens on are reached from inside its network namespace: its
    /// loopback, or a VM guest's address.
    pub port_host: Ipv4Addr,
    /// Resolves with the init's exit code when the sandbox dies, for whatever reason.
    pub exited: oneshot::Receiver<i32>,
    /// What a later server process needs to take the sandbox over (`IsolationDriver::adopt`).
    pub handle: SandboxHandle,
}

/// What identifies a sandbox's processes and host parts, so that a restarted server can take it
/// over again. Written by the tier that started the sandbox, kept by the control plane as opaque
/// JSON (`to_json`, `from_json`), never shown to users.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxHandle {
    /// The tier that started it.
    pub tier: Tier,
    pub host: HostRecord,
    /// The sandbox's host directory.
    pub dir: PathBuf,
    pub agent_socket: PathBuf,
    pub port_host: Ipv4Addr,
    /// The agent bundle the sandbox runs (kept on disk while it does).
    pub agent_bundle: PathBuf,
    /// The process whose end is the sandbox's end, where the tier has one for its whole life.
    pub init: Option<ProcessRef>,
    /// What only the tier itself knows (a gVisor lower mount, a VM's boot files).
    #[serde(default)]
    pub tier_state: serde_json::Value,
}

impl StartedSandbox {
    /// A sandbox whose agent came up, with the handle of its `tier`; `init` and `tier_state`
    /// are the tier's to fill in.
    pub(crate) fn new(
        tier: Tier,
        up: AgentUp,
        host: &SandboxHost,
        dir: &Path,
        bundle: &Path,
    ) -> Self {
        Self {
            handle: SandboxHandle {
                tier,
                host: host.record(),
                dir: dir.to_path_buf(),
                agent_socket: up.agent_socket.clone(),
                port_host: up.port_host,
                agent_bundle: bundle.to_path_buf(),
                init: None,
                tier_state: serde_json::Value::Null,
            },
            agent_socket: up.agent_socket,
            port_host: up.port_host,
            exited: up.exited,
        }
    }
}

impl SandboxHandle {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A sandbox taken over by a new server process.
pub struct AdoptedSandbox {
    pub agent_socket: PathBuf,
    pub port_host: Ipv4Addr,
    /// Resolves when the sandbox dies (-1: a process that is not the server's child).
    pub exited: oneshot::Receiver<i32>,
    /// Whether it is paused, as found (a pause or resume the last server did not finish
    /// recording may differ from what the control plane believes).
    pub paused: bool,
}

impl AdoptedSandbox {
    pub(crate) fn new(
        handle: &SandboxHandle,
        exited: oneshot::Receiver<i32>,
        paused: bool,
    ) -> Self {
        Self {
            agent_socket: handle.agent_socket.clone(),
            port_host: handle.port_host,
            exited,
            paused,
        }
    }
}

/// Whether a tier's per-sandbox entry `name` (a directory, a runsc container) belongs to one of
/// the sandboxes in `keep`.
pub(crate) fn is_kept(name: &std::ffi::OsStr, keep: &HashSet<SandboxId>) -> bool {
    name.to_str()
        .and_then(|n| SandboxId::parse(n).ok())
        .is_some_and(|id| keep.contains(&id))
}

/// Why a sandbox could not be taken over; what was left of it has been removed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotAdopted(pub String);

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// the template names no layer to run on
    #[error("the template has no layers")]
    NoLayers,
    /// what the tier hands its sandbox (a jail's spec, an OCI config, an environment) could not
    /// be written
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    /// a helper thread of the tier panicked
    #[error("{0} panicked")]
    Panicked(&'static str),
    #[error(transparent)]
    Qmp(#[from] crate::microvm::qemu::QmpError),
    /// a snapshot's saved machine lacks a file it needs
    #[error("the snapshot's saved machine is incomplete")]
    SavedStateIncomplete,
    /// a host program the tier runs failed; its own words follow
    #[error("{tool} failed ({status}): {output}")]
    Tool {
        tool: &'static str,
        status: String,
        output: String,
    },
    #[error("guest kernel module {module}.ko not found under {dir}")]
    MissingKernelModule { module: String, dir: PathBuf },
    #[error("{0} is too large for an initramfs")]
    TooLarge(String),
    #[error("QEMU has no stdout")]
    NoStdout,
    /// a step of starting or resuming a guest did not finish in time
    #[error("{0} timed out")]
    TimedOut(&'static str),
    #[error("OCI bundle: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("sandbox {0} is not running on this host")]
    NotFound(SandboxId),
    /// the tier (or this sandbox) cannot do what was asked; the message says why
    #[error("{0}")]
    Unsupported(String),
}

/// One isolation tier.
#[allow(async_fn_in_trait)] // only used through the `AnyDriver` enum, never as `dyn`
pub trait IsolationDriver {
    /// Which tier it is.
    fn tier(&self) -> Tier;
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
    /// Only the CPU time of `usage` (idle checks read it for every sandbox): tiers override it
    /// where the rest of `usage` costs more than the read of one counter.
    fn cpu_ns(&self, id: &SandboxId) -> Option<u64> {
        self.usage(id).map(|u| u.cpu_ns)
    }
    /// Takes over a sandbox an earlier server process started, from the handle its `start`
    /// returned: if its processes are alive it is this driver's again, paused or running as it
    /// is found (`paused`: what the control plane last recorded). Otherwise whatever is left of
    /// it is removed and the error says why.
    async fn adopt(
        &self,
        id: &SandboxId,
        handle: &SandboxHandle,
        paused: bool,
    ) -> Result<AdoptedSandbox, NotAdopted>;
    /// Removes what of this tier an earlier server process left behind, except the sandboxes in
    /// `keep` (adopted), once the host layer has removed the leftover cgroups and namespaces.
    async fn remove_leftovers(&self, keep: &HashSet<SandboxId>);
    /// Captures the running (or paused) sandbox into `dir` (an empty directory): its file changes
    /// as a layer, or, on a tier that can, the whole machine with its memory. The sandbox runs on
    /// (held still for the copy) or stays paused.
    async fn snapshot(&self, id: &SandboxId, dir: &Path) -> Result<SnapshotTaken, DriverError> {
        let _ = (id, dir);
        Err(DriverError::Unsupported(format!(
            "snapshots are available on the namespaces and microvm tiers; this sandbox runs on {}",
            self.tier()
        )))
    }
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
