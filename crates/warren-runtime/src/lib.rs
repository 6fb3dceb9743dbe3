//! The sandbox runtime: the isolation driver interface and its implementations, the agent bundle
//! mounted into every sandbox, and template root file systems. Knows nothing about HTTP.

pub mod agent_bundle;
pub mod driver;
pub mod gvisor;
pub mod host;
pub mod layers;
pub mod microvm;
pub mod namespaces;
pub mod templates;
mod tiers;

pub use driver::{
    AdoptedSandbox, DriverError, IsolationDriver, NotAdopted, SandboxHandle, SandboxSpec,
    SandboxUsage, Snapshot, SnapshotTaken, StartedSandbox, VolumeMount,
};
pub use tiers::AnyDriver;
