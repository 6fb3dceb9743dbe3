use std::fmt;
use std::str::FromStr;

/// An isolation tier: how strongly a sandbox is kept apart from the host. Parsed from text once,
/// where it enters (a flag, a request, a stored row, a node's report); everything inside Warren
/// passes the enum.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Linux namespaces, cgroups, seccomp and an overlay root: the default, milliseconds.
    Namespaces,
    /// gVisor's user-space kernel (`runsc`) between the sandbox and the host.
    Gvisor,
    /// A guest kernel of its own under QEMU.
    Microvm,
}

/// The text names no isolation tier
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown isolation tier {0:?} (known: namespaces, gvisor, microvm)")]
pub struct UnknownTier(pub String);

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Namespaces, Tier::Gvisor, Tier::Microvm];

    /// The name shown in API objects, flags and `warren doctor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespaces => "namespaces",
            Self::Gvisor => "gvisor",
            Self::Microvm => "microvm",
        }
    }

    /// Whether its sandboxes have a kernel of their own, so taking their network link away shows
    /// only after a restart of that kernel (a warm sandbox cannot be made offline at claim).
    pub fn has_guest_kernel(self) -> bool {
        !matches!(self, Self::Namespaces)
    }
}

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, UnknownTier> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>(), Ok(t));
            assert_eq!(serde_json::to_string(&t).ok(), Some(format!("\"{t}\"")));
        }
        assert_eq!(
            "firecracker".parse::<Tier>(),
            Err(UnknownTier("firecracker".into()))
        );
        assert!("Namespaces".parse::<Tier>().is_err());
    }
}
