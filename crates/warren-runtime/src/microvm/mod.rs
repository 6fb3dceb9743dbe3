//! The microVM tier: every sandbox is a QEMU `microvm` guest with its own Linux kernel, so user
//! code meets a guest kernel, not the host's. Same agent, same API as the other tiers.
//!
//! * Guest: Debian's cloud kernel and an initramfs built here (busybox, the virtio modules, an
//!   init script) that mounts the disks, configures the network and execs the agent as PID 1.
//! * Disks (see `image`): the template's read-only root image, a fresh writable disk per sandbox
//!   (overlayfs in the guest: copy-on-write), the agent bundle.
//! * Host parts shared with the namespace tier: the sandbox's cgroup (QEMU runs in it, memory
//!   limit raised by the VMM's own overhead) and network namespace, where QEMU's tap device
//!   lives. The agent listens on TCP in the guest; the host-side proxy keeps talking to a unix
//!   socket, which this driver forwards into the namespace to the guest.
//! * Control over QMP. Pause snapshots the guest to a file and ends its QEMU, so a paused
//!   sandbox holds no memory; resume boots QEMU again from that file (see `hibernate`).
//! * QEMU itself runs unprivileged (see `vmm_process`).

pub mod image;
pub mod initramfs;
pub mod qemu;

mod fork;
mod forward;
mod hibernate;
mod probe;
mod tsc;
mod vmm_process;

pub use probe::probe_boot;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use warren_core::{SandboxId, Tier};

use crate::driver::{
    is_kept, AdoptedSandbox, DriverError, IsolationDriver, NotAdopted, SandboxHandle, SandboxSpec,
    SandboxUsage, SnapshotTaken, StartedSandbox,
};
use crate::host::network::{SandboxNet, GUEST_ADDRESS, GUEST_GATEWAY, GUEST_TAP};
use crate::host::{Host, IdChoice, ProcessRef, SandboxHost};
use qemu::{Accel, VmLaunch};

/// The agent's TCP port inside the guest.
pub const GUEST_AGENT_PORT: u16 = 7777;
/// QEMU's own memory (device models, translation cache) on top of the guest's RAM, added to the
/// sandbox's cgroup limit so that the guest can use all the memory it was given.
const VMM_OVERHEAD_MB: u32 = 192;

/// Why a microVM mounts no volume: the ways a host directory reaches a QEMU guest (virtio-fs, 9p)
/// block the `migrate` that pause, fork and hibernate are made of, and the NFS route E2B takes
/// needs nfs in the host kernel, which Warren's hosts lack. The control plane refuses such a
/// create before it gets here; this is the tier's own guard.
pub const VOLUMES_UNSERVED: &str = "volumes are not mounted into microVM sandboxes: a host \
     directory shared with a QEMU guest (virtio-fs, 9p) blocks the migration pause and fork are \
     made of; use the namespaces or gvisor tier";

pub struct MicrovmConfig {
    pub qemu: PathBuf,
    /// An unpacked Debian kernel package (`boot/vmlinuz-*`, `lib/modules/*`).
    pub kernel_dir: PathBuf,
    /// A statically linked busybox for the initramfs.
    pub busybox: PathBuf,
    /// Per-sandbox host directories.
    pub state_dir: PathBuf,
    /// Root images of templates (cached across restarts).
    pub image_dir: PathBuf,
}

/// Everything needed to start a sandbox's QEMU again (after a pause, also by a later server
/// process: it is the tier's part of the sandbox's handle).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Boot {
    name: String,
    vcpu: u32,
    memory_mb: u32,
    initrd: PathBuf,
    root_image: PathBuf,
    data_disk: PathBuf,
    /// The agent's disk the guest booted with: a restored guest must find the same one.
    agent_image: PathBuf,
}

/// What a microVM sandbox's handle carries beyond the host parts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MicrovmState {
    vmm_uid: u32,
    boot: Boot,
}

/// Hands the service the sandbox's end, except when Warren itself ended QEMU (a pause): the
/// service's `exited` must outlive any one QEMU process.
#[derive(Default)]
struct ExitRelay {
    hibernating: AtomicBool,
    to_service: Mutex<Option<oneshot::Sender<i32>>>,
}

impl ExitRelay {
    /// Forwards the end of one QEMU process unless it was asked to end.
    fn watch(self: &Arc<Self>, qemu_exited: oneshot::Receiver<i32>) {
        let relay = self.clone();
        tokio::spawn(async move {
            let code = qemu_exited.await.unwrap_or(-1);
            if !relay.hibernating.load(Ordering::SeqCst) {
                relay.report(code);
            }
        });
    }

