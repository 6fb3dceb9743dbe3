//! Addresses the proxy never dials, whatever a policy allows: the proxy's sockets start on the
//! host, past the firewall that keeps sandboxes off private ranges, so it applies that set itself
//! (after resolving a name, which closes DNS rebinding and `/etc/hosts` tricks).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub struct Guard {
    refused: Vec<Ipv4Net>,
}

/// Private, loopback, CGNAT, link-local (cloud metadata), multicast, reserved and "this network".
const ALWAYS: [&str; 9] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
    "192.0.0.0/24",
];

impl Guard {
    /// The fixed set plus the host's own addresses (read now: an address added later is still in
    /// a private range on every machine this runs on, or is the sandbox links' own /16).
    pub fn new(extra: &[Ipv4Net]) -> Self {
        let mut refused: Vec<Ipv4Net> = ALWAYS.iter().filter_map(|c| c.parse().ok()).collect();
        refused.extend_from_slice(extra);
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                    refused.push(Ipv4Net::from(sin.ip()));
                }
            }
        }
        Self { refused }
    }

    pub fn refuses(&self, addr: Ipv4Addr) -> bool {
        self.refused.iter().any(|n| n.contains(&addr))
    }
}
