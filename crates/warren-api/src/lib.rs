//! The Warren control plane: the Hopx-compatible HTTP API (`routes`), sandbox lifecycle
//! (`lifecycle`: the one place that keeps the store and the node in step), tenants, keys, limits
//! and the audit trail, template builds and registry pulls, and asynchronous runs' webhooks. The
//! sandboxes themselves run in the node layer (`warren-node`), which this crate commands and
//! answers (`gate`). Only this crate and the node know HTTP on the server side.

mod audit;
mod auth;
mod builds;
mod clock;
mod cluster;
mod e2b;
mod egress;
mod error;
mod gate;
mod idempotency;
mod lifecycle;
pub mod limits;
mod metrics;
mod nodes;
mod openapi;
mod query;
mod request_id;
mod routes;
pub mod secrets;
mod serve;
mod state;
mod template_spec;
#[cfg(test)]
mod testing;
pub mod tls;
mod tokens;
mod volumes;

use std::sync::OnceLock;

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit this build was made from. The `warren` binary embeds it (its build script) and
/// tells this crate at start-up: embedded here, every commit recompiled the API and everything
/// above it, minutes of each build.
static COMMIT: OnceLock<&'static str> = OnceLock::new();

/// Called once by the binary, first thing (before `long_version` is read).
pub fn set_commit(commit: &'static str) {
    let _ = COMMIT.set(commit);
}

/// The commit, or "unknown" where no binary said it (this crate's own tests).
pub fn commit() -> &'static str {
    COMMIT.get().copied().unwrap_or("unknown")
}

/// What `warren --version` prints after the name; formatted once (the command line's help
/// needs it for the life of the process).
pub fn long_version() -> &'static str {
    static LONG_VERSION: OnceLock<String> = OnceLock::new();
    LONG_VERSION.get_or_init(|| format!("{VERSION} (commit {})", commit()))
}

pub use lifecycle::PoolTarget;
pub use limits::MAX_TIMEOUT_SECONDS;
pub use serve::{serve, shutdown_signal, stop_sandboxes, ServeConfig};
pub use state::PublicMode;
