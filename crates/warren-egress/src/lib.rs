//! Egress enforcement on the host, outside every sandbox (whatever runs inside is hostile):
//! per-sandbox policies by name and address (`policy`), a transparent proxy for the TCP of
//! sandboxes with domain rules (`proxy`, `http`, `sniff`), a DNS filter (`dns`), and the
//! addresses the proxy never dials (`guard`). The host's firewall (warren-runtime) redirects a
//! sandbox's traffic here; this crate decides.

pub mod ca;
mod dns;
mod events;
mod guard;
mod http;
mod mitm;
pub mod policy;
mod proxy;
pub mod resolve;
pub mod secrets;
mod sniff;
mod state;

pub use events::{Counters, Decision, EgressEvent};
pub use policy::{Brokered, Policy, PolicyError, Verdict, ALL_TRAFFIC};
pub use proxy::{EgressProxy, ProxyConfig};
pub use resolve::{PinError, Resolver};
pub use state::DialError;
