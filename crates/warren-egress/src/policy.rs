//! A sandbox's egress policy: what it may reach, by name or by address, with E2B's rules and
//! messages (`allowOut` takes IPs, CIDRs, `example.com`, `*.example.com` and `*`; `denyOut` IPs
//! and CIDRs; an allowed destination wins over a denied one; a domain needs `0.0.0.0/0` denied).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// `denyOut` must hold exactly this when `allowOut` names a domain (E2B's `ALL_TRAFFIC`).
pub const ALL_TRAFFIC: &str = "0.0.0.0/0";

/// At most this many entries in all, so that a policy stays one small nftables table.
pub const MAX_ENTRIES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// E2B's message, word for word, so that E2B clients see what they would there.
    #[error("When specifying allowed domains in allow out, you must include 'ALL_TRAFFIC' in deny out to block all other traffic.")]
    DomainsNeedBlockAll,
    #[error("invalid denied CIDR {0}")]
    Denied(String),
    #[error("invalid allowed address {0}")]
    Allowed(String),
    #[error("invalid allowed domain {0:?} (a name like example.com, *.example.com, or *)")]
    Domain(String),
    #[error("{0:?}: IPv6 destinations cannot be allowed (sandboxes have no IPv6 route)")]
    Ipv6(String),
    #[error("invalid DNS server {0} (an IPv4 address)")]
    DnsServer(String),
    #[error("at most {0} egress entries in all")]
    TooMany(usize),
    /// A `rules` entry Warren cannot serve as asked; the message names it.
    #[error("rules: {0}")]
    Rule(String),
}

/// A name pattern of `allowOut`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// `*`: every name.
    Any,
    /// `example.com`: that name only.
    Exact(String),
    /// `*.example.com`: names under it at any depth (not the name itself), kept as `.example.com`.
    Under(String),
}

impl Domain {
    pub fn parse(entry: &str) -> Result<Self, PolicyError> {
        let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
        if e == "*" {
            return Ok(Self::Any);
        }
        let (wild, name) = match e.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, e.as_str()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(PolicyError::Domain(entry.to_owned()));
        }
        Ok(if wild {
            Self::Under(format!(".{name}"))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(n) => n == name,
            Self::Under(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(n) => f.write_str(n),
            Self::Under(s) => write!(f, "*{s}"),
        }
    }
}

/// One sandbox's egress policy, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub domains: Vec<Domain>,
    /// Allowed addresses, with the DNS servers the caller named.
    pub allow: Vec<Ipv4Net>,
    pub deny: Vec<Ipv4Net>,
    /// Credentials the proxy puts in requests to their hosts (see `secrets`).
    pub secrets: Vec<Brokered>,
    /// Headers the proxy sets on HTTPS requests to a host (E2B's `network.rules` transforms).
    pub rules: Vec<HeaderRule>,
}

/// E2B's per-host transform: headers set (replacing the sandbox's own) on every HTTPS request
/// to `host`. A value may hold secrets' placeholders (`${e2b.secrets.NAME}`), filled in by the
/// proxy; the sandbox never sees the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub host: Domain,
    pub headers: Vec<(String, String)>,
}

/// How E2B's SDKs write a secret's placeholder in a rule (`Secret.fill(name)`).
pub fn rule_placeholder(secret: &str) -> String {
    format!("${{e2b.secrets.{secret}}}")
}

