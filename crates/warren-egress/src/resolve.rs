//! Name resolution for the proxy and the DNS filter: the host's resolver, or names pinned by the
//! operator (`--egress-resolve NAME=IP`, as curl's `--resolve`, for tests and split horizons).

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    pins: HashMap<String, Vec<Ipv4Addr>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{0:?} is not NAME=IPv4")]
    Shape(String),
}

impl Resolver {
    /// From `NAME=IP` entries; a name given twice gets both addresses.
    pub fn with_pins(pins: &[String]) -> Result<Self, PinError> {
        let mut map: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
        for p in pins {
            let (name, ip) = p
                .split_once('=')
                .ok_or_else(|| PinError::Shape(p.clone()))?;
            let ip: Ipv4Addr = ip.trim().parse().map_err(|_| PinError::Shape(p.clone()))?;
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() {
                return Err(PinError::Shape(p.clone()));
            }
            map.entry(name).or_default().push(ip);
        }
        Ok(Self { pins: map })
    }

    /// The IPv4 addresses of `name` (sandboxes have no IPv6 route).
    pub async fn resolve(&self, name: &str) -> std::io::Result<Vec<Ipv4Addr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(pinned) = self.pins.get(&name) {
            return Ok(pinned.clone());
        }
        let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
        let v4: Vec<Ipv4Addr> = found
            .filter_map(|a| match a.ip() {
                std::net::IpAddr::V4(v4) => Some(v4),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        if v4.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{name} has no IPv4 address"),
            ));
        }
        Ok(v4)
    }
}
