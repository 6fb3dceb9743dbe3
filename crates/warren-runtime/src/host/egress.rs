//! A sandbox's egress policy (warren-egress's `Policy`) as nftables rules: a `netdev` table whose
//! ingress hook sits on the host end of the sandbox's veth, so it sees every packet the sandbox
//! sends, whatever sent it (a process in the namespace, gVisor's netstack writing raw frames, a
//! VM guest's forwarded traffic), and the sandbox cannot reach it. An allowed destination wins
//! over a denied one, as in E2B. The host's own rules still apply after these: the host, other
//! sandboxes, private ranges and metadata addresses stay unreachable whatever the lists say.
//!
//! With domain rules, TCP and DNS pass this table: the host table redirects them to the egress
//! proxy and the DNS filter, which judge names (see `network`). Other UDP (QUIC) is judged by
//! address only, as in E2B, and clients fall back to TCP.

pub use warren_egress::{Policy, PolicyError};

use ipnet::Ipv4Net;

/// The packet mark of a proxied sandbox's TCP and DNS, set here and matched by the host table
/// (see `network`), which redirects that traffic to the egress proxy.
pub const PROXIED_MARK: u32 = 0x5741_0000;

/// Whether a table of that name may exist already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A link made a moment ago has no table yet. Declaring the table alone is about 5 ms of
    /// `nft -f` here; declaring, deleting and re-declaring it (what replacing needs) is about
    /// 20 ms, all of it on the create path.
    Fresh,
    /// A running sandbox's table is replaced in one transaction.
    Replace,
}

/// The table `table` on host device `device`: non-IPv4 frames (ARP) pass, allowed destinations
/// pass, denied ones are dropped, and the rest follows `internet` (without internet access, only
/// the allowed ones go out).
pub fn ruleset(policy: &Policy, table: &str, device: &str, internet: bool, load: Load) -> String {
    let set = |nets: &[Ipv4Net]| {
        nets.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rules = String::from("meta protocol != ip accept\n");
    if policy.proxied() {
        rules.push_str(&format!(
            "ip protocol tcp meta mark set {PROXIED_MARK} accept\n\
             udp dport 53 meta mark set {PROXIED_MARK} accept\n"
        ));
    }
    if !policy.allow.is_empty() {
        rules.push_str(&format!("ip daddr {{ {} }} accept\n", set(&policy.allow)));
    }
    if !policy.deny.is_empty() {
        rules.push_str(&format!("ip daddr {{ {} }} drop\n", set(&policy.deny)));
    }
    if !internet {
        rules.push_str("drop\n");
    }
    let replace = match load {
        Load::Fresh => String::new(),
        Load::Replace => format!("table netdev {table}\ndelete table netdev {table}\n"),
    };
    format!(
        "{replace}\
         table netdev {table} {{\n\
           chain egress {{ type filter hook ingress device \"{device}\" priority 0; policy accept;\n{rules}}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_sets_and_domains_let_tcp_reach_the_proxy() {
        let p =
            Policy::parse(&["198.18.0.5".into()], &["0.0.0.0/0".into()], &[]).expect("test value");
        let rules = ruleset(&p, "warren_egress_3", "wv3", true, Load::Replace);
        assert!(
            rules.contains("ip daddr { 198.18.0.5/32 } accept\nip daddr { 0.0.0.0/0 } drop"),
            "{rules}"
        );
        assert!(!rules.contains("meta mark"));
        let d = Policy::parse(&["api.test".into()], &["0.0.0.0/0".into()], &[]).expect("valid");
        let rules = ruleset(&d, "t", "wv3", false, Load::Fresh);
        assert!(rules.starts_with("table netdev t {"), "{rules}");
        assert!(
            rules.contains(&format!(
                "ip protocol tcp meta mark set {PROXIED_MARK} accept\n"
            )),
            "{rules}"
        );
    }
}
