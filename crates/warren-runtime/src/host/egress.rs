//! Egress beyond on/off: per-sandbox lists of allowed and denied destinations (E2B's
//! `allowOut`/`denyOut`), enforced by an nftables table inside the sandbox's own network
//! namespace, which the sandbox cannot change (it holds no CAP_NET_ADMIN over that namespace).
//! An allowed destination wins over a denied one, as in E2B. The host's own rules still apply
//! after these: the host, other sandboxes, private ranges and metadata addresses stay unreachable
//! whatever the lists say.

use ipnet::Ipv4Net;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRules {
    pub allow: Vec<Ipv4Net>,
    pub deny: Vec<Ipv4Net>,
}

fn parse_one(entry: &str) -> Result<Ipv4Net, String> {
    let e = entry.trim();
    if let Ok(net) = e.parse::<Ipv4Net>() {
        return Ok(net.trunc());
    }
    if let Ok(addr) = e.parse::<std::net::Ipv4Addr>() {
        return Ok(Ipv4Net::from(addr));
    }
    if e.parse::<std::net::IpAddr>().is_ok() || e.parse::<ipnet::IpNet>().is_ok() {
        return Err(format!(
            "{entry:?}: IPv6 destinations are not supported (sandboxes have no IPv6 route)"
        ));
    }
    Err(format!(
        "{entry:?} is not an IPv4 address or CIDR (domain names are not supported in egress lists)"
    ))
}

impl EgressRules {
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Self, String> {
        const MAX: usize = 1000;
        if allow.len() + deny.len() > MAX {
            return Err(format!("at most {MAX} egress entries in all"));
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

    /// The namespace's table: for traffic leaving through `eth0` (the sandbox's own, and a VM
    /// guest's forwarded through it), allowed destinations pass, denied ones are dropped, and
    /// the rest follows `internet` (without internet access, only the allowed ones go out).
    pub fn ruleset(&self, internet: bool) -> String {
        let set = |nets: &[Ipv4Net]| {
            nets.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut rules = String::from("oifname != \"eth0\" accept\n");
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
            "table inet warren_egress {{\n\
               chain output {{ type filter hook output priority 0; policy accept;\n{rules}}}\n\
               chain forward {{ type filter hook forward priority 0; policy accept;\n{rules}}}\n\
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
        let rules = r.ruleset(true);
        assert!(
            rules.find("accept\nip daddr { 0.0.0.0/0 } drop").is_some(),
            "{rules}"
        );
    }
}