/// The secrets a rule's header value names, in order.
pub fn rule_secrets(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("${e2b.secrets.") {
        let after = &rest[at + "${e2b.secrets.".len()..];
        let Some(end) = after.find('}') else { break };
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    out
}

/// At most this many headers over all rules.
pub const MAX_RULE_HEADERS: usize = 64;

/// Parses E2B's `network.rules` (host → transforms' headers). A host is a name or `*.name`
/// (TLS is terminated for it, which needs a name; never `*`); a header must be one HTTP can
/// carry; workload identity tokens (`${e2b.identity...}`) are not served.
pub fn parse_rules<'a>(
    rules: impl IntoIterator<Item = (&'a str, Vec<(&'a str, &'a str)>)>,
) -> Result<Vec<HeaderRule>, PolicyError> {
    let mut out: Vec<HeaderRule> = Vec::new();
    let mut count = 0;
    for (host, headers) in rules {
        let literal =
            host.parse::<std::net::IpAddr>().is_ok() || host.parse::<ipnet::IpNet>().is_ok();
        let domain = match Domain::parse(host) {
            Ok(Domain::Any) | Err(_) => {
                return Err(PolicyError::Rule(format!(
                    "{host:?}: a rule's host must be a name or *.name (TLS to it is terminated \
                     to set its headers)"
                )))
            }
            Ok(_) if literal => {
                return Err(PolicyError::Rule(format!(
                    "{host:?}: a rule's host must be a name or *.name (TLS to it is terminated \
                     to set its headers)"
                )))
            }
            Ok(d) => d,
        };
        let mut set = Vec::new();
        for (name, value) in headers {
            count += 1;
            if count > MAX_RULE_HEADERS {
                return Err(PolicyError::Rule(format!(
                    "at most {MAX_RULE_HEADERS} headers in all"
                )));
            }
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !name_ok {
                return Err(PolicyError::Rule(format!(
                    "{host}: {name:?} is not a header name"
                )));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(PolicyError::Rule(format!(
                    "{host}: header {name}: a value cannot hold a line break"
                )));
            }
            if value.contains("${e2b.identity.") {
                return Err(PolicyError::Rule(format!(
                    "{host}: header {name}: workload identity tokens (iam) are not served by Warren"
                )));
            }
            set.push((name.to_ascii_lowercase(), value.to_owned()));
        }
        out.push(HeaderRule {
            host: domain,
            headers: set,
        });
    }
    Ok(out)
}

/// What the policy says about one destination, and which entry said it (shown to the sandbox in
/// a refusal and kept in the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub rule: String,
}

fn net_of(entry: &str) -> Option<Result<Ipv4Net, ()>> {
    let e = entry.trim();
    if let Ok(net) = e.parse::<Ipv4Net>() {
        return Some(Ok(net.trunc()));
    }
    if let Ok(addr) = e.parse::<Ipv4Addr>() {
        return Some(Ok(Ipv4Net::from(addr)));
    }
    if e.parse::<std::net::IpAddr>().is_ok() || e.parse::<ipnet::IpNet>().is_ok() {
        return Some(Err(()));
    }
    None
}

/// An address or CIDR whose address part is `0.0.0.0` names nothing, except `0.0.0.0/0` (E2B).
fn unspecified(entry: &str, net: &Ipv4Net) -> bool {
    entry.trim() != ALL_TRAFFIC && net.addr().is_unspecified()
}

impl Policy {
    /// Parses E2B's `allowOut`, `denyOut` and `dnsServers` (all traffic to a DNS server named
    /// there is allowed, as in E2B).
    pub fn parse(
        allow_out: &[String],
        deny_out: &[String],
        dns_servers: &[String],
    ) -> Result<Self, PolicyError> {
        if allow_out.len() + deny_out.len() + dns_servers.len() > MAX_ENTRIES {
            return Err(PolicyError::TooMany(MAX_ENTRIES));
        }
        let mut policy = Self::default();
        for entry in deny_out {
            match net_of(entry) {
                Some(Ok(net)) if !unspecified(entry, &net) => policy.deny.push(net),
                // Every IPv6 destination is dropped already: denying one is served as it is.
                Some(Err(())) => {}
                _ => return Err(PolicyError::Denied(entry.clone())),
            }
        }
        for entry in allow_out {
            match net_of(entry) {
                Some(Ok(net)) if !unspecified(entry, &net) => policy.allow.push(net),
                Some(Ok(_)) => return Err(PolicyError::Allowed(entry.clone())),
                Some(Err(())) => return Err(PolicyError::Ipv6(entry.clone())),
                None => policy.domains.push(Domain::parse(entry)?),
            }
        }
        for server in dns_servers {
            match server.trim().parse::<Ipv4Addr>() {
                Ok(a) if !a.is_unspecified() => policy.allow.push(Ipv4Net::from(a)),
                _ => return Err(PolicyError::DnsServer(server.clone())),
            }
        }
        if !policy.domains.is_empty() && !deny_out.iter().any(|d| d.trim() == ALL_TRAFFIC) {
            return Err(PolicyError::DomainsNeedBlockAll);
        }
        Ok(policy)
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
            && self.allow.is_empty()
            && self.deny.is_empty()
            && self.secrets.is_empty()
            && self.rules.is_empty()
    }

