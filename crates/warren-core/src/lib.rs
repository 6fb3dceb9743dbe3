//! Domain types shared by every Warren crate: identifiers, the sandbox status machine, isolation
//! tiers and resource limits. This crate does no IO and knows nothing about HTTP or the kernel.

mod id;
mod resources;
mod secret;
mod status;
mod tier;

pub use id::{InvalidId, SandboxId};
pub use resources::Resources;
pub use secret::Secret;
pub use status::SandboxStatus;
pub use tier::{Tier, UnknownTier};

/// Unix time in whole seconds. All times inside Warren are this; formatting happens at the edges.
pub type UnixSeconds = i64;
