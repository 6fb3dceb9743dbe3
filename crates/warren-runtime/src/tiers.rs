//! The closed set of isolation tiers. An enum rather than `dyn` keeps async methods simple and
//! makes the set of tiers visible in one place.

use std::collections::HashSet;

use warren_core::{SandboxId, Tier};

use crate::driver::{
    AdoptedSandbox, DriverError, IsolationDriver, NotAdopted, SandboxHandle, SandboxSpec,
    SandboxUsage, StartedSandbox,
};

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
    fn tier(&self) -> Tier {
        each!(self, d => d.tier())
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
    fn cpu_ns(&self, id: &SandboxId) -> Option<u64> {
        each!(self, d => d.cpu_ns(id))
    }
    async fn adopt(
        &self,
        id: &SandboxId,
        handle: &SandboxHandle,
        paused: bool,
    ) -> Result<AdoptedSandbox, NotAdopted> {
        each!(self, d => d.adopt(id, handle, paused).await)
    }
    async fn remove_leftovers(&self, keep: &HashSet<SandboxId>) {
        each!(self, d => d.remove_leftovers(keep).await)
    }
    async fn snapshot(
        &self,
        id: &SandboxId,
        dir: &std::path::Path,
    ) -> Result<crate::driver::SnapshotTaken, DriverError> {
        each!(self, d => d.snapshot(id, dir).await)
    }
}
