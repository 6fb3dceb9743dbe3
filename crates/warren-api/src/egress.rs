//! Checks a create's egress policy (`network.allowOut`/`denyOut`) before anything starts; a bad
//! entry is the caller's mistake (400), named in the answer.

use warren_runtime::host::egress::{EgressError, EgressRules};
use warren_wire::control::EgressPolicy;

pub fn check(p: &EgressPolicy) -> Result<(), EgressError> {
    EgressRules::parse(&p.allow_out, &p.deny_out).map(drop)
}
