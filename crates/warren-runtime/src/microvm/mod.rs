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
//! * Control over QMP: pause/resume stop and continue the vCPUs.
//! * QEMU itself runs unprivileged (see `vmm_process`).

pub mod image;
pub mod initramfs;
pub mod qemu;
mod vmm_process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren_core::SandboxId;

use crate::driver::{DriverError, IsolationDriver, SandboxSpec, SandboxUsage, StartedSandbox};
use crate::namespaces::cgroups::SandboxCgroup;
use crate::namespaces::network::{SandboxNet, GUEST_ADDRESS, GUEST_GATEWAY, GUEST_TAP};
use crate::namespaces::NamespaceDriver;
use qemu::{Accel, Qmp, VmLaunch};

/// The agent's TCP port inside the guest.
pub const GUEST_AGENT_PORT: u16 = 7777;
/// QEMU's own memory (device models, translation cache) on top of the guest's RAM, added to the
/// sandbox's cgroup limit so that the guest can use all the memory it was given.
const VMM_OVERHEAD_MB: u32 = 192;

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

struct Live {
    cgroup: SandboxCgroup,
    net: SandboxNet,
    dir: PathBuf,
    forwarder: tokio::task::JoinHandle<()>,
    vmm_uid: u32,
}

pub struct MicrovmDriver {
    cfg: MicrovmConfig,
    host: Arc<NamespaceDriver>,
    accel: Accel,
    kernel: PathBuf,
    base_initrd: Vec<u8>,
    agent_image: PathBuf,
    images: image::ImageCache,
    vmm_uids: vmm_process::UidPool,
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

/// Boots a guest with nothing but the agent (no template root, no network) and returns the time
/// from starting QEMU to the agent's ready line: the floor under every microVM sandbox start.
/// `work` receives the probe's initrd and agent disk.
pub async fn probe_boot(
    qemu: &Path,
    kernel_dir: &Path,
    busybox: &Path,
    agent_bundle: &Path,
    work: &Path,
) -> Result<Duration, String> {
    use tokio::io::AsyncBufReadExt;
    let (kernel, modules) = find_kernel(kernel_dir)
        .ok_or_else(|| format!("no guest kernel in {}", kernel_dir.display()))?;
    let initrd = work.join("probe-initrd");
    let agent_image = work.join("probe-agent.ext4");
    let mut bytes = initramfs::build_base(busybox, &modules).map_err(|e| e.to_string())?;
    bytes.extend(initramfs::build_probe_config().map_err(|e| e.to_string())?);
    std::fs::write(&initrd, bytes).map_err(|e| e.to_string())?;
    image::build_agent_image(agent_bundle, &agent_image).map_err(|e| e.to_string())?;
    let (accel, _) = qemu::detect_accel();
    let started = std::time::Instant::now();
    let mut child = qemu::boot_probe_command(qemu, accel, &kernel, &initrd, &agent_image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", qemu.display()))?;
    let stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "ready" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let took = started.elapsed();
    let _ = child.kill().await;
    if ready {
        Ok(took)
    } else {
        Err("the probe guest never reported ready".into())
    }
}

impl MicrovmDriver {
    /// The driver, or why this host cannot run the tier.
    pub async fn detect(cfg: MicrovmConfig, host: Arc<NamespaceDriver>) -> Result<Self, String> {
        let version = tokio::process::Command::new(&cfg.qemu)
            .arg("--version")
            .output()
            .await
            .map_err(|e| format!("{} cannot run: {e}", cfg.qemu.display()))?;
        if !version.status.success() {
            return Err(format!("{} --version failed", cfg.qemu.display()));
        }
        let (kernel, modules) = find_kernel(&cfg.kernel_dir).ok_or_else(|| {
            format!(
                "no guest kernel in {} (scripts/guest-kernel installs one)",
                cfg.kernel_dir.display()
            )
        })?;
        if !cfg.busybox.exists() {
            return Err(format!(
                "no static busybox at {} (Debian package busybox-static)",
                cfg.busybox.display()
            ));
        }
        let base_initrd =
            initramfs::build_base(&cfg.busybox, &modules).map_err(|e| e.to_string())?;
        for d in [&cfg.state_dir, &cfg.image_dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let agent_image = cfg.state_dir.join("agent.ext4");
        let (bundle, out) = (host.agent_bundle().to_path_buf(), agent_image.clone());
        tokio::task::spawn_blocking(move || image::build_agent_image(&bundle, &out))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let (accel, why_not_kvm) = qemu::detect_accel();
        match &why_not_kvm {
            None => tracing::info!(accel = "kvm", "microVM tier available"),
            Some(why) => tracing::warn!(
                accel = "tcg",
                reason = %why,
                "microVM tier available WITHOUT hardware acceleration: guests run under software \
                 emulation (QEMU TCG), correct but many times slower"
            ),
        }
        Ok(Self {
            images: image::ImageCache::new(cfg.image_dir.clone()),
            cfg,
            host,
            accel,
            kernel,
            base_initrd,
            agent_image,
            vmm_uids: Default::default(),
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn qmp_socket(&self, id: &SandboxId) -> PathBuf {
        self.cfg.state_dir.join(id.as_str()).join("qmp.sock")
    }

    /// How long a guest may take to boot to its agent: far longer under emulation.
    fn start_timeout(&self) -> Duration {
        match self.accel {
            Accel::Kvm => crate::namespaces::START_TIMEOUT,
            Accel::Tcg => Duration::from_secs(180),
        }
    }

    async fn start_inner(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        cgroup: &SandboxCgroup,
        net: &SandboxNet,
        vmm_uid: u32,
    ) -> Result<(StartedSandbox, tokio::task::JoinHandle<()>), DriverError> {
        tokio::fs::create_dir_all(dir.join("run"))
            .await
            .map_err(io("sandbox dir"))?;
        // QEMU (as `vmm_uid`) creates its QMP socket here and writes the data disk; nobody else
        // may look inside (the initrd carries the sandbox's env values).
        std::os::unix::fs::chown(dir, Some(vmm_uid), Some(vmm_uid))
            .map_err(io("chown sandbox dir"))?;
        tokio::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .await
            .map_err(io("chmod sandbox dir"))?;
        self.host
            .network()
            .add_guest_link(net, spec.internet_access)
            .await?;
        let root_image = self.images.root_image(&spec.layers).await?;
        let data_disk = dir.join("data.ext4");
        let (disk, size) = (data_disk.clone(), spec.resources.disk_mb);
        tokio::task::spawn_blocking(move || image::create_writable_disk(&disk, size))
            .await
            .map_err(|e| DriverError::Start(format!("disk creation panicked: {e}")))??;
        std::os::unix::fs::chown(&data_disk, Some(vmm_uid), Some(vmm_uid))
            .map_err(io("chown writable disk"))?;
        let workdir = spec.workdir.clone().unwrap_or_else(|| "/workspace".into());
        let resolv = spec
            .internet_access
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

        let log_path = dir.join("qemu.log");
        let log = std::fs::File::create(&log_path).map_err(io("qemu log"))?;
        let qmp_socket = dir.join("qmp.sock");
        let tap =
            vmm_process::open_tap(&net.netns_path, GUEST_TAP).map_err(io("open tap device"))?;
        let name = format!("warren-{}", spec.id);
        let mut cmd = qemu::command(
            &self.cfg.qemu,
            self.accel,
            &VmLaunch {
                name: &name,
                vcpu: spec.resources.vcpu,
                memory_mb: spec.resources.memory_mb,
                kernel: &self.kernel,
                initrd: &initrd,
                root_image: &root_image,
                data_disk: &data_disk,
                agent_image: &self.agent_image,
                tap_fd: std::os::fd::AsRawFd::as_raw_fd(&tap),
                qmp_socket: &qmp_socket,
            },
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(false);
        let netns = crate::namespaces::start_inside(&mut cmd, cgroup, net)?;
        vmm_process::confine(&mut cmd, &tap, vmm_uid, self.accel == Accel::Kvm);
        let child = cmd.spawn().map_err(io("spawn qemu"))?;
        drop((netns, tap));
        let agent_socket = dir.join("run/agent.sock");
        let forwarder = forward::spawn(&agent_socket, net.netns_path.clone())?;
        match crate::namespaces::wait_for_agent(
            child,
            &log_path,
            agent_socket,
            self.start_timeout(),
            GUEST_ADDRESS,
        )
        .await
        {
            Ok(started) => Ok((started, forwarder)),
            Err(e) => {
                forwarder.abort();
                Err(e)
            }
        }
    }

    async fn qmp(&self, id: &SandboxId) -> Result<Qmp, DriverError> {
        if !self.live().contains_key(id) {
            return Err(DriverError::NotFound(id.clone()));
        }
        Qmp::connect(&self.qmp_socket(id)).await
    }
}

impl IsolationDriver for MicrovmDriver {
    fn name(&self) -> &'static str {
        "microvm"
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<StartedSandbox, DriverError> {
        let dir = self.cfg.state_dir.join(spec.id.as_str());
        let mut host_spec = spec.clone();
        host_spec.resources.memory_mb += VMM_OVERHEAD_MB;
        let vmm_uid = self
            .vmm_uids
            .take()
            .ok_or_else(|| DriverError::Start("no free VMM user ids".into()))?;
        let (cgroup, net) = match self.host.provision(&host_spec).await {
            Ok(parts) => parts,
            Err(e) => {
                self.vmm_uids.release(vmm_uid);
                return Err(e);
            }
        };
        match self.start_inner(spec, &dir, &cgroup, &net, vmm_uid).await {
            Ok((started, forwarder)) => {
                self.live().insert(
                    spec.id.clone(),
                    Live {
                        cgroup,
                        net,
                        dir,
                        forwarder,
                        vmm_uid,
                    },
                );
                Ok(started)
            }
            Err(e) => {
                self.vmm_uids.release(vmm_uid);
                // The cgroup teardown kills QEMU if it is still there.
                if let Err(te) = self.host.teardown(cgroup, &net, &dir).await {
                    tracing::warn!(error = %te, "teardown after failed microVM start");
                }
                Err(e)
            }
        }
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), DriverError> {
        self.qmp(id).await?.stop().await
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), DriverError> {
        self.qmp(id).await?.cont().await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<(), DriverError> {
        let Some(live) = self.live().remove(id) else {
            return Ok(());
        };
        live.forwarder.abort();
        let result = self.host.teardown(live.cgroup, &live.net, &live.dir).await;
        self.vmm_uids.release(live.vmm_uid);
        result
    }

    fn usage(&self, id: &SandboxId) -> Option<SandboxUsage> {
        let cg = self.live().get(id).map(|l| l.cgroup.clone())?;
        Some(SandboxUsage {
            memory_bytes: cg.memory_bytes().unwrap_or(0),
            processes: cg.pids().len() as u32,
        })
    }

    async fn remove_leftovers(&self) {
        // QEMU processes, cgroups and namespaces are the namespace tier's to remove.
        if let Ok(mut d) = tokio::fs::read_dir(&self.cfg.state_dir).await {
            while let Ok(Some(e)) = d.next_entry().await {
                if e.path().is_dir() {
                    let _ = tokio::fs::remove_dir_all(e.path()).await;
                }
            }
        }
    }

    async fn release_host(&self) {}
}

mod forward {
    //! The host end of the agent channel: a unix socket (what the proxy expects of every tier)
    //! whose connections are relayed to the guest agent's TCP port, dialled from inside the
    //! sandbox's network namespace.

    use std::path::{Path, PathBuf};

    use super::{DriverError, GUEST_ADDRESS, GUEST_AGENT_PORT};

    pub fn spawn(
        socket: &Path,
        netns: PathBuf,
    ) -> Result<tokio::task::JoinHandle<()>, DriverError> {
        let listener =
            tokio::net::UnixListener::bind(socket).map_err(|source| DriverError::Io {
                what: "agent socket".into(),
                source,
            })?;
        Ok(tokio::spawn(async move {
            // Relays live in this set, so aborting the forwarder (the sandbox is destroyed) ends
            // them too: a dead guest never closes its TCP side, they would wait forever.
            let mut relays = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { break };
                        relays.spawn(relay(client, netns.clone()));
                    }
                    Some(_) = relays.join_next(), if !relays.is_empty() => {}
                }
            }
        }))
    }

    async fn relay(mut client: tokio::net::UnixStream, netns: PathBuf) {
        let Ok(Ok(mut guest)) = tokio::task::spawn_blocking(move || dial_guest(&netns)).await
        else {
            return; // the guest is gone or not up yet: the client sees EOF
        };
        let _ = tokio::io::copy_bidirectional(&mut client, &mut guest).await;
    }

    /// Connects from a short-lived thread that joins the namespace (setns affects only the
    /// calling thread, which ends right after).
    fn dial_guest(netns: &Path) -> std::io::Result<tokio::net::TcpStream> {
        let netns = netns.to_path_buf();
        let stream = std::thread::spawn(move || -> std::io::Result<std::net::TcpStream> {
            let f = std::fs::File::open(&netns)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            let s = std::net::TcpStream::connect((GUEST_ADDRESS, GUEST_AGENT_PORT))?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .join()
        .map_err(|_| std::io::Error::other("netns thread panicked"))??;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }
}