    /// Whether names are judged: the sandbox's TCP and DNS then go through the host's proxy.
    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    /// Whether the sandbox's TCP and DNS go through the host's proxy: it judges names, or it
    /// brokers credentials.
    pub fn proxied(&self) -> bool {
        self.has_domains() || !self.secrets.is_empty() || !self.rules.is_empty()
    }

    /// Whether TLS to `name` is terminated by the proxy: a secret is bound to it or a rule sets
    /// its headers.
    pub fn intercepts(&self, name: &str) -> bool {
        !self.secrets_for(name).is_empty() || self.rules_for(name).next().is_some()
    }

    /// Whether TLS to some host is terminated (the sandbox must trust the node's CA).
    pub fn intercepts_any(&self) -> bool {
        !self.secrets.is_empty() || !self.rules.is_empty()
    }

    /// The header rules for `name`.
    pub fn rules_for<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a HeaderRule> + 'a {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().filter(move |r| r.host.matches(&name))
    }

    /// Whether the sandbox may resolve `name`: every name when no domain rule is set.
    pub fn resolves(&self, name: &str) -> bool {
        !self.has_domains() || self.domain_for(name).is_some()
    }

    /// The secrets bound to `name`.
    pub fn secrets_for(&self, name: &str) -> Vec<&Brokered> {
        self.secrets.iter().filter(|s| s.bound_to(name)).collect()
    }

    /// The domain entry that allows `name`, if any.
    pub fn domain_for(&self, name: &str) -> Option<&Domain> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.domains.iter().find(|d| d.matches(&name))
    }

    /// The allowed CIDR that holds `addr`, if any.
    pub fn allowed_net(&self, addr: Ipv4Addr) -> Option<&Ipv4Net> {
        self.allow.iter().find(|n| n.contains(&addr))
    }

    /// Judges a connection to `addr`, for which the sandbox named `name` (TLS SNI or HTTP Host),
    /// in E2B's order: an allowed name or address, then a denied address, then allowed.
    pub fn judge(&self, name: Option<&str>, addr: Ipv4Addr) -> Verdict {
        if let Some(d) = name.and_then(|n| self.domain_for(n)) {
            return Verdict {
                allowed: true,
                rule: format!("allowOut {d}"),
            };
        }
        if let Some(n) = self.allowed_net(addr) {
            return Verdict {
                allowed: true,
                rule: format!("allowOut {n}"),
            };
        }
        if let Some(n) = self.deny.iter().find(|n| n.contains(&addr)) {
            return Verdict {
                allowed: false,
                rule: format!("denyOut {n}"),
            };
        }
        Verdict {
            allowed: true,
            rule: "no rule (internet access)".into(),
        }
    }
}

/// One secret given to one sandbox.
#[derive(Clone, PartialEq, Eq)]
pub struct Brokered {
    /// The secret's name (for the audit trail; never its value).
    pub name: String,
    /// What the sandbox holds instead of the value.
    pub placeholder: String,
    pub value: String,
    pub hosts: Vec<Domain>,
    /// Named by a rule only (E2B): the value goes into the headers a rule sets, never in place
    /// of a placeholder the sandbox wrote itself (`${e2b.secrets.NAME}` is no secret).
    pub rule_only: bool,
}

