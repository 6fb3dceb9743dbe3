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

/// This build's version, and the commit it was built from (`build.rs`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("WARREN_COMMIT");
/// What `warren --version` prints after the name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WARREN_COMMIT"),
    ")"
);

pub use lifecycle::PoolTarget;
pub use limits::MAX_TIMEOUT_SECONDS;
pub use serve::{serve, shutdown_signal, stop_sandboxes, ServeConfig};
pub use state::PublicMode;
