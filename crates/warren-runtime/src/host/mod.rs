//! The host layer every isolation tier stands on: a sandbox's cgroup (limits, freezer, usage) and
//! network namespace (veth, NAT, egress rules), the agent bundle mounted into it, spawning a
//! tier's processes inside those, and waiting for the agent. The tiers differ only in what runs
//! inside (a jail, runsc, QEMU); the host parts, and their cleanup, are the same for all three.

pub mod cgroups;
pub mod egress;
pub mod idmapped;
pub mod ids;
mod netlink;
pub mod network;
mod process;
pub mod slot;
mod spawn;

pub use cgroups::SandboxUsage;
pub(crate) use process::with_helper_process;
pub use process::ProcessRef;
pub use spawn::AgentUp;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use warren_core::{Resources, SandboxId};

use cgroups::{CgroupError, CgroupRoot, SandboxCgroup};
use network::{Network, NetworkError, SandboxNet};

pub(crate) use spawn::{
    enter_netns, start_inside, until_ready, wait_for_agent, watch_exit, Startup,
};

/// A host-layer step failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    #[error("cannot start the egress proxy: {0}")]
    Egress(std::io::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// the sandbox's agent did not come up; the message carries its (or its helper's) last words
    #[error("sandbox failed to start: {0}")]
    AgentStart(String),
    /// The host layer owns host-wide names (netns, veth, the nftables table, cgroups), so two
    /// servers on one host would remove each other's sandboxes.
    #[error(
        "another `warren serve` already runs sandboxes on this host (it holds {0}); stop it first"
    )]
    Busy(String),
    /// every range of host ids is in use
    #[error("no free range of host user ids for another sandbox")]
    NoIds,
}

/// How long a sandbox may take to start its agent (hardware-speed tiers).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct HostConfig {
    /// The server's data dir: it keeps the host slot it took (see `slot`).
    pub data_dir: PathBuf,
    /// Directory with the agent binary, its libraries and loader (see `agent_bundle`).
    pub agent_bundle: PathBuf,
    /// The /16 that sandbox veth links are numbered from.
    pub network_base: Ipv4Addr,
    /// Where template layers live: checked once for idmapped mounts, which per-sandbox ids need.
    pub layers_dir: PathBuf,
    /// How the egress proxy resolves names.
    pub egress: warren_egress::ProxyConfig,
}

/// Which host ids a sandbox runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdChoice {
    /// A range of its own (see `ids`).
    Own,
    /// The canonical range template layers are owned by: build steps, whose writes become layers.
    Canonical,
}

/// The host parts of one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxHost {
    pub cgroup: SandboxCgroup,
    pub net: SandboxNet,
    /// First host id of the sandbox's range (root inside).
    pub id_base: u32,
}

/// Names of a sandbox's host parts, kept so that a later server process can find them again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    pub cgroup_dirs: Vec<PathBuf>,
    pub netns: String,
    pub veth_slot: Option<u32>,
    /// Its id range (absent in records of servers before per-sandbox ids: the canonical range).
    #[serde(default)]
    pub id_base: Option<u32>,
}

impl SandboxHost {
    pub fn record(&self) -> HostRecord {
        HostRecord {
            cgroup_dirs: self.cgroup.dirs().to_vec(),
            netns: self.net.netns_name.clone(),
            veth_slot: self.net.slot(),
            id_base: Some(self.id_base),
        }
    }
}

/// Host-wide state shared by every tier: the cgroup root, the network (one nftables table, one
/// address space for veth links) and the agent bundle. Its names (`warren-<id>` namespaces,
/// `wv<n>` links, the `inet warren` table, the `warren/` cgroups) are host-wide, which is why one
/// server per host holds it.
pub struct Host {
    slot: std::sync::Mutex<slot::HostSlot>,
    cgroups: CgroupRoot,
    network: Network,
    agent_bundle: PathBuf,
    ids: ids::IdAllocator,
    /// Whether template layers can be shown through idmapped mounts here (else every sandbox
    /// runs with the canonical range, as before per-sandbox ids).
    own_ids: bool,
    egress: Arc<warren_egress::EgressProxy>,
    egress_events:
        std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<warren_egress::EgressEvent>>>,
}