impl std::fmt::Debug for Brokered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brokered")
            .field("name", &self.name)
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .field("rule_only", &self.rule_only)
            .finish()
    }
}

/// Parses the hosts a secret is bound to: names or `*.name`, never `*` (a value that goes to
/// every host is not brokered, only hidden).
pub fn parse_hosts(hosts: &[String]) -> Result<Vec<Domain>, PolicyError> {
    hosts
        .iter()
        .map(|h| match Domain::parse(h)? {
            Domain::Any => Err(PolicyError::Domain(h.clone())),
            d => Ok(d),
        })
        .collect()
}

impl Brokered {
    pub fn bound_to(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.iter().any(|d| d.matches(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn e2b_rules_and_messages() {
        let p = Policy::parse(
            &s(&["api.test", "*.pkg.test", "198.18.0.9"]),
            &s(&[ALL_TRAFFIC]),
            &[],
        )
        .expect("valid policy");
        assert!(p.has_domains());
        let ip = Ipv4Addr::new(198, 18, 0, 2);
        assert!(p.judge(Some("api.test"), ip).allowed);
        assert!(p.judge(Some("API.test."), ip).allowed);
        assert!(p.judge(Some("a.b.pkg.test"), ip).allowed);
        assert!(
            !p.judge(Some("pkg.test"), ip).allowed,
            "the apex is not under *."
        );
        assert!(!p.judge(Some("evilapi.test"), ip).allowed);
        assert_eq!(p.judge(None, ip).rule, "denyOut 0.0.0.0/0");
        assert!(p.judge(None, Ipv4Addr::new(198, 18, 0, 9)).allowed);

        assert_eq!(
            Policy::parse(&s(&["api.test"]), &[], &[]),
            Err(PolicyError::DomainsNeedBlockAll)
        );
        assert_eq!(
            Policy::parse(&[], &s(&["example.com"]), &[])
                .map(drop)
                .expect_err("refused")
                .to_string(),
            "invalid denied CIDR example.com"
        );
        assert_eq!(
            Policy::parse(&s(&["0.0.0.0"]), &[], &[])
                .map(drop)
                .expect_err("refused")
                .to_string(),
            "invalid allowed address 0.0.0.0"
        );
        assert!(Policy::parse(&s(&["bad..name"]), &s(&[ALL_TRAFFIC]), &[]).is_err());
        assert!(Policy::parse(&s(&["::1"]), &[], &[]).is_err());
        assert!(Policy::parse(&[], &s(&["::/0"]), &[]).is_ok());
        let any = Policy::parse(&s(&["*"]), &s(&[ALL_TRAFFIC]), &s(&["8.8.8.8"])).expect("valid");
        assert!(any.judge(Some("anything.example"), ip).allowed);
        assert!(any.judge(None, Ipv4Addr::new(8, 8, 8, 8)).allowed);
    }

    #[test]
    fn rules_name_hosts_and_headers_http_can_carry() {
        let rules = parse_rules([(
            "api.test",
            vec![("X-Api-Key", "${e2b.secrets.k1} and ${e2b.secrets.k2}")],
        )])
        .expect("valid rules");
        assert_eq!(rules[0].headers[0].0, "x-api-key");
        assert_eq!(rule_secrets(&rules[0].headers[0].1), vec!["k1", "k2"]);
        let p = Policy {
            rules,
            ..Default::default()
        };
        assert!(p.proxied() && p.intercepts("API.test") && !p.intercepts("other.test"));
        for bad in [
            ("*", vec![("a", "b")]),
            ("10.0.0.1", vec![("a", "b")]),
            ("api.test", vec![("bad name", "b")]),
            ("api.test", vec![("a", "x\r\ny: z")]),
            ("api.test", vec![("a", "${e2b.identity.tokens.aws}")]),
        ] {
            assert!(parse_rules([bad.clone()]).is_err(), "{bad:?}");
        }
    }
}
