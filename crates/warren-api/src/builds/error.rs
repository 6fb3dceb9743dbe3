//! Why a template build failed: the message goes into its log and becomes the template's
//! `error_message`, so each one says what to change.

use warren_runtime::layers::LayerError;

use super::registry::RegistryError;
use crate::lifecycle::LifecycleError;
use crate::template_spec::BadReadyCheck;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Step(#[from] super::spec::StepError),
    #[error("step {step}: no uploaded files for hash {hash}; upload them first")]
    NoUpload { step: usize, hash: String },
    #[error("step {step}: permissions must be octal, got {got}")]
    Permissions { step: usize, got: String },
    #[error("COPY owner {0} is no user (or group) of the image: give a name, name:group, uid:gid or root")]
    Owner(String),
    #[error("step {step}: {source}")]
    Copy { step: usize, source: LayerError },
    #[error("step {step} ({what}) failed: {source}")]
    Run {
        step: usize,
        what: String,
        source: Box<BuildError>,
    },
    #[error("exit code {0}")]
    ExitCode(i64),
    #[error(transparent)]
    Layers(#[from] LayerError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Agent(#[from] warren_node::AgentError),
    #[error(transparent)]
    ReadyCheck(#[from] BadReadyCheck),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Rootfs(#[from] crate::lifecycle::RootfsUnavailable),
    /// the base names a template that cannot be built on
    #[error("template {name} has an unreadable spec: {source}")]
    UnreadableSpec {
        name: String,
        source: serde_json::Error,
    },
    #[error("template {name} is not active (status {status})")]
    NotActive { name: String, status: &'static str },
    #[error("database: {0}")]
    Store(#[from] warren_store::StoreError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0} panicked")]
    Panicked(&'static str),
}