impl Host {
    pub async fn new(cfg: HostConfig) -> Result<Self, HostError> {
        let slot = slot::HostSlot::acquire(&cfg.data_dir)?;
        let cgroups = CgroupRoot::discover(&slot.group_name())?;
        let names = network::NetNames {
            netns: slot.netns_prefix(),
            veth: slot.veth_prefix(),
            table: slot.group_name(),
        };
        let base = slot.network_base(cfg.network_base);
        let mut egress = cfg.egress;
        egress
            .refused
            .push(ipnet::Ipv4Net::new(base, 16).unwrap_or_default());
        let (proxy, egress_events) = warren_egress::EgressProxy::start(egress)
            .await
            .map_err(HostError::Egress)?;
        let network = Network::init(base, names, proxy.clone()).await?;
        let dir = cfg.layers_dir.clone();
        let own_ids = match tokio::task::spawn_blocking(move || idmapped::idmap_works(&dir)).await {
            Ok(Ok(())) => true,
            Ok(Err(why)) => {
                tracing::warn!(
                    layers = %cfg.layers_dir.display(),
                    reason = %why,
                    "idmapped mounts do not work here: every sandbox runs with the same host ids \
                     (the kernel's per-user limits are shared between sandboxes)"
                );
                false
            }
            Err(_) => false,
        };
        tracing::info!(
            cgroups = cgroups.version(),
            own_ids,
            slot = slot.index(),
            "host layer ready"
        );
        Ok(Self {
            ids: ids::IdAllocator::for_slot(slot.index()),
            slot: std::sync::Mutex::new(slot),
            cgroups,
            network,
            agent_bundle: cfg.agent_bundle,
            own_ids,
            egress: proxy,
            egress_events: std::sync::Mutex::new(Some(egress_events)),
        })
    }

