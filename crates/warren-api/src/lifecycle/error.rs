use warren_core::SandboxStatus;
use warren_node::NodeError;
use warren_store::StoreError;

use crate::limits::QuotaExceeded;
use crate::nodes::NodeCallError;

/// Why a lifecycle command failed. Becomes an API error (status, code, envelope) only at the HTTP
/// edge (`crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// no such sandbox, or another tenant's
    #[error("Sandbox not found")]
    SandboxNotFound,
    /// no such snapshot, or another tenant's
    #[error("Snapshot not found: {0}")]
    SnapshotNotFound(String),
    /// it cannot be done while something else depends on it
    #[error("{0}")]
    Conflict(String),
    #[error("Template not found: {0}")]
    TemplateNotFound(String),
    #[error("template {name} is {status}; wait for its build to finish")]
    TemplateNotReady { name: String, status: &'static str },
    /// the request itself is wrong
    #[error("{0}")]
    Invalid(String),
    /// the sandbox is in a state that does not allow this
    #[error("cannot {action} a sandbox that is {status}")]
    InvalidState {
        action: &'static str,
        status: SandboxStatus,
    },
    #[error("choosing the isolation tier per sandbox is disabled on this server")]
    TierChoiceDisabled,
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// the server cannot do it now (a template still building, a start that failed, shutdown)
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Node {
        context: &'static str,
        source: NodeError,
    },
}

impl LifecycleError {
    /// A secret that cannot be given: the caller's mistake, or the server's key.
    pub(super) fn from_secrets(e: crate::secrets::SecretError) -> Self {
        use crate::secrets::SecretError;
        match e {
            SecretError::Invalid(why) => Self::Invalid(why),
            SecretError::NotFound(name) => {
                Self::Invalid(format!("secrets: no secret named {name:?}"))
            }
            SecretError::Store(e) => Self::Store(e),
            e => Self::Unavailable(e.to_string()),
        }
    }

    /// A node's refusal to `action` a sandbox that the store says is `status`: a sandbox the
    /// node does not run is in the wrong state for it; what the node or tier cannot do is the
    /// caller's choice (400); a node that is silent or failed is unavailable now; the control
    /// plane's own node failing is an internal error.
    pub(super) fn from_node(e: NodeCallError, action: &'static str, status: SandboxStatus) -> Self {
        match e {
            NodeCallError::NotRunning => Self::InvalidState { action, status },
            NodeCallError::NoSuchTier(why) | NodeCallError::Unsupported(why) => Self::Invalid(why),
            NodeCallError::Local(source) => Self::Node {
                context: action,
                source,
            },
            e => Self::Unavailable(e.to_string()),
        }
    }
}

pub type LifecycleResult<T> = Result<T, LifecycleError>;
