//! Setting up one machine to run sandboxes: its host layer and every isolation tier that works
//! here. Shared by `warren serve` (a control plane with its own node) and `warren node`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use warren_core::Tier;
use warren_runtime::host::{Host, HostConfig};
use warren_runtime::namespaces::{NamespaceConfig, NamespaceDriver};
use warren_runtime::{AnyDriver, IsolationDriver};

pub struct MachineConfig {
    pub data_dir: PathBuf,
    /// Template root file systems and layers, shared by every data dir of the machine.
    pub cache_dir: PathBuf,
    /// The /16 sandbox links are numbered from (a host slot shifts it).
    pub network_base: Ipv4Addr,
    /// Offer the gVisor tier when `runsc` works here.
    pub gvisor: bool,
    pub runsc: PathBuf,
    /// Offer the microVM tier when QEMU and a guest kernel are installed.
    pub microvm: bool,
    pub qemu: PathBuf,
    pub guest_kernel_dir: PathBuf,
    /// Tier of sandboxes that do not ask for one.
    pub default_isolation: Tier,
    /// How the egress proxy and DNS filter resolve names (`--egress-resolve`).
    pub egress_resolver: warren_egress::Resolver,
    /// CA certificates (PEM) the egress proxy trusts upstream besides the web's
    /// (`--egress-upstream-ca`).
    pub egress_upstream_ca: Vec<String>,
}

/// Why the machine cannot run sandboxes.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("{what}: {source}")]
    Setup {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("default isolation tier {0:?} is not available here (see `warren doctor`)")]
    NoDefaultTier(Tier),
}

fn setup<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> MachineError {
    let what = what.into();
    move |e| MachineError::Setup {
        what,
        source: Box::new(e),
    }
}

/// The host layer and the tiers that work on this machine, the default first.
pub async fn prepare(cfg: &MachineConfig) -> Result<(Arc<Host>, Vec<AnyDriver>), MachineError> {
    let exe = std::env::current_exe().map_err(setup("locate own executable"))?;
    let agent_exe = exe.with_file_name("warren-agent");
    let bundle =
        warren_runtime::agent_bundle::prepare(&agent_exe, &cfg.data_dir.join("agents")).map_err(
            setup(format!("prepare agent bundle from {}", agent_exe.display())),
        )?;
    let host = Arc::new(
        Host::new(HostConfig {
            data_dir: cfg.data_dir.clone(),
            agent_bundle: bundle,
            network_base: cfg.network_base,
            layers_dir: cfg.cache_dir.clone(),
            egress: warren_egress::ProxyConfig {
                resolver: cfg.egress_resolver.clone(),
                refused: Vec::new(),
                ca_dir: Some(cfg.data_dir.join("egress-ca")),
                upstream_ca_pem: cfg.egress_upstream_ca.clone(),
            },
        })
        .await
        .map_err(setup("initialise the host layer (run as root)"))?,
    );
    let namespaces = NamespaceDriver::new(
        NamespaceConfig {
            state_dir: cfg.data_dir.join("sandboxes"),
            jail_exe: exe,
        },
        host.clone(),
    )
    .await
    .map_err(setup("initialise the namespace driver"))?;
    let mut tiers = vec![AnyDriver::Namespaces(Arc::new(namespaces))];
    if cfg.gvisor {
        let gvisor = warren_runtime::gvisor::GvisorDriver::detect(
            warren_runtime::gvisor::GvisorConfig {
                runsc: cfg.runsc.clone(),
                state_dir: cfg.data_dir.join("gvisor"),
                runsc_root: cfg.data_dir.join("runsc"),
            },
            host.clone(),
        )
        .await;
        match gvisor {
            Some(g) => tiers.push(AnyDriver::Gvisor(Arc::new(g))),
            None => {
                tracing::warn!(runsc = %cfg.runsc.display(), "gVisor tier unavailable: runsc not found or not working (see `warren doctor`)")
            }
        }
    }
    if cfg.microvm {
        let microvm = warren_runtime::microvm::MicrovmDriver::detect(
            warren_runtime::microvm::MicrovmConfig {
                qemu: cfg.qemu.clone(),
                kernel_dir: cfg.guest_kernel_dir.clone(),
                busybox: PathBuf::from("/bin/busybox"),
                // Not under the data dir, which may be private to root: each VMM runs as its own
                // uid and must reach its sandbox's directory (itself private to that uid).
                // One directory per host slot: nodes sharing a machine share its cache.
                state_dir: match host.slot() {
                    0 => cfg.cache_dir.join("microvm-sandboxes"),
                    n => cfg.cache_dir.join(format!("microvm-sandboxes-{n}")),
                },
                image_dir: cfg.cache_dir.join("vm-images"),
            },
            host.clone(),
        )
        .await;
        match microvm {
            Ok(m) => tiers.push(AnyDriver::Microvm(Arc::new(m))),
            Err(why) => {
                tracing::warn!(reason = %why, "microVM tier unavailable (see `warren doctor`)")
            }
        }
    }
    let Some(pos) = tiers.iter().position(|d| d.tier() == cfg.default_isolation) else {
        return Err(MachineError::NoDefaultTier(cfg.default_isolation));
    };
    tiers.swap(0, pos);
    Ok((host, tiers))
}