    /// This process's host slot: 0 for the first Warren on the machine.
    pub fn slot(&self) -> u8 {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).index()
    }

    /// Whether sandboxes get host ids of their own here.
    pub fn own_ids(&self) -> bool {
        self.own_ids
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn agent_bundle(&self) -> &Path {
        &self.agent_bundle
    }

    pub fn cgroup_version(&self) -> &'static str {
        self.cgroups.version()
    }

    /// Creates a sandbox's cgroup with `resources` as its limits and its network namespace (with
    /// a veth when it has internet access).
    pub async fn provision(
        &self,
        id: &SandboxId,
        resources: &Resources,
        internet_access: bool,
        egress: Option<&egress::Policy>,
        ids: IdChoice,
    ) -> Result<SandboxHost, HostError> {
        let id_base = match ids {
            IdChoice::Own => self.ids.take().ok_or(HostError::NoIds)?,
            IdChoice::Canonical => ids::CANONICAL_BASE,
        };
        let cgroup = self.cgroups.acquire();
        let made = match cgroup.create(resources) {
            Ok(()) => self
                .network
                .create(id.as_str(), internet_access, egress)
                .await
                .map_err(HostError::from),
            Err(e) => Err(e.into()),
        };
        match made {
            Ok(net) => Ok(SandboxHost {
                cgroup,
                net,
                id_base,
            }),
            Err(e) => {
                let cgroups = self.cgroups.clone();
                let _ = tokio::task::spawn_blocking(move || cgroups.recycle(cgroup)).await;
                self.ids.release(id_base);
                Err(e)
            }
        }
    }

    /// The host parts an earlier server process created for a sandbox, if both still exist.
    pub fn adopt(&self, record: &HostRecord) -> Option<SandboxHost> {
        let cgroup = self.cgroups.sandbox_at(record.cgroup_dirs.clone());
        if !cgroup.exists() {
            return None;
        }
        let net = self.network.adopt(&record.netns, record.veth_slot)?;
        let id_base = record.id_base.unwrap_or(ids::CANONICAL_BASE);
        self.ids.claim(id_base);
        Some(SandboxHost {
            cgroup,
            net,
            id_base,
        })
    }

    /// Cuts a running sandbox off the network (see `Network::unlink`); nothing to do for one
    /// that has no link.
    /// Replaces the egress policy of a running sandbox (see `Network::set_policy`).
    pub async fn set_egress(
        &self,
        id: &SandboxId,
        record: &HostRecord,
        policy: Option<&egress::Policy>,
        internet: bool,
    ) -> Result<(), HostError> {
        let net = SandboxNet::named(&record.netns, record.veth_slot);
        Ok(self
            .network
            .set_policy(&net, id.as_str(), policy, internet)
            .await?)
    }

    /// The egress proxy's decisions, once (the node forwards them to the audit trail).
    pub fn take_egress_events(
        &self,
    ) -> Option<tokio::sync::mpsc::Receiver<warren_egress::EgressEvent>> {
        self.egress_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The CA sandboxes with brokered secrets must trust (PEM).
    pub fn egress_ca_pem(&self) -> Option<&str> {
        self.egress.ca_pem()
    }

    /// Counts of allowed and refused connections, for the metrics.
    pub fn egress_counters(&self) -> &warren_egress::Counters {
        self.egress.counters()
    }

    pub async fn cut_link(&self, record: &HostRecord) -> Result<(), HostError> {
        match record.veth_slot {
            Some(slot) => Ok(self.network.unlink(slot).await?),
            None => Ok(()),
        }
    }

    /// Removes what is left of a sandbox that did not survive: its cgroup (with any process
    /// still in it), network namespace and link, and its directory. Failures are logged.
    pub async fn remove_remains(&self, id: &SandboxId, record: &HostRecord, dir: &Path) {
        if let Err(e) = self.teardown(self.remains(record), dir).await {
            tracing::warn!(sandbox = %id, error = %e, "cannot remove what is left of a dead sandbox");
        }
    }

    /// Whatever still exists of the host parts named by `record`, for removal.
    pub fn remains(&self, record: &HostRecord) -> SandboxHost {
        let cgroup = self.cgroups.sandbox_at(record.cgroup_dirs.clone());
        let net = self
            .network
            .adopt(&record.netns, record.veth_slot)
            .unwrap_or_else(|| SandboxNet::named(&record.netns, record.veth_slot));
        let id_base = record.id_base.unwrap_or(ids::CANONICAL_BASE);
        self.ids.claim(id_base);
        SandboxHost {
            cgroup,
            net,
            id_base,
        }
    }

    /// Removes a sandbox's host parts: its cgroup (killing what is left in it; the emptied group
    /// is kept for the next sandbox), its network namespace and veth, and its host directory.
    pub async fn teardown(&self, parts: SandboxHost, dir: &Path) -> Result<(), HostError> {
        let began = std::time::Instant::now();
        let (cgroups, cg) = (self.cgroups.clone(), parts.cgroup.clone());
        let killed = tokio::task::spawn_blocking(move || cgroups.recycle(cg))
            .await
            .map_err(|e| HostError::Io {
                what: "cgroup teardown".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let cgroup_done = began.elapsed();
        self.network.destroy(&parts.net).await;
        let network_done = began.elapsed();
        self.ids.release(parts.id_base);
        if let Err(e) = tokio::fs::remove_dir_all(dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove sandbox dir");
            }
        }
        // Where a teardown's time goes, to see which part grows with the number of sandboxes.
        tracing::debug!(
            netns = %parts.net.netns_name,
            cgroup_ms = cgroup_done.as_secs_f64() * 1e3,
            network_ms = (network_done - cgroup_done).as_secs_f64() * 1e3,
            files_ms = (began.elapsed() - network_done).as_secs_f64() * 1e3,
            "sandbox host parts removed"
        );
        killed?;
        Ok(())
    }

    /// Kills what runs in the cgroups an earlier server left behind (they are kept for reuse)
    /// and removes its namespaces and links, except those of the sandboxes this server adopted
    /// (`keep`; their cgroups are in use). Runs before any tier removes its own leftovers:
    /// killing through the cgroup is immediate, while a tier's own tools may wait on processes
    /// they can no longer reach.
    pub async fn remove_leftovers(&self, keep: &HashSet<SandboxId>) {
        let cgroups = self.cgroups.clone();
        let _ = tokio::task::spawn_blocking(move || cgroups.recycle_leftovers()).await;
        let kept_netns = keep
            .iter()
            .map(|id| self.network.netns_name(id.as_str()))
            .collect();
        self.network.remove_leftovers(&kept_netns).await;
    }

    /// Undoes host-wide setup (the nftables table, the `warren/` cgroups) once every sandbox is
    /// gone.
    pub async fn release(&self) {
        self.network.release_host().await;
        self.cgroups.remove_bases();
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).disown();
    }
}

/// The machine's memory: (total, available) in bytes, from /proc/meminfo.
pub fn memory() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    Some((kib("MemTotal:")?, kib("MemAvailable:")?))
}
