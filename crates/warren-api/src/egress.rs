//! Parses a request's egress policy (`network`) before anything starts; a bad entry is the
//! caller's mistake (400), named in the answer with E2B's words.

use warren_runtime::host::egress::{Policy, PolicyError};
use warren_wire::control::EgressPolicy;

pub fn parse(p: &EgressPolicy) -> Result<Policy, PolicyError> {
    warren_node::egress::parse(p)
}

/// The policy a sandbox record keeps (JSON in the store), if any.
pub fn stored(rec: &warren_store::SandboxRecord) -> Option<EgressPolicy> {
    rec.egress
        .as_deref()
        .and_then(|e| serde_json::from_str::<EgressPolicy>(e).ok())
}
