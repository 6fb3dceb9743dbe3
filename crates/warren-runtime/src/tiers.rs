//! The closed set of isolation tiers. An enum rather than `dyn` keeps async methods simple and
//! makes the set of tiers visible in one place.

use warren_core::SandboxId;

use crate::driver::{DriverError, IsolationDriver, SandboxSpec, SandboxUsage, StartedSandbox};

/// One of the tiers. Cheap to clone: each variant is shared.
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
