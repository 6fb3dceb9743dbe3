//! Egress beyond on/off: per-sandbox lists of allowed and denied destinations (E2B's
//! `allowOut`/`denyOut`), enforced on the host: an nftables `netdev` table whose ingress hook sits
//! on the host end of the sandbox's veth, so it sees every packet the sandbox sends, whatever
//! sent it (a process in the namespace, gVisor's netstack writing raw frames, a VM guest's
//! forwarded traffic), and the sandbox cannot reach it. An allowed destination wins over a
//! denied one, as in E2B. The host's own rules still apply after these: the host, other
//! sandboxes, private ranges and metadata addresses stay unreachable whatever the lists say.

use ipnet::Ipv4Net;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules {
    pub allow: Vec<Ipv4Net>,
    pub deny: Vec<Ipv4Net>,
}

/// An egress list names something Warren cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("{0:?}: IPv6 destinations are not supported (sandboxes have no IPv6 route)")]
    Ipv6(String),
    #[error(
        "{0:?} is not an IPv4 address or CIDR (domain names are not supported in egress lists)"
    )]
    NotAnAddress(String),
    #[error("at most {0} egress entries in all")]
    TooMany(usize),
}

fn parse_one(entry: &str) -> Result<Ipv4Net, EgressError> {
    let e = entry.trim();
    if let Ok(net) = e.parse::<Ipv4Net>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = e.parse::<std::net::Ipv4Addr>() {
        return Ok(Ipv4Net::from(addr));
    }
    if e.parse::<std::net::IpAddr>().is_ok() || e.parse::<ipnet::IpNet>().is_ok() {
        return Err(EgressError::Ipv6(entry.to_owned()));
    }
    Err(EgressError::NotAnAddress(entry.to_owned()))
}

impl EgressRules {
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, EgressError> {
        const MAX: usize = 1000;
        if allow.len() + deny.len() > MAX {
            return Err(EgressError::TooMany(MAX));
        }
        Ok(Self {
            allow: allow
                .iter()
                .map(|e| parse_one(e))
                .collect::<Result<_, _>>()?,
            deny: deny
                .iter()
                .map(|e| parse_one(e))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// The table `table` on host device `device` (replacing one of that name): non-IPv4 frames
    /// (ARP) pass, allowed destinations pass, denied ones are dropped, and the rest follows
    /// `internet` (without internet access, only the allowed ones go out).
    pub fn ruleset(&self, table: &str, device: &str, internet: bool) -> String {
        let set = |nets: &[Ipv4Net]| {
            nets.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut rules = String::from("meta protocol != ip accept\n");
        if !self.allow.is_empty() {
            rules.push_str(&format!("ip daddr {{ {} }} accept\n", set(&self.allow)));
        }
        if !self.deny.is_empty() {
            rules.push_str(&format!("ip daddr {{ {} }} drop\n", set(&self.deny)));
        }
        if !internet {
            rules.push_str("drop\n");
        }
        format!(
            "table netdev {table}\n\
             delete table netdev {table}\n\
             table netdev {table} {{\n\
               chain egress {{ type filter hook ingress device \"{device}\" priority 0; policy accept;\n{rules}}}\n\
             }}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_cidrs_parse_and_names_are_refused() {
        let r =
            EgressRules::parse(&["198.18.0.5".into()], &["0.0.0.0/0".into()]).expect("test value");
        assert_eq!(r.allow[0].to_string(), "198.18.0.5/32");
        assert_eq!(r.deny[0].to_string(), "0.0.0.0/0");
        assert!(EgressRules::parse(&["example.com".into()], &[]).is_err());
        assert!(EgressRules::parse(&[], &["::1".into()]).is_err());
        let rules = r.ruleset("warren_egress_3", "wv3", true);
        assert!(
            rules.find("accept\nip daddr { 0.0.0.0/0 } drop").is_some(),
            "{rules}"
        );
    }
}