    fn report(&self, code: i32) {
        let tx = self
            .to_service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(code);
        }
    }
}

struct Live {
    host: SandboxHost,
    dir: PathBuf,
    vmm_uid: u32,
    boot: Arc<Boot>,
    exit: Arc<ExitRelay>,
    /// None while paused (no guest to relay to).
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

pub struct MicrovmDriver {
    cfg: MicrovmConfig,
    host: Arc<Host>,
    accel: Accel,
    kernel: PathBuf,
    base_initrd: Vec<u8>,
    agent_image: PathBuf,
    images: Arc<image::ImageCache>,
    live: Mutex<HashMap<SandboxId, Live>>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> DriverError {
    let what = what.to_owned();
    move |source| DriverError::Io { what, source }
}

/// The guest kernel in an unpacked kernel package, and its modules directory.
pub fn find_kernel(kernel_dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let vmlinuz = std::fs::read_dir(kernel_dir.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })?;
    let modules = std::fs::read_dir(kernel_dir.join("lib/modules"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())?;
    Some((vmlinuz, modules))
}

/// Why this host cannot run the microVM tier.
#[derive(Debug, thiserror::Error)]
pub enum MicrovmUnavailable {
    #[error("{qemu} cannot run: {source}")]
    QemuMissing {
        qemu: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} --version failed")]
    QemuBroken(PathBuf),
    #[error("no guest kernel in {0} (scripts/guest-kernel installs one)")]
    NoKernel(PathBuf),
    #[error("no static busybox at {0} (Debian package busybox-static)")]
    NoBusybox(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("the probe guest never reported ready")]
    NeverReady,
}

impl MicrovmDriver {
    /// The driver, or why this host cannot run the tier.
    pub async fn detect(cfg: MicrovmConfig, host: Arc<Host>) -> Result<Self, MicrovmUnavailable> {
        let version = tokio::process::Command::new(&cfg.qemu)
            .arg("--version")
            .output()
            .await
            .map_err(|source| MicrovmUnavailable::QemuMissing {
                qemu: cfg.qemu.clone(),
                source,
            })?;
        if !version.status.success() {
            return Err(MicrovmUnavailable::QemuBroken(cfg.qemu.clone()));
        }
        let (kernel, modules) = find_kernel(&cfg.kernel_dir)
            .ok_or_else(|| MicrovmUnavailable::NoKernel(cfg.kernel_dir.clone()))?;
        if !cfg.busybox.exists() {
            return Err(MicrovmUnavailable::NoBusybox(cfg.busybox.clone()));
        }
        let base_initrd = initramfs::build_base(&cfg.busybox, &modules)?;
        for d in [&cfg.state_dir, &cfg.image_dir] {
            std::fs::create_dir_all(d).map_err(|source| MicrovmUnavailable::Io {
                path: d.clone(),
                source,
            })?;
        }
        // One image per agent bundle, never rewritten: running guests have theirs attached.
        let bundle_name = host
            .agent_bundle()
            .file_name()
            .map_or_else(|| "current".into(), |n| n.to_string_lossy().into_owned());
        let agent_image = cfg.state_dir.join(format!("agent-{bundle_name}.ext4"));
        if !agent_image.exists() {
            let (bundle, out) = (host.agent_bundle().to_path_buf(), agent_image.clone());
            tokio::task::spawn_blocking(move || {
                let staging = out.with_extension("new");
                image::build_agent_image(&bundle, &staging)?;
                std::fs::rename(&staging, &out).map_err(io("install agent image"))
            })
            .await
            .map_err(|_| DriverError::Panicked("the agent image build"))??;
        }
        // Blocking: measuring the TSC rate sleeps a few tens of milliseconds.
        let (accel, why_not_kvm) = tokio::task::spawn_blocking(qemu::detect_accel)
            .await
            .map_err(|_| DriverError::Panicked("the acceleration check"))?;
        match &why_not_kvm {
            None => tracing::info!(accel = "kvm", "microVM tier available"),
            Some(why) => tracing::warn!(
                accel = "tcg",
                reason = %why,
                guest_tsc_khz = ?match accel {
                    Accel::Tcg { tsc_khz } => tsc_khz,
                    Accel::Kvm => None,
                },
                "microVM tier available WITHOUT hardware acceleration: guests run under software \
                 emulation (QEMU TCG), correct but many times slower"
            ),
        }
        if accel == (Accel::Tcg { tsc_khz: None }) {
            tracing::warn!(
                "this host's TSC is not invariant, so emulated guests calibrate their clock \
                 themselves: on a busy host that can fail and leave a guest stuck early in boot \
                 (see docs/isolation.md)"
            );
        }
        Ok(Self {
            images: Arc::new(image::ImageCache::new(cfg.image_dir.clone())),
            cfg,
            host,
            accel,
            kernel,
            base_initrd,
            agent_image,
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Deletes the root images nothing can use again (see `image::ImageCache::sweep`).
    async fn sweep_images(&self) {
        let in_use: Vec<PathBuf> = self
            .live()
            .values()
            .map(|l| l.boot.root_image.clone())
            .collect();
        let images = self.images.clone();
        let _ = tokio::task::spawn_blocking(move || images.sweep(&in_use)).await;
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a guest may take to boot to its agent: far longer under emulation.
    fn start_timeout(&self) -> Duration {
        match self.accel {
            Accel::Kvm => crate::host::START_TIMEOUT,
            Accel::Tcg { .. } => Duration::from_secs(180),
        }
    }

    /// Everything on the host a guest boots from: its directory (private to its VMM's uid), its
    /// network link, the template's root image, a fresh writable disk, its initrd.
    async fn prepare(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        net: &SandboxNet,
        vmm_uid: u32,
    ) -> Result<Boot, DriverError> {
        self.make_dir(dir, vmm_uid).await?;
        self.host
            .network()
            .add_guest_link(net, spec.reaches_out())
            .await?;
        let (root_image, built) = self.images.root_image(&spec.layers).await?;
        if built {
            self.sweep_images().await;
        }
        let data_disk = dir.join("data.ext4");
        let (disk, size) = (data_disk.clone(), spec.resources.disk_mb);
        tokio::task::spawn_blocking(move || image::create_writable_disk(&disk, size))
            .await
            .map_err(|_| DriverError::Panicked("the disk creation"))??;
        std::os::unix::fs::chown(&data_disk, Some(vmm_uid), Some(vmm_uid))
            .map_err(io("chown writable disk"))?;
        let workdir = spec.workdir.clone().unwrap_or_else(|| "/workspace".into());
        let resolv = spec
            .reaches_out()
            .then(|| self.host.network().resolv_conf.as_deref())
            .flatten();
        let config = initramfs::build_config(&initramfs::GuestConfig {
            sandbox_id: spec.id.as_str(),
            template: &spec.template_name,
            hostname: format!("sandbox-{}", &spec.id.as_str()[..8]),
            vcpu: spec.resources.vcpu,
            memory_mb: spec.resources.memory_mb,
            disk_mb: spec.resources.disk_mb,
            workdir: &workdir,
            guest_ip: GUEST_ADDRESS,
            gateway_ip: GUEST_GATEWAY,
            agent_port: GUEST_AGENT_PORT,
            env: &spec.env_vars,
            resolv_conf: resolv,
        })?;
        let initrd = dir.join("initrd");
        tokio::fs::write(&initrd, [self.base_initrd.as_slice(), &config].concat())
            .await
            .map_err(io("write initrd"))?;
        std::os::unix::fs::chown(&initrd, Some(vmm_uid), Some(vmm_uid))
            .map_err(io("chown initrd"))?;
        Ok(Boot {
            name: format!("warren-{}", spec.id),
            vcpu: spec.resources.vcpu,
            memory_mb: spec.resources.memory_mb,
            initrd,
            root_image,
            data_disk,
            agent_image: self.agent_image.clone(),
        })
    }

    /// The sandbox's host directory. QEMU (as `vmm_uid`) creates its QMP socket here and writes
    /// the data disk; nobody else may look inside (the initrd carries the sandbox's env values).
    async fn make_dir(&self, dir: &Path, vmm_uid: u32) -> Result<(), DriverError> {
        tokio::fs::create_dir_all(dir.join("run"))
            .await
            .map_err(io("sandbox dir"))?;
        std::os::unix::fs::chown(dir, Some(vmm_uid), Some(vmm_uid))
            .map_err(io("chown sandbox dir"))?;
        tokio::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .await
            .map_err(io("chmod sandbox dir"))
    }

    /// Starts QEMU for `boot` inside the sandbox's cgroup and network namespace, as `vmm_uid`;
    /// with `incoming`, the guest resumes from that saved state instead of booting.
    fn launch(
        &self,
        boot: &Boot,
        dir: &Path,
        host: &SandboxHost,
        vmm_uid: u32,
        incoming: Option<&std::fs::File>,
    ) -> Result<tokio::process::Child, DriverError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("qemu.log"))
            .map_err(io("qemu log"))?;
        let tap = vmm_process::open_tap(&host.net.netns_path, GUEST_TAP)
            .map_err(io("open tap device"))?;
        let raw = std::os::fd::AsRawFd::as_raw_fd;
        let mut cmd = qemu::command(
            &self.cfg.qemu,
            self.accel,
            &VmLaunch {
                name: &boot.name,
                vcpu: boot.vcpu,
                memory_mb: boot.memory_mb,
                kernel: &self.kernel,
                initrd: &boot.initrd,
                root_image: &boot.root_image,
                data_disk: &boot.data_disk,
                agent_image: &boot.agent_image,
                tap_fd: raw(&tap),
                qmp_socket: &dir.join("qmp.sock"),
                incoming_fd: incoming.map(std::os::fd::AsRawFd::as_raw_fd),
            },
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Its own process group: a Ctrl-C meant for the server must not reach the sandbox.
            .process_group(0)
            .kill_on_drop(false);
        let netns = crate::host::start_inside(&mut cmd, host)?;
        let mut inherited = vec![raw(&tap)];
        inherited.extend(incoming.map(std::os::fd::AsRawFd::as_raw_fd));
        vmm_process::confine(&mut cmd, inherited, vmm_uid, self.accel == Accel::Kvm);
        let child = cmd.spawn().map_err(io("spawn qemu"))?;
        drop((netns, tap));
        Ok(child)
    }

    /// Takes a sandbox of an earlier server process over: a running guest's QEMU is the one
    /// process in its cgroup; a paused guest has no QEMU, only its saved state.
    async fn take_over(
        &self,
        id: &SandboxId,
        handle: &SandboxHandle,
        state: &MicrovmState,
        paused: bool,
    ) -> Result<AdoptedSandbox, &'static str> {
        let host = self
            .host
            .adopt(&handle.host)
            .ok_or("its cgroup or network namespace was gone")?;
        let qemu = host.cgroup.pids().into_iter().find_map(ProcessRef::of);
        // No QEMU but a saved state: paused (also when the last server saved it but died before
        // recording the pause).
        let saved = handle.dir.join("state").exists();
        let (qemu, hibernating) = match (qemu, saved) {
            (Some(q), _) => (Some(q), false),
            (None, true) => (None, true),
            (None, false) => return Err("its virtual machine had ended"),
        };
        if hibernating != paused {
            tracing::warn!(sandbox = %id, paused = hibernating, "found the sandbox in another state than recorded");
        }
        let forwarder = match qemu {
            Some(_) => {
                let _ = std::fs::remove_file(&handle.agent_socket);
                Some(
                    forward::spawn(&handle.agent_socket, host.net.netns_path.clone())
                        .map_err(|_| "its agent socket could not be opened again")?,
                )
            }
            None => None,
        };
        let (to_service, exited) = oneshot::channel();
        let exit = Arc::new(ExitRelay {
            hibernating: AtomicBool::new(hibernating),
            to_service: Mutex::new(Some(to_service)),
        });
        if let Some(q) = qemu {
            exit.watch(q.watch());
        }
        self.live().insert(
            id.clone(),
            Live {
                host,
                dir: handle.dir.clone(),
                vmm_uid: state.vmm_uid,
                boot: Arc::new(state.boot.clone()),
                exit,
                forwarder,
            },
        );
        Ok(AdoptedSandbox::new(handle, exited, hibernating))
    }

    async fn start_inner(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        host: &SandboxHost,
        vmm_uid: u32,
    ) -> Result<(crate::host::AgentUp, Boot, tokio::task::JoinHandle<()>), DriverError> {
        if let Some(saved) = &spec.saved_state {
            return self
                .resume_copy(saved, dir, host, vmm_uid, spec.internet_access)
                .await;
        }
        let boot = self.prepare(spec, dir, &host.net, vmm_uid).await?;
        let child = self.launch(&boot, dir, host, vmm_uid, None)?;
        let agent_socket = dir.join("run/agent.sock");
        let forwarder = forward::spawn(&agent_socket, host.net.netns_path.clone())?;
        match crate::host::wait_for_agent(
            child,
            &dir.join("qemu.log"),
            agent_socket,
            self.start_timeout(),
            GUEST_ADDRESS,
        )
        .await
        {
            Ok(started) => Ok((started, boot, forwarder)),
            Err(e) => {
                forwarder.abort();
                Err(e.into())
            }
        }
    }
}

impl IsolationDriver for MicrovmDriver {
    fn tier(&self) -> Tier {
        Tier::Microvm
    }

    fn has_own_clock(&self) -> bool {
        true
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<StartedSandbox, DriverError> {
        if !spec.volumes.is_empty() {
            return Err(DriverError::Unsupported(VOLUMES_UNSERVED.into()));
        }
        let dir = self.cfg.state_dir.join(spec.id.as_str());
        let mut resources = spec.resources;
        resources.memory_mb += VMM_OVERHEAD_MB;
        // QEMU runs as the first id of the sandbox's own range: no other sandbox's process or file
        // is that user's.
        let host = self
            .host
            .provision(
                &spec.id,
                &resources,
                spec.internet_access,
                spec.egress.as_ref(),
                IdChoice::Own,
            )
            .await?;
        let vmm_uid = host.id_base;
        match self.start_inner(spec, &dir, &host, vmm_uid).await {
            Ok((up, boot, forwarder)) => {
                let state = MicrovmState {
                    vmm_uid,
                    boot: boot.clone(),
                };
                let mut started =
                    StartedSandbox::new(self.tier(), up, &host, &dir, self.host.agent_bundle());
                // No init: QEMU changes with every pause and resume; it is found through the
                // cgroup instead.
                started.handle.tier_state = serde_json::to_value(&state).unwrap_or_default();
                // The service's end outlives any one QEMU process (see `ExitRelay`).
                let (to_service, exited) = oneshot::channel();
                let exit = Arc::new(ExitRelay {
                    hibernating: AtomicBool::new(false),
                    to_service: Mutex::new(Some(to_service)),
                });
                exit.watch(std::mem::replace(&mut started.exited, exited));
                self.live().insert(
                    spec.id.clone(),
                    Live {
                        host,
                        dir,
                        vmm_uid,
                        boot: Arc::new(boot),
                        exit,
                        forwarder: Some(forwarder),
                    },
                );
                Ok(started)
            }
            Err(e) => {
                // The cgroup teardown kills QEMU if it is still there.
                if let Err(te) = self.host.teardown(host, &dir).await {
                    tracing::warn!(error = %te, "teardown after failed microVM start");
                }
                Err(e)
            }
        }
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), DriverError> {
        self.hibernate(id).await
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), DriverError> {
        self.restore(id).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), DriverError> {
        let Some(live) = self.live().remove(id) else {
            return Ok(());
        };
        // Ending QEMU here is asked for: the service is already tearing the sandbox down.
        live.exit.hibernating.store(true, Ordering::SeqCst);
        if let Some(f) = live.forwarder {
            f.abort();
        }
        Ok(self.host.teardown(live.host, &live.dir).await?)
    }

    fn usage(&self, id: &SandboxId) -> Option<SandboxUsage> {
        let live = self.live();
        let l = live.get(id)?;
        let mut usage = l.host.cgroup.usage();
        // The writable disk is a sparse file: what the guest wrote is what it holds on the host.
        usage.disk_bytes = std::fs::metadata(&l.boot.data_disk)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512);
        Some(usage)
    }

    async fn adopt(
        &self,
        id: &SandboxId,
        handle: &SandboxHandle,
        paused: bool,
    ) -> Result<AdoptedSandbox, NotAdopted> {
        let state: MicrovmState = serde_json::from_value(handle.tier_state.clone())
            .map_err(|e| NotAdopted(format!("unreadable microVM state: {e}")))?;
        match self.take_over(id, handle, &state, paused).await {
            Ok(adopted) => Ok(adopted),
            Err(why) => {
                // The cgroup teardown kills QEMU if it is still there.
                self.host
                    .remove_remains(id, &handle.host, &handle.dir)
                    .await;
                Err(NotAdopted(why.into()))
            }
        }
    }

    async fn snapshot(&self, id: &SandboxId, dir: &Path) -> Result<SnapshotTaken, DriverError> {
        self.save_machine(id, dir).await
    }

    async fn remove_leftovers(&self, keep: &HashSet<SandboxId>) {
        self.sweep_images().await;
        // QEMU processes, cgroups and namespaces are the host layer's to remove; directories and
        // agent images no live guest uses are ours.
        let in_use: Vec<PathBuf> = self
            .live()
            .values()
            .map(|l| l.boot.agent_image.clone())
            .chain([self.agent_image.clone()])
            .collect();
        if let Ok(mut d) = tokio::fs::read_dir(&self.cfg.state_dir).await {
            while let Ok(Some(e)) = d.next_entry().await {
                let path = e.path();
                if path.is_dir() && !is_kept(&e.file_name(), keep) {
                    let _ = tokio::fs::remove_dir_all(&path).await;
                } else if path.is_file()
                    && path.extension().is_some_and(|x| x == "ext4")
                    && !in_use.contains(&path)
                {
                    let _ = tokio::fs::remove_file(&path).await;
                }
            }
        }
    }
}
