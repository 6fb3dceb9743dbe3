use warren_core::SandboxId;
use warren_runtime::DriverError;

use crate::agent_link::AgentError;
use crate::readiness::NotReady;

/// A node command failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// no such sandbox runs on this node
    #[error("sandbox {0} is not running on this node")]
    NotRunning(SandboxId),
    /// the request names a tier this node does not run
    #[error("isolation tier {wanted:?} is not available on this server (available: {available}; see `warren doctor`)")]
    NoSuchTier { wanted: String, available: String },
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("agent: {0}")]
    Agent(#[from] AgentError),
    /// the sandbox's own listener could not be opened
    #[error("cannot open the sandbox's listener: {0}")]
    Listener(std::io::Error),
    /// its template's start command or ready check failed; the sandbox was removed
    #[error("it did not become ready: {0}")]
    NotReady(#[from] NotReady),
    /// its egress policy cannot be put in place (the message says why)
    #[error("{0}")]
    Egress(String),
    /// its agent speaks a protocol this node does not (the message says which)
    #[error("{0}")]
    AgentProtocol(String),
}

/// The machine is short of memory for one more sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this machine is short of memory ({available_mib} MiB available, {reserve_mib} MiB kept free for running sandboxes and the host): stop sandboxes or add machines, then retry")]
pub struct NoRoom {
    pub available_mib: u64,
    pub reserve_mib: u64,
}
